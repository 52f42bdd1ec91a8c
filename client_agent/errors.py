"""The agent's errors: each carries one line saying what is wrong and what to do."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2


class AgentError(Exception):
    """A failure the operator must act on; ``str(error)`` is the one line to print."""

    exit_code = EXIT_FAILURE


class ConfigError(AgentError):
    """Bad configuration: wrong flag, unreadable data, wrong token, unreachable coordinator, ..."""

    exit_code = EXIT_CONFIG


class AgentStopped(Exception):
    """A stop was requested (SIGINT/SIGTERM, or the embedding program's stop event)."""
