"""The demo's exit statuses and the two ways it ends early."""

from __future__ import annotations

import signal

EXIT_FAILED = 1
EXIT_USAGE = 2


class DemoFailed(Exception):
    """Something in the federation failed; the message says what (and where to look)."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM: stop everything we started, then exit 128 + the signal number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
