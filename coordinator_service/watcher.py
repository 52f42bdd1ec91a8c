"""Wakes long-polling clients when a round or federation changes, at the cost of one cheap query
per interval for the whole process, however many clients wait."""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from coordinator_service.db.engine import transaction
from coordinator_service.db.models import Federation, RoundTransition


class ChangeWatcher:
    def __init__(self, factory: sessionmaker[Session], interval_s: float) -> None:
        self.factory = factory
        self.interval_s = interval_s
        self._changed = asyncio.Event()
        self._version: tuple[object, ...] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closing = False

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(Exception):  # a database hiccup: waiters fall back to their timeout
                version = await run_in_threadpool(self._read_version)
                if version != self._version:
                    self._version = version
                    self.notify()
            await asyncio.sleep(self.interval_s)

    def notify(self) -> None:
        """Wake every current waiter (call on the event loop)."""
        self._changed.set()
        self._changed = asyncio.Event()

    def close_soon(self) -> None:
        """The server is shutting down: release every waiter now (callable from any thread)."""
        self.closing = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.notify)

    async def wait(self, timeout_s: float) -> None:
        """Until the next change or ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)

    def _read_version(self) -> tuple[object, ...]:
        with transaction(self.factory) as session:
            transitions = session.scalar(select(func.max(RoundTransition.id)))
            federations = session.scalar(select(func.max(Federation.updated_at)))
            return (transitions, federations)
