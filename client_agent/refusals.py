"""The coordinator's refusals that only the operator can fix, as ConfigErrors saying what to change."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from client_agent.coordinator_errors import Rejected
from client_agent.errors import ConfigError
from client_agent.settings import AgentSettings
from client_agent.state import IDENTITY

T = TypeVar("T")


class Refusals:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.identity_file = settings.state_dir / IDENTITY

    def call(self, call: Callable[[], T]) -> T:
        """Run a call that needs the client token; map the refusals only the operator can fix."""
        try:
            return call()
        except Rejected as exc:
            if exc.status == 401:
                raise ConfigError(
                    f"the coordinator does not accept this agent's client token ({self.identity_file}): "
                    f"{exc.reason}; if the federation was recreated, move the state dir away to enroll afresh"
                ) from exc
            if exc.status == 403:
                raise ConfigError(
                    f"the coordinator refuses this client: {exc.reason}; ask the federation's admin"
                ) from exc
            if exc.status == 404 and exc.what in ("public set", "next task"):
                raise ConfigError(
                    f"{exc.what}: {exc.reason}; check --federation and --coordinator ({self.settings.coordinator})"
                ) from exc
            raise

    def enrollment(self, exc: Rejected, name: str) -> ConfigError:
        """What to change when the coordinator refuses to enroll this client as ``name``."""
        s = self.settings
        if exc.status == 401:
            return ConfigError(
                f"the coordinator refused the join token for federation {s.federation}: {exc.reason}; "
                "check --join-token (CREAMFL_AGENT_JOIN_TOKEN)"
            )
        if exc.status == 404:
            return ConfigError(
                f"federation {s.federation} does not exist at {s.coordinator}: {exc.reason}; check --federation"
            )
        if exc.status == 409 and "name" in exc.details:
            return ConfigError(
                f"a client named {name!r} is already enrolled in federation {s.federation}, and the state dir "
                f"{s.state_dir} holds no identity for it: pass another --name, or the --state-dir that client used"
            )
        return ConfigError(
            f"the coordinator refused to enroll this client: HTTP {exc.status} ({exc.code}): {exc.reason}"
        )
