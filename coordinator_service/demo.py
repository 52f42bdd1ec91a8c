"""``creamfl-coordinator demo``: the main job, a real federation on this machine, as one command.

It starts ``creamfl-coordinator serve`` on 127.0.0.1 (or drives the coordinator at ``--coordinator``),
creates a federation through the API, starts one ``creamfl-agent run`` process per client (image,
text and image+text clients, two model sizes each; client I of K holds the simulator's client I's
Dirichlet share of the built-in dataset and starts from its initial weights), follows the rounds
and prints one line per round: the time in each state, the participants, the bytes up and down,
the ensemble weight spread, and retrieval R@1 both ways with their sum. Then it trains the
server-only baseline on the same data and seed in this process, downloads the best server
checkpoint, and writes everything to ``<run-dir>/summary.json``.

Every process it starts is stopped when it ends, also on Ctrl-C or SIGTERM. Exit status: 0 when
every round completed, 1 when something failed (the message says what), 2 for bad options, 130 or
143 when interrupted by SIGINT or SIGTERM.

Only the standard library is imported at module level: ``creamfl-coordinator serve`` stays light.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import httpx

    from coordinator_service.launcher import CoordinatorProcess
    from creamfl.participants import ClientSlot
    from creamfl.sim_config import SimulationConfig

EXIT_FAILED = 1
EXIT_USAGE = 2

# Sizes on top of the simulator's defaults. "demo" is the simulator's demo preset (`make simulate`),
# so `creamfl simulate --preset demo` is the same federation in one process; "tiny" is a smoke run.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {"rounds": 2, "public_size": 100, "test_size": 100, "private_per_client": 60, "embed_dim": 64},
    "demo": {"rounds": 6, "public_size": 500, "test_size": 500, "private_per_client": 2500, "embed_dim": 128},
}
# The scenario options that map one to one onto `creamfl simulate` flags.
SCENARIO_FLAGS = (
    "rounds",
    "seed",
    "public_size",
    "test_size",
    "private_per_client",
    "dirichlet_alpha",
    "embed_dim",
    "image_clients",
    "text_clients",
    "multimodal_clients",
)
ROUND_STATES = ("pending", "open", "aggregating", "training", "evaluating")
RUN_ITEMS = ("coordinator", "agents", "logs", "summary.json", "server-best.safetensors")


class DemoFailed(Exception):
    """Something in the federation failed; the message says what (and where to look)."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM: stop everything we started, then exit 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# --- the command line ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo", help="sizes to start from (demo)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--public-size", type=int, help="public image-caption pairs")
    parser.add_argument("--test-size", type=int, help="held-out test images (two captions each)")
    parser.add_argument("--private-per-client", type=int, help="private scenes per client (Dirichlet shares)")
    parser.add_argument("--dirichlet-alpha", type=float)
    parser.add_argument("--embed-dim", type=int)
    parser.add_argument("--image-clients", type=int, help="image-only agents (default 2)")
    parser.add_argument("--text-clients", type=int, help="text-only agents (default 2)")
    parser.add_argument("--multimodal-clients", type=int, help="image+text agents (default 2)")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo"), help="logs, state, summary (runs/demo)")
    parser.add_argument(
        "--coordinator", help="drive the coordinator at this URL instead of starting one (agents run here)"
    )
    parser.add_argument("--admin-token", help="its admin token (default: CREAMFL_ADMIN_TOKEN)")
    parser.add_argument("--port", type=int, help="port of the coordinator started here (default: a free one)")
    parser.add_argument("--agent-threads", type=int, default=1, help="torch threads per agent (1)")
    parser.add_argument("--server-threads", type=int, help="torch threads of the coordinator's jobs (default: all)")
    parser.add_argument("--round-deadline", type=float, default=900.0, help="seconds a round waits for uploads")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    parser.add_argument(
        "--no-agents",
        dest="start_agents",
        action="store_false",
        help="start no agents: print their command lines and wait for them to enroll from elsewhere",
    )
    parser.add_argument("--handoff", type=Path, help="write the federation id and join token here (a shell env file)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the server-only baseline")
    parser.add_argument(
        "--keep-serving", action="store_true", help="keep the coordinator (and its dashboard) up until Ctrl-C"
    )


