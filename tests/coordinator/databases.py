"""Real databases for the coordinator tests: a SQLite file, or a fresh PostgreSQL database per test.

PostgreSQL comes from ``CREAMFL_TEST_POSTGRES`` (default: postgres@127.0.0.1:5432). Where it is not
reachable the PostgreSQL variants skip with the reason, except in CI (``CI=true``), where a skip
would hide a failure, so they fail instead.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from coordinator_service.db.migrate import upgrade

ADMIN_DSN = os.environ.get("CREAMFL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
_template: str | None = None


def sqlalchemy_url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+psycopg://", 1)


def postgres_unavailable() -> str | None:
    try:
        with psycopg.connect(ADMIN_DSN, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL is not reachable at {ADMIN_DSN}: {exc}".strip()


def require_postgres() -> None:
    reason = postgres_unavailable()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: PostgreSQL tests must run)")
    pytest.skip(reason)


def _admin_execute(statement: str) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as connection:
        connection.execute(statement)


def _dsn_for(database: str) -> str:
    base, _, _ = ADMIN_DSN.rpartition("/")
    return f"{base}/{database}"


def _migrated_template() -> str:
    """One migrated database per test session; each test copies it (CREATE DATABASE ... TEMPLATE)."""
    global _template
    if _template is None:
        name = f"creamfl_tmpl_{os.getpid()}_{secrets.token_hex(3)}"
        _admin_execute(f'CREATE DATABASE "{name}"')
        upgrade(sqlalchemy_url(_dsn_for(name)))
        _template = name
    return _template


@contextmanager
def postgres_database(*, migrated: bool = True) -> Iterator[str]:
    """A fresh database for one test; dropped afterwards. Yields its SQLAlchemy URL."""
    require_postgres()
    name = f"creamfl_{secrets.token_hex(6)}"
    template = f' TEMPLATE "{_migrated_template()}"' if migrated else ""
    _admin_execute(f'CREATE DATABASE "{name}"{template}')
    try:
        yield sqlalchemy_url(_dsn_for(name))
    finally:
        _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def drop_template() -> None:
    global _template
    if _template is not None:
        _admin_execute(f'DROP DATABASE IF EXISTS "{_template}" WITH (FORCE)')
        _template = None


@contextmanager
def database(kind: str, directory: Path, *, migrated: bool = True) -> Iterator[str]:
    """``kind`` "sqlite" or "postgresql": a real, empty (optionally migrated) database URL."""
    if kind == "sqlite":
        url = f"sqlite:///{directory / 'coordinator.db'}"
        if migrated:
            upgrade(url)
        yield url
        return
    with postgres_database(migrated=migrated) as url:
        yield url
