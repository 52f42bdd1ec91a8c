"""Stopping cleanly on SIGINT/SIGTERM: finish the current step or abandon it, never leave a half-written state.

Steps that only cost time to redo (the long poll, a download, which resumes from its part file,
local training, whose result is committed only at its end) are *abandonable*: a signal during one
stops it at once. Steps that commit something (writing the state, an upload, a report) finish
first; the agent stops right after. A second signal aborts at once.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from client_agent.errors import AgentStopped

log = logging.getLogger("client_agent")


class Stopper:
    """A stop request: set by a signal handler (:meth:`install`) or by whoever embeds the agent."""

    def __init__(self, event: threading.Event | None = None) -> None:
        self.event = event or threading.Event()
        self._abandonable = 0
        self._signals = 0

    def request(self) -> None:
        self.event.set()

    def check(self) -> None:
        if self.event.is_set():
            raise AgentStopped("stop requested")

    @contextlib.contextmanager
    def abandonable(self) -> Iterator[None]:
        """A step a signal may interrupt at once (it raises :class:`AgentStopped` inside it)."""
        self.check()
        self._abandonable += 1
        try:
            yield
        finally:
            self._abandonable -= 1

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGINT and SIGTERM meanwhile (from the main thread); the old handlers come back after."""
        previous = {signum: signal.signal(signum, self._handle) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals > 1:
            raise KeyboardInterrupt(f"{name} again: aborting at once")
        self.event.set()
        if self._abandonable > 0:
            log.warning("stopping signal=%s abandoning the current step", name)
            raise AgentStopped(name)
        log.warning("stopping signal=%s after the current step (send it again to abort at once)", name)