@dataclass
class Options:
    run_dir: Path
    coordinator: str | None = None
    admin_token: str | None = None
    port: int | None = None
    agent_threads: int = 1
    server_threads: int | None = None
    round_deadline_s: float = 900.0
    timeout_s: float = 1800.0
    start_agents: bool = True
    handoff: Path | None = None
    baseline: bool = True
    keep_serving: bool = False


def main(args: argparse.Namespace) -> int:
    """``creamfl-coordinator demo``: parse the scenario, run it, map the outcome to an exit status."""
    try:
        config = scenario_config(args.preset, **{k: getattr(args, k) for k in SCENARIO_FLAGS})
        options = Options(
            run_dir=args.run_dir,
            coordinator=args.coordinator.rstrip("/") if args.coordinator else None,
            admin_token=args.admin_token or os.environ.get("CREAMFL_ADMIN_TOKEN") or None,
            port=args.port,
            agent_threads=args.agent_threads,
            server_threads=args.server_threads,
            round_deadline_s=args.round_deadline,
            timeout_s=args.timeout,
            start_agents=args.start_agents,
            handoff=args.handoff,
            baseline=args.baseline,
            keep_serving=args.keep_serving,
        )
        check_options(config, options)
    except ValueError as exc:
        print(f"creamfl-coordinator demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return Demo(config, options).run()


def scenario_config(preset: str, **overrides: Any) -> SimulationConfig:
    """The simulator's config for this scenario (strategy creamfl); raises ValueError for bad values."""
    from creamfl.sim_config import SimulationConfig

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    given = {key: value for key, value in overrides.items() if value is not None}
    return SimulationConfig(**{**PRESETS[preset], **given})


def check_options(config: SimulationConfig, options: Options) -> None:
    if config.total_clients < 1:
        raise ValueError("the federation needs at least one client")
    if options.agent_threads < 1 or (options.server_threads is not None and options.server_threads < 1):
        raise ValueError("--agent-threads and --server-threads must be at least 1")
    if options.timeout_s <= 0 or options.round_deadline_s <= 0:
        raise ValueError("--timeout and --round-deadline must be positive")
    if options.coordinator is not None:
        if not options.coordinator.startswith(("http://", "https://")):
            raise ValueError(f"--coordinator must be an http:// or https:// URL, got {options.coordinator!r}")
        if not options.admin_token:
            raise ValueError("--coordinator needs the admin token: pass --admin-token or set CREAMFL_ADMIN_TOKEN")
        if options.port is not None or options.keep_serving:
            raise ValueError("--port and --keep-serving are for the coordinator the demo starts, not --coordinator")
    federation_config(config, deadline_s=options.round_deadline_s)  # validated like the API will


# --- the scenario -------------------------------------------------------------------------------


def federation_config(config: SimulationConfig, *, deadline_s: float) -> dict[str, Any]:
    """The coordinator's federation config for the simulator's ``config`` (every field spelled out)."""
    from pydantic import ValidationError

    from shared_schemas.federation import FederationCreate

    seats = config.clients_per_round or config.total_clients
    body: dict[str, Any] = {
        "name": f"demo-seed{config.seed}",
        "seed": config.seed,
        "embed_dim": config.embed_dim,
        "public_set": {
            "kind": "builtin",
            "seed": config.seed,
            "size": config.public_size,
            "test_size": config.test_size,
            "image_size": config.image_size,
        },
        "public_subset_size": config.public_subset,
        "rounds": config.rounds,
        "clients_per_round": seats,
        "min_clients": seats,  # every client in every round, as in the simulator
        "round_deadline_s": deadline_s,
        "max_reopen": 1,
        "strategy": config.strategy,
        "kd_weight": config.kd_weight,
        "exclude_self": config.exclude_self,
        "normalize_aggregate": config.normalize_aggregate,
        "payload_dtype": config.payload_dtype,
        "client": {
            "local_epochs": config.local_epochs,
            "batch_size": config.client_batch_size,
            "lr": config.client_lr,
            "gamma": config.gamma,
            "tau": config.tau,
            "inter": config.inter,
            "intra": config.intra,
        },
        "server": {
            "image_widths": list(config.server_image_widths),
            "text_encoder": config.text_encoder,
            "lr": config.server_lr,
            "batch_size": config.server_batch_size,
            "schedule": config.server_schedule,
        },
    }
    try:
        FederationCreate.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"the federation config is invalid: {problems}") from exc
    return body


