"""A ``creamfl-agent run`` command line from typed values, for the programs that start agents (the
demo, the tests, the footprint bench). Standard library only: cheap to import, no torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Which flag sets each setting (client_agent.settings.AgentSettings), in the order a command line names them.
FLAGS = {
    "coordinator": "--coordinator",
    "federation": "--federation",
    "join_token": "--join-token",
    "modality": "--modality",
    "model": "--model",
    "data": "--data",
    "name": "--name",
    "state_dir": "--state-dir",
    "device": "--device",
    "threads": "--threads",
    "batch_size": "--batch-size",
    "poll_wait_s": "--poll-wait",
    "retry_for_s": "--retry-for",
    "backoff_max_s": "--backoff-max",
    "request_timeout_s": "--request-timeout",
    "once": "--once",
    "progress": "--progress",
}


@dataclass(frozen=True)
class AgentCommand:
    """The settings of one agent; None leaves a setting to the agent's environment or default."""

    coordinator: str
    federation: str
    modality: str
    data: str
    state_dir: Path
    join_token: str | None = None  # None: the agent reads CREAMFL_AGENT_JOIN_TOKEN (kept off the command line)
    model: str | None = None
    name: str | None = None
    device: str | None = None
    threads: int | None = None
    batch_size: int | None = None
    poll_wait_s: float | None = None
    retry_for_s: float | None = None
    backoff_max_s: float | None = None
    request_timeout_s: float | None = None
    once: bool = False
    progress: str | None = None

    def argv(self, *program: str) -> list[str]:
        """``program`` (the path of ``creamfl-agent``, or ``python -m client_agent.cli``), ``run``, the flags."""
        words = [*program, "run"]
        for setting, flag in FLAGS.items():
            value = getattr(self, setting)
            if value is None or value is False:
                continue
            words += [flag] if value is True else [flag, _word(value)]
        return words


def _word(value: str | Path | float) -> str:
    """``5`` rather than ``5.0``: the command lines are printed for operators to copy."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
