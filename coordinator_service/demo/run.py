"""Driving the federation: start or reach the coordinator, start the agents, follow the rounds, stop everything."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from coordinator_service.launcher import CoordinatorProcess
    from creamfl.sim_config import SimulationConfig
from coordinator_service.demo.agents import (
    AgentPlan,
    AgentProcess,
    _write_handoff,
    agent_plans,
    signal_group,
    start_agent,
)
from coordinator_service.demo.api import Api
from coordinator_service.demo.baseline import run_baseline
from coordinator_service.demo.config import Options, federation_config, simulate_command
from coordinator_service.demo.errors import EXIT_FAILED, DemoFailed, Interrupted
from coordinator_service.demo.report import (
    ROUND_COLUMNS,
    communication,
    describe_clients,
    print_communication,
    print_ending,
    round_cells,
    table_header,
    table_line,
)
from coordinator_service.demo.rounds import round_record

RUN_ITEMS = ("coordinator", "agents", "logs", "summary.json", "server-best.safetensors")


@dataclass
class Demo:
    config: SimulationConfig
    options: Options
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)

    def __post_init__(self) -> None:
        self.agents: list[AgentProcess] = []
        self.coordinator: CoordinatorProcess | None = None
        self.url = ""
        self.admin_token = ""
        self.token_file: Path | None = None
        self.started = time.monotonic()
        self._signalled: int | None = None
        self._cleaning = False
        self._hurry = False

    # -- the whole run -------------------------------------------------------------------------

    def run(self) -> int:
        previous = self._install_signal_handlers()
        try:
            try:
                self._run()
            finally:
                self._cleanup()
        except Interrupted as exc:
            self._say(f"creamfl-coordinator demo: interrupted by {exc}; every process it started is stopped")
            return 128 + exc.signum
        except DemoFailed as exc:
            self._say(f"creamfl-coordinator demo: FAILED: {exc}")
            self._say(f"logs: {self.options.run_dir / 'logs'}")
            return EXIT_FAILED
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0

    def _run(self) -> dict[str, Any]:
        options, config = self.options, self.config
        run_dir = options.run_dir
        self._prepare_run_dir(run_dir)
        self._print(
            f"CreamFL demo: {config.image_clients} image + {config.text_clients} text + "
            f"{config.multimodal_clients} image+text agents, {config.rounds} rounds, seed {config.seed}, "
            f"public {config.public_size} pairs, test {config.test_size} images, "
            f"{config.private_per_client} private scenes per client (Dirichlet alpha {config.dirichlet_alpha:g}), "
            f"d = {config.embed_dim}; run dir {run_dir}"
        )
        self._start_or_reach_coordinator()
        with self._api() as api:
            body = federation_config(config, deadline_s=options.round_deadline_s)
            created = api.post("/federations", body)
            federation_id, join_token = created["id"], created["join_token"]
            self._print(f"federation {federation_id} created at {self.url}")
            plans = agent_plans(config)
            if options.handoff is not None:
                _write_handoff(options.handoff, federation_id, join_token)
                self._print(f"federation id and join token written to {options.handoff}")
            if options.start_agents:
                for plan in plans:
                    self._start_agent(plan, federation_id, join_token)
                self._print(f"started {len(self.agents)} agents (logs in {run_dir / 'logs'})")
            else:
                self._print_agent_commands(plans, federation_id)
            clients = self._wait_for_enrollment(api, federation_id, len(plans))
            names = {c["id"]: c["name"] for c in clients}
            api.post(f"/federations/{federation_id}/start", None)
            self._print(f"federation started: {config.rounds} rounds\n")
            self._print(table_header(ROUND_COLUMNS))
            records = self._follow(api, federation_id, names)
            federation = api.get(f"/federations/{federation_id}")
            clients = api.get(f"/federations/{federation_id}/clients")  # now with their mean ensemble weights
            self._wait_for_agents_to_finish()
            checkpoint = run_dir / "server-best.safetensors"
            checkpoint_sha = api.download(f"/federations/{federation_id}/checkpoints/best", checkpoint)
        client_rows = describe_clients(clients, plans, embed_dim=config.embed_dim)
        self._print("")
        print_communication(client_rows, records, self._print)
        baseline = (
            run_baseline(config, print_line=self._print, checkpoint=self._checkpoint) if options.baseline else None
        )
        final = records[-1]
        summary: dict[str, Any] = {
            "ok": True,
            "wall_seconds": round(time.monotonic() - self.started, 1),
            "coordinator": self.url,
            "coordinator_started_here": self.coordinator is not None,
            "federation": {
                key: federation[key]
                for key in ("id", "name", "state", "rounds_completed", "last_rsum", "best_rsum", "best_checkpoint")
            },
            "config": config.as_dict(),
            "federation_config": body,
            "simulate_command": simulate_command(config),
            "clients": client_rows,
            "rounds": records,
            "final": {key: final[key] for key in ("round", "i2t_r1", "t2i_r1", "rsum")},
            "communication": communication(client_rows, records),
            "baseline": baseline,
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": checkpoint_sha,
            "dashboard": f"{self.url}/dashboard",
            "admin_token_file": str(self.token_file) if self.token_file else None,
        }
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print_ending(summary, token_file=self.token_file, run_dir=run_dir, print_line=self._print)
        if options.keep_serving and self.coordinator is not None:
            self._serve_until_interrupted()
        return summary

    # -- steps ----------------------------------------------------------------------------------

    def _prepare_run_dir(self, run_dir: Path) -> None:
        """Only what an earlier demo left (its coordinator data would hold clients of another federation)."""
        run_dir.mkdir(parents=True, exist_ok=True)
        for item in RUN_ITEMS:
            path = run_dir / item
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        (run_dir / "logs").mkdir()

    def _start_or_reach_coordinator(self) -> None:
        from coordinator_service.launcher import CoordinatorProcess, free_port

        if self.options.coordinator is not None:
            self.url = self.options.coordinator
            assert self.options.admin_token is not None
            self.admin_token = self.options.admin_token
            self._check_reachable()
            return
        data_dir = self.options.run_dir / "coordinator"
        settings: dict[str, object] = {}
        if self.options.server_threads is not None:
            settings["threads"] = self.options.server_threads
        self.coordinator = CoordinatorProcess(
            data_dir=data_dir,
            settings=settings,
            port=self.options.port or free_port(),
            inherit_creamfl=False,  # the embedded defaults: SQLite and artifacts in the run dir
            log_path=self.options.run_dir / "logs" / "coordinator.log",
            log_level="info",
            ready_timeout_s=120.0,
        )
        self._checkpoint()
        self.coordinator.start()
        self._checkpoint()
        self.url = self.coordinator.url
        self.token_file = data_dir / "admin-token"
        self.admin_token = self.token_file.read_text().strip()
        self._print(
            f"coordinator pid {self.coordinator.pid} serving {self.url} "
            f"(SQLite and artifacts in {data_dir}, log {self.coordinator.log_path})"
        )

    def _check_reachable(self) -> None:
        import httpx

        try:
            ready = httpx.get(f"{self.url}/readyz", timeout=10.0)
        except httpx.TransportError as exc:
            raise DemoFailed(f"cannot reach the coordinator at {self.url}: {exc}") from exc
        if ready.status_code != 200:
            raise DemoFailed(f"the coordinator at {self.url} is not ready: /readyz answered {ready.status_code}")

    @contextlib.contextmanager
    def _api(self) -> Iterator[Api]:
        api = Api(self.url, self.admin_token, checkpoint=self._checkpoint)
        try:
            yield api
        finally:
            api.close()

    def _start_agent(self, plan: AgentPlan, federation_id: str, join_token: str) -> None:
        self._checkpoint()
        self.agents.append(
            start_agent(
                plan,
                url=self.url,
                federation_id=federation_id,
                join_token=join_token,
                run_dir=self.options.run_dir,
                threads=self.options.agent_threads,
            )
        )

    def _print_agent_commands(self, plans: list[AgentPlan], federation_id: str) -> None:
        self._print("start these agents (each with CREAMFL_AGENT_JOIN_TOKEN set to the join token):")
        for plan in plans:
            arguments = plan.arguments(self.url, federation_id, Path(f"creamfl-agent-{plan.name}"), 1)
            self._print("  creamfl-agent " + " ".join(arguments))

    def _wait_for_enrollment(self, api: Api, federation_id: str, expected: int) -> list[dict[str, Any]]:
        self._print(f"waiting for {expected} agents to enroll ...")
        while True:
            self._check_agents(federation_done=False)
            clients: list[dict[str, Any]] = api.get(f"/federations/{federation_id}/clients")
            if len(clients) >= expected:
                self._print(f"{len(clients)} clients enrolled ({self._elapsed():.0f} s)")
                return clients
            self._wait(0.5, f"waiting for agents to enroll ({len(clients)} of {expected} so far)")

    def _follow(self, api: Api, federation_id: str, names: dict[str, str]) -> list[dict[str, Any]]:
        """Print each round as it completes; fail on a failed round or federation, an agent's failure, or timeout."""
        done: dict[int, dict[str, Any]] = {}
        last_state: tuple[int, str] | None = None
        while True:
            # Exit codes first: an agent exits 0 only after the federation completed, so the state read
            # after them tells whether an early exit is the normal end.
            codes = [agent.process.poll() for agent in self.agents]
            federation = api.get(f"/federations/{federation_id}")
            self._check_agents(federation_done=federation["state"] == "completed", codes=codes)
            rounds: list[dict[str, Any]] = api.get(f"/federations/{federation_id}/rounds")
            for detail in sorted(rounds, key=lambda r: r["number"]):
                number = detail["number"]
                if detail["state"] == "failed":
                    raise DemoFailed(f"round {number} failed: {detail.get('failure_reason') or 'no reason given'}")
                if detail["state"] == "completed" and number not in done:
                    done[number] = round_record(detail, names)
                    self._print(table_line(ROUND_COLUMNS, round_cells(done[number])))
                elif detail["state"] != "completed" and (number, detail["state"]) != last_state:
                    last_state = (number, detail["state"])
                    self._progress(f"round {number}: {detail['state']}")
            state = federation["state"]
            if state == "completed":
                missing = [n for n in range(1, self.config.rounds + 1) if n not in done]
                if missing:
                    raise DemoFailed(f"the federation completed without rounds {missing}")
                return [done[n] for n in sorted(done)]
            if state in ("failed", "stopped"):
                raise DemoFailed(f"the federation is {state}: {federation.get('failure_reason') or 'no reason given'}")
            current = federation.get("current_round")
            self._wait(1.0, f"round {current} did not finish in time")

    def _check_agents(self, *, federation_done: bool, codes: list[int | None] | None = None) -> None:
        """Fail on an agent that exited non-zero, or exited at all before the federation was done."""
        codes = codes if codes is not None else [agent.process.poll() for agent in self.agents]
        for agent, code in zip(self.agents, codes, strict=True):
            if code is None:
                continue
            if code != 0:
                raise DemoFailed(
                    f"agent {agent.name} (pid {agent.process.pid}) exited with code {code}; the end of "
                    f"{agent.log_path}:\n{agent.log_tail()}"
                )
            if not federation_done:
                raise DemoFailed(
                    f"agent {agent.name} exited before the federation finished; the end of {agent.log_path}:\n"
                    f"{agent.log_tail()}"
                )

    def _wait_for_agents_to_finish(self, timeout_s: float = 120.0) -> None:
        """The agents learn that the federation is done at their next poll and exit 0."""
        deadline = time.monotonic() + timeout_s
        while any(agent.process.poll() is None for agent in self.agents):
            self._check_agents(federation_done=True)
            if time.monotonic() > deadline:
                running = ", ".join(a.name for a in self.agents if a.process.poll() is None)
                raise DemoFailed(f"agents still running {timeout_s:.0f} s after the federation completed: {running}")
            self._wait(0.2, "agents did not exit")
        self._check_agents(federation_done=True)
        if self.agents:
            self._print(f"all {len(self.agents)} agents exited with code 0")

    def _serve_until_interrupted(self) -> None:
        self._print("the coordinator keeps serving; Ctrl-C stops it")
        try:
            while self.coordinator is not None and self.coordinator.running:
                self._wait(1.0, None)
        except Interrupted:
            return

    # -- stopping -------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, self._on_signal)
        return previous

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._cleaning:
            self._hurry = True  # a second Ctrl-C while stopping: kill instead of waiting
            return
        if self._signalled is not None:
            raise Interrupted(signum)  # asked twice: do not wait for the next checkpoint
        self._signalled = signum

    def _checkpoint(self) -> None:
        """Where a SIGINT/SIGTERM takes effect (never in the middle of starting a process)."""
        if self._signalled is not None:
            raise Interrupted(self._signalled)

    def _wait(self, seconds: float, timeout_message: str | None) -> None:
        self._checkpoint()
        if timeout_message is not None and self._elapsed() > self.options.timeout_s:
            raise DemoFailed(f"timed out after {self.options.timeout_s:.0f} s: {timeout_message}")
        time.sleep(seconds)
        self._checkpoint()

    def _cleanup(self) -> None:
        """Stop every agent (SIGTERM to its group, SIGKILL after a grace period), then the coordinator."""
        self._cleaning = True
        running = [a for a in self.agents if a.process.poll() is None]
        for agent in running:
            signal_group(agent.process, signal.SIGTERM)
        deadline = time.monotonic() + 30.0
        for agent in running:
            while agent.process.poll() is None and time.monotonic() < deadline and not self._hurry:
                time.sleep(0.05)
            if agent.process.poll() is None:
                signal_group(agent.process, signal.SIGKILL)
            agent.process.wait()
        if running:
            self._say(f"stopped {len(running)} agents")
        if self.coordinator is not None and self.coordinator.running:
            if self._hurry:
                self.coordinator.kill()
            else:
                self.coordinator.stop()
            self._say(f"stopped the coordinator (pid {self.coordinator.pid})")

    # -- output ---------------------------------------------------------------------------------

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def _say(self, line: str) -> None:
        print(line, file=self.err, flush=True)

    def _progress(self, line: str) -> None:
        print(f"[{self._elapsed():6.0f} s] {line}", file=self.err, flush=True)
