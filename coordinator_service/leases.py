"""A lease kept alive while long work runs: a thread renews it every third of its length.

Jobs and dataset registrations both hold a lease in their row; a worker that dies stops renewing,
and another claims the work once the lease has run out.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("creamfl.leases")


class RenewedLease:
    """``renew()`` (True while the lease is still ours) every ``lease_s / 3`` until the block ends;
    ``lost`` is set once a renewal finds the lease taken over."""

    def __init__(self, renew: Callable[[], bool], *, lease_s: float, name: str) -> None:
        self.renew, self.interval_s, self.name = renew, lease_s / 3, name
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{name}", daemon=True)

    def __enter__(self) -> RenewedLease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if not self.renew():
                    log.warning("%s: lease lost", self.name)
                    self.lost.set()
                    return
            except Exception:  # a database hiccup: try again at the next interval
                log.exception("%s: lease renewal failed", self.name)
