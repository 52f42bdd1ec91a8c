"""Engines and sessions for SQLite (the embedded default) and PostgreSQL.

SQLite: WAL (readers never wait for the writer), foreign keys on, and every transaction begins
IMMEDIATE, so a transaction that reads and then writes holds the write lock from its start. Without
that, two deferred transactions can both read "not all clients uploaded yet" and the later writer
fails instead of waiting. PostgreSQL: every transaction that changes a federation's rounds, uploads
or jobs first locks the federation's row (FOR UPDATE), one lock order for everyone, so concurrent
uploads and workers serialise per federation and cannot deadlock.

Within one process, SQLite transactions also queue on a Python lock: SQLite's own busy handler
retries a locked database with sleeps of up to 100 ms, which under 32 concurrent uploads cost
seconds; the lock hands over at once. Other processes (extra workers) still meet the busy timeout.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
_SQLITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        _SQLITE_LOCKS[engine] = threading.RLock()
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy, not the driver, issue BEGIN (the driver's implicit BEGIN is DEFERRED).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _sqlite_begin_immediate(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: committed on success, rolled back on any exception."""
    with ExitStack() as stack:
        lock = _SQLITE_LOCKS.get(factory.kw["bind"])
        if lock is not None:
            stack.enter_context(lock)
        session = stack.enter_context(factory())
        stack.enter_context(session.begin())
        yield session