@dataclass(frozen=True)
class AgentPlan:
    slot: ClientSlot
    data: str  # --data

    @property
    def name(self) -> str:
        return self.slot.name

    def arguments(self, coordinator: str, federation: str, state_dir: Path, threads: int) -> list[str]:
        """``run`` and its flags; the join token goes in CREAMFL_AGENT_JOIN_TOKEN, not on the command line."""
        return [
            "run",
            "--coordinator",
            coordinator,
            "--federation",
            federation,
            "--modality",
            self.slot.kind,
            "--model",
            self.slot.model_spec,
            "--data",
            self.data,
            "--name",
            self.slot.name,
            "--state-dir",
            str(state_dir),
            "--threads",
            str(threads),
            "--progress",
            "plain",
            "--retry-for",
            "120",  # an agent whose coordinator is gone for good gives up instead of polling forever
        ]


def agent_plans(config: SimulationConfig) -> list[AgentPlan]:
    """One agent per simulated client, in the simulator's client order (so the same data and weights)."""
    from creamfl.participants import client_layout

    total = config.total_clients
    query = f"samples={config.private_per_client}&alpha={config.dirichlet_alpha:g}"
    return [AgentPlan(slot, f"builtin:{config.seed}:{slot.number}/{total}?{query}") for slot in client_layout(config)]


def simulate_command(config: SimulationConfig) -> str:
    """The ``creamfl simulate`` command line that runs this scenario in one process."""
    from creamfl.sim_config import SimulationConfig

    defaults = SimulationConfig()
    flags = []
    for name in SCENARIO_FLAGS:
        value = getattr(config, name)
        if value != getattr(defaults, name):
            flag = "--" + name.replace("_", "-")
            flags.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    return " ".join(["creamfl simulate", *flags])


# --- reading rounds -----------------------------------------------------------------------------


