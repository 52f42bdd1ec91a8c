"""The agent processes: what each runs, starting them in their own process groups, signalling them."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from client_agent.command import AgentCommand

if TYPE_CHECKING:
    from creamfl.participants import ClientSlot
    from creamfl.sim_config import SimulationConfig


@dataclass(frozen=True)
class AgentPlan:
    slot: ClientSlot
    data: str  # --data

    @property
    def name(self) -> str:
        return self.slot.name

    def arguments(self, coordinator: str, federation: str, state_dir: Path, threads: int) -> list[str]:
        """``run`` and its flags; the join token goes in CREAMFL_AGENT_JOIN_TOKEN, not on the command line."""
        command = AgentCommand(
            coordinator=coordinator,
            federation=federation,
            modality=self.slot.kind,
            model=self.slot.model_spec,
            data=self.data,
            name=self.slot.name,
            state_dir=state_dir,
            threads=threads,
            progress="plain",
            retry_for_s=120,  # an agent whose coordinator is gone for good gives up instead of polling forever
        )
        return command.argv()


def agent_plans(config: SimulationConfig) -> list[AgentPlan]:
    """One agent per simulated client, in the simulator's client order (so the same data and weights)."""
    from creamfl.participants import client_layout

    total = config.total_clients
    query = f"samples={config.private_per_client}&alpha={config.dirichlet_alpha:g}"
    return [AgentPlan(slot, f"builtin:{config.seed}:{slot.number}/{total}?{query}") for slot in client_layout(config)]


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


def start_agent(
    plan: AgentPlan, *, url: str, federation_id: str, join_token: str, run_dir: Path, threads: int
) -> AgentProcess:
    """``creamfl-agent run`` for ``plan`` in its own process group, its output in ``<run-dir>/logs``."""
    state_dir = run_dir / "agents" / plan.name
    arguments = plan.arguments(url, federation_id, state_dir, threads)
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
    return AgentProcess(plan, process, log_path)


def _agent_env(join_token: str) -> dict[str, str]:
    """Our environment without CREAMFL_* settings (the command line says everything), plus the join token."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CREAMFL_")}
    env["CREAMFL_AGENT_JOIN_TOKEN"] = join_token
    env["PYTHONUNBUFFERED"] = "1"
    return env


def signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the process's group (each agent leads its own), falling back to the process itself."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)


def _write_handoff(path: Path, federation_id: str, join_token: str) -> None:
    """``export`` lines for ``. FILE`` in a shell (agents in other containers); mode 0600, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(f"export CREAMFL_AGENT_FEDERATION={federation_id}\nexport CREAMFL_AGENT_JOIN_TOKEN={join_token}\n")
    os.replace(temp, path)