def state_seconds(transitions: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds spent in each state (summed over re-openings) and the round's total, from its transitions."""
    times = [(t["state"], datetime.fromisoformat(t["at"])) for t in transitions]
    spent = dict.fromkeys(ROUND_STATES, 0.0)
    for (state, at), (_, after) in itertools.pairwise(times):
        spent[state] = spent.get(state, 0.0) + (after - at).total_seconds()
    spent["total"] = (times[-1][1] - times[0][1]).total_seconds() if times else 0.0
    return {state: round(value, 3) for state, value in spent.items()}


def weight_spread(weights: dict[str, Any] | None, names: dict[str, str]) -> dict[str, Any]:
    """Per modality: the smallest and largest mean ensemble weight a client got, and the weight entropy
    (nats; log K when the ensemble is uniform over its K clients)."""
    spread = {}
    for modality, stats in sorted((weights or {}).items()):
        means = [float(w) for w in stats["mean_weight"]]
        clients = [names.get(c, c) for c in stats["clients"]]
        spread[modality] = {
            "clients": clients,
            "mean_weight": dict(zip(clients, [round(w, 5) for w in means], strict=True)),
            "min": round(min(means), 5),
            "max": round(max(means), 5),
            "max_weight": round(float(stats["max_weight"]), 5),
            "entropy": round(float(stats["entropy"]), 5),
            "uniform_entropy": round(math.log(len(means)), 5),
        }
    return spread


def round_record(detail: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """What the summary keeps of a round's detail (``GET /federations/{id}/rounds/{n}``), with client names."""
    metrics = detail.get("metrics") or {}
    return {
        "round": detail["number"],
        "state": detail["state"],
        "attempts": detail["attempt"] + 1,
        "seconds": state_seconds(detail["transitions"]),
        "participants": sorted(names.get(c, c) for c in detail["selected"]),
        "uploaded": dict(sorted((names.get(c, c), m) for c, m in detail["uploaded"].items())),
        "bytes_up": detail["bytes_up"],
        "bytes_down": detail["bytes_down"],
        "traffic": dict(sorted((names.get(c, c), t) for c, t in detail.get("traffic", {}).items())),
        "weights": weight_spread(detail.get("weights"), names),
        "i2t_r1": metrics.get("i2t_r1"),
        "t2i_r1": metrics.get("t2i_r1"),
        "rsum": metrics.get("rsum"),
        "metrics": metrics,
        "server": detail.get("server") or {},
    }


# --- tables -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    header: str
    width: int


ROUND_COLUMNS = (
    Column("round", 5),
    Column("publish s", 9),
    Column("clients s", 9),
    Column("aggr s", 6),
    Column("distil s", 8),
    Column("eval s", 6),
    Column("total s", 7),
    Column("clients", 7),
    Column("up KB", 8),
    Column("down KB", 8),
    Column("img w min-max", 13),
    Column("img H/logK", 13),
    Column("txt w min-max", 13),
    Column("txt H/logK", 13),
    Column("i2t R@1", 7),
    Column("t2i R@1", 7),
    Column("rsum", 6),
)
BASELINE_COLUMNS = (
    Column("round", 5),
    Column("seconds", 7),
    Column("i2t R@1", 7),
    Column("t2i R@1", 7),
    Column("rsum", 6),
)


def table_line(columns: tuple[Column, ...], cells: list[str]) -> str:
    return "  ".join(cell.rjust(column.width) for column, cell in zip(columns, cells, strict=True))


def table_header(columns: tuple[Column, ...]) -> str:
    return "\n".join(
        [table_line(columns, [c.header for c in columns]), table_line(columns, ["-" * c.width for c in columns])]
    )


def round_cells(record: dict[str, Any]) -> list[str]:
    seconds = record["seconds"]
    cells = [str(record["round"])]
    cells += [f"{seconds[state]:.1f}" for state in ROUND_STATES]
    cells += [f"{seconds['total']:.1f}", str(len(record["participants"]))]
    cells += [f"{record['bytes_up'] / 1e3:.1f}", f"{record['bytes_down'] / 1e3:.1f}"]
    for modality in ("image", "text"):
        spread = record["weights"].get(modality)
        if spread is None:
            cells += ["-", "-"]
        else:
            cells += [
                f"{spread['min']:.4f}-{spread['max']:.4f}",
                f"{spread['entropy']:.4f}/{spread['uniform_entropy']:.4f}",
            ]
    cells += [_number(record["i2t_r1"]), _number(record["t2i_r1"]), _number(record["rsum"])]
    return cells


def baseline_cells(record: dict[str, Any]) -> list[str]:
    return [
        str(record["round"]),
        f"{record['seconds']:.1f}",
        _number(record["i2t_r1"]),
        _number(record["t2i_r1"]),
        _number(record["rsum"]),
    ]


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# --- processes ----------------------------------------------------------------------------------


@dataclass
class AgentProcess:
    plan: AgentPlan
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def name(self) -> str:
        return self.plan.name

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join("    " + line for line in text.splitlines()[-lines:])


def _agent_env(join_token: str) -> dict[str, str]:
    """Our environment without CREAMFL_* settings (the command line says everything), plus the join token."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CREAMFL_")}
    env["CREAMFL_AGENT_JOIN_TOKEN"] = join_token
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the process's group (each agent leads its own), falling back to the process itself."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)


# --- the demo -----------------------------------------------------------------------------------


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
        client_rows = self._client_rows(clients, plans)
        self._print("")
        self._print_communication(client_rows, records)
        baseline = self._baseline() if options.baseline else None
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
            "communication": _communication(client_rows, records),
            "baseline": baseline,
            "checkpoint": str(checkpoint),
            "checkpoint_sha256": checkpoint_sha,
            "dashboard": f"{self.url}/dashboard",
            "admin_token_file": str(self.token_file) if self.token_file else None,
        }
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        self._print_ending(summary)
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
        run_dir = self.options.run_dir
        state_dir = run_dir / "agents" / plan.name
        arguments = plan.arguments(self.url, federation_id, state_dir, self.options.agent_threads)
        log_path = run_dir / "logs" / f"{plan.name}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "client_agent.cli", *arguments],
                env=_agent_env(join_token),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a Ctrl-C reaches the demo, which stops it
            )
        self.agents.append(AgentProcess(plan, process, log_path))

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

    def _client_rows(self, clients: list[dict[str, Any]], plans: list[AgentPlan]) -> list[dict[str, Any]]:
        """Each client as enrolled, with what FedAvg would send for its model (float32 parameters)."""
        import torch

        from creamfl.data.scenes import CLASS_NAMES
        from creamfl.models import build_client_model
        from creamfl.participants import client_tokenizer

        vocab = client_tokenizer().vocab_size
        kinds = {plan.name: plan.slot.kind for plan in plans}
        rows = []
        with torch.random.fork_rng():
            for client in sorted(clients, key=lambda c: c["name"]):
                model = build_client_model(
                    client["model"], embed_dim=self.config.embed_dim, vocab_size=vocab, num_classes=len(CLASS_NAMES)
                )
                parameters = sum(p.numel() for p in model.parameters())
                rows.append(
                    {
                        "name": client["name"],
                        "id": client["id"],
                        "kind": kinds.get(client["name"], "+".join(client["modalities"])),
                        "model": client["model"],
                        "modalities": client["modalities"],
                        "samples": client["samples"],
                        "parameters": parameters,
                        "parameter_bytes": model.parameter_bytes(),
                        "mean_weight": client.get("mean_weight"),
                    }
                )
        return rows

    def _print_communication(self, clients: list[dict[str, Any]], records: list[dict[str, Any]]) -> None:
        columns = (
            Column("client", 12),
            Column("model", 11),
            Column("params", 9),
            Column("CreamFL up KB/round", 19),
            Column("down KB/round", 13),
            Column("FedAvg up+down KB/round", 23),
            Column("FedAvg / CreamFL", 16),
        )
        self._print("communication per client (CreamFL: measured by the coordinator; FedAvg: 2 x float32 parameters)")
        self._print(table_header(columns))
        for client in clients:
            ups = [r["traffic"].get(client["name"], {}).get("up", 0) for r in records]
            downs = [r["traffic"].get(client["name"], {}).get("down", 0) for r in records]
            creamfl = (sum(ups) + sum(downs)) / max(len(records), 1)
            fedavg = 2 * client["parameter_bytes"]
            cells = [
                client["name"],
                client["model"],
                f"{client['parameters']:,}",
                _spread_kb(ups),
                _spread_kb(downs),
                f"{fedavg / 1e3:.1f}",
                f"{fedavg / creamfl:.1f}x" if creamfl else "-",
            ]
            self._print(table_line(columns, cells))

    def _baseline(self) -> dict[str, Any]:
        """The server-only baseline on the same data and seed, in this process (the simulator)."""
        from creamfl.simulation import RoundResult, run_simulation

        config = replace(self.config, strategy="server-only")
        self._print("\nserver-only baseline: the same server, data and seed, no clients (in this process)")
        self._print(table_header(BASELINE_COLUMNS))
        rounds: list[dict[str, Any]] = []

        def on_round(result: RoundResult) -> None:
            record = {
                "round": result.round,
                "seconds": round(result.seconds, 2),
                "i2t_r1": result.test.i2t_r1,
                "t2i_r1": result.test.t2i_r1,
                "rsum": result.test.rsum,
            }
            rounds.append(record)
            self._print(table_line(BASELINE_COLUMNS, baseline_cells(record)))
            self._checkpoint()

        run_simulation(config, on_round=on_round, progress=lambda *_: self._checkpoint())
        return {"strategy": "server-only", "rounds": rounds, "final": rounds[-1]}

    def _print_ending(self, summary: dict[str, Any]) -> None:
        final = summary["final"]
        self._print("")
        line = (
            f"final: federation rsum {final['rsum']:.2f} (i2t R@1 {final['i2t_r1']:.2f}, t2i R@1 {final['t2i_r1']:.2f})"
        )
        baseline = summary["baseline"]
        if baseline is not None:
            b = baseline["final"]
            line += f"; server-only rsum {b['rsum']:.2f} (i2t {b['i2t_r1']:.2f}, t2i {b['t2i_r1']:.2f})"
            line += f"; difference {final['rsum'] - b['rsum']:+.2f}"
        self._print(line)
        self._print(f"the same federation in one process: {summary['simulate_command']}")
        self._print(
            f"server checkpoint (best rsum): {summary['checkpoint']} (sha256 {summary['checkpoint_sha256'][:16]}...)"
        )
        if self.token_file is not None:
            self._print(
                f"dashboard: {summary['dashboard']} (log in with the admin token in {self.token_file}); "
                f"after the demo: creamfl-coordinator serve --data-dir {self.token_file.parent} --port 8080, "
                "then http://127.0.0.1:8080/dashboard"
            )
        else:
            self._print(f"dashboard: {summary['dashboard']} (log in with the admin token)")
        self._print(f"summary: {self.options.run_dir / 'summary.json'}; wall time {summary['wall_seconds']:.0f} s")

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
            _signal_group(agent.process, signal.SIGTERM)
        deadline = time.monotonic() + 30.0
        for agent in running:
            while agent.process.poll() is None and time.monotonic() < deadline and not self._hurry:
                time.sleep(0.05)
            if agent.process.poll() is None:
                _signal_group(agent.process, signal.SIGKILL)
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


def _spread_kb(values: list[int]) -> str:
    low, high = min(values, default=0) / 1e3, max(values, default=0) / 1e3
    return f"{low:.1f}" if math.isclose(low, high) else f"{low:.1f}-{high:.1f}"


def _communication(clients: list[dict[str, Any]], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per client per round: CreamFL's bytes (the coordinator's count) beside FedAvg's for the same model."""
    rows = []
    for record in records:
        for client in clients:
            traffic = record["traffic"].get(client["name"], {"up": 0, "down": 0})
            rows.append(
                {
                    "round": record["round"],
                    "client": client["name"],
                    "model": client["model"],
                    "up": traffic["up"],
                    "down": traffic["down"],
                    "fedavg_up": client["parameter_bytes"],
                    "fedavg_down": client["parameter_bytes"],
                }
            )
    return rows


def _write_handoff(path: Path, federation_id: str, join_token: str) -> None:
    """``export`` lines for ``. FILE`` in a shell (agents in other containers); mode 0600, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"export CREAMFL_AGENT_FEDERATION={federation_id}\nexport CREAMFL_AGENT_JOIN_TOKEN={join_token}\n")
    os.replace(temp, path)


class Api:
    """The admin API at ``url``/api/v1; reads are retried on transport errors and 5xx, errors become DemoFailed."""

    def __init__(self, url: str, token: str, *, checkpoint: Any) -> None:
        import httpx

        self.http: httpx.Client = httpx.Client(
            base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60.0
        )
        self.checkpoint = checkpoint

    def close(self) -> None:
        self.http.close()

    def get(self, path: str) -> Any:
        return self._call("GET", path, retries=5)

    def post(self, path: str, body: dict[str, Any] | None) -> Any:
        return self._call("POST", path, retries=0, json=body)

    def download(self, path: str, target: Path) -> str:
        """Stream a file to ``target``; returns its sha256, checked against the coordinator's."""
        import httpx

        digest = hashlib.sha256()
        try:
            with self.http.stream("GET", path) as response:
                if response.status_code != 200:
                    response.read()
                    raise DemoFailed(f"GET {path}: {_describe(response)}")
                with target.open("wb") as handle:
                    for chunk in response.iter_bytes():
                        digest.update(chunk)
                        handle.write(chunk)
                expected = response.headers.get("x-content-sha256")
        except httpx.TransportError as exc:
            raise DemoFailed(f"GET {path}: {exc}") from exc
        if expected is not None and expected != digest.hexdigest():
            raise DemoFailed(f"GET {path}: the download's sha256 differs from the coordinator's")
        return digest.hexdigest()

    def _call(self, method: str, path: str, *, retries: int, **kwargs: Any) -> Any:
        import httpx

        for attempt in range(retries + 1):
            self.checkpoint()
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt == retries:
                    raise DemoFailed(f"{method} {path}: the coordinator is unreachable: {exc}") from exc
                time.sleep(1.0)
                continue
            if response.status_code >= 500 and attempt < retries:
                time.sleep(1.0)
                continue
            if response.status_code == 401:
                raise DemoFailed(f"{method} {path}: the coordinator refused the admin token: {_describe(response)}")
            if response.status_code >= 400:
                raise DemoFailed(f"{method} {path}: {_describe(response)}")
            return response.json()
        raise AssertionError("unreachable")


def _describe(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"HTTP {response.status_code} ({error['code']}): {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"
