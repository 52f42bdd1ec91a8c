"""Dashboard session values: signed, expiring, bound to the admin token, and revocable for good:
the live sessions are rows, so a logout holds in another process and after a restart (SQLite and
PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from coordinator_service.dashboard.sessions import DashboardSessions
from coordinator_service.db.engine import make_engine, make_sessionmaker
from coordinator_service.db.models import DashboardSession
from coordinator_service.security import token_hash
from tests.coordinator.databases import database

ADMIN_HASH = token_hash("admin-test-token-0123456789")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    with database(request.param, tmp_path) as url:
        engine = make_engine(url)
        try:
            yield make_sessionmaker(engine)
        finally:
            engine.dispose()


def stored_ids(db: sessionmaker[Session]) -> set[str]:
    with db() as session:
        return set(session.scalars(select(DashboardSession.id_hash)))


def test_an_issued_session_verifies_until_it_expires(db: sessionmaker[Session]) -> None:
    # Prepare
    clock = Clock()
    sessions = DashboardSessions(ADMIN_HASH, db, ttl_s=60, clock=clock)
    issued = sessions.issue()

    # Execute
    fresh = sessions.verify(issued.value)
    clock.now += 59
    almost = sessions.verify(issued.value)
    clock.now += 1
    expired = sessions.verify(issued.value)

    # Assert
    assert (fresh, almost, expired) == (True, True, False)
    assert issued.max_age == 60 and issued.expires_at == 1_000_060


def test_a_changed_value_or_another_admin_token_is_refused(db: sessionmaker[Session]) -> None:
    # Prepare
    sessions = DashboardSessions(ADMIN_HASH, db)
    value = sessions.issue().value
    version, expires, session_id, mac = value.split(".")
    later = str(int(expires) + 10**6)
    other_first = "y" if session_id.startswith("x") else "x"
    other_token = DashboardSessions(token_hash("another-admin-token-0123456789"), db)

    # Execute
    verdicts = {
        "genuine": sessions.verify(value),
        "longer expiry": sessions.verify(f"{version}.{later}.{session_id}.{mac}"),
        "other id": sessions.verify(f"{version}.{expires}.{other_first}{session_id[1:]}.{mac}"),
        "mac flipped": sessions.verify(value[:-1] + ("1" if value.endswith("0") else "0")),
        "no mac": sessions.verify(f"{version}.{expires}.{session_id}"),
        "non-ascii": sessions.verify(value[:-1] + "é"),
        "empty": sessions.verify(""),
        "other admin token": other_token.verify(value),
    }

    # Assert
    assert verdicts == {name: name == "genuine" for name in verdicts}


def test_logout_revokes_only_that_session_in_every_process_and_after_a_restart(db: sessionmaker[Session]) -> None:
    # Prepare: two sessions; another replica (or this one restarted) reads the same database
    sessions = DashboardSessions(ADMIN_HASH, db)
    first, second = sessions.issue().value, sessions.issue().value
    replica = DashboardSessions(ADMIN_HASH, db)

    # Execute
    replica.revoke(first)
    replica.revoke("garbage")
    restarted = DashboardSessions(ADMIN_HASH, db)

    # Assert
    assert first != second
    assert not sessions.verify(first) and not restarted.verify(first)
    assert sessions.verify(second) and restarted.verify(second)
    assert len(stored_ids(db)) == 1


def test_a_signed_value_without_its_row_is_refused_and_expired_rows_are_pruned(db: sessionmaker[Session]) -> None:
    # Prepare: a session, and one issued an hour earlier with a ten-minute lifetime
    clock = Clock()
    sessions = DashboardSessions(ADMIN_HASH, db, ttl_s=600, clock=clock)
    old = sessions.issue()
    clock.now += 3600
    current = sessions.issue()  # issuing prunes the expired row

    # Execute
    kept = stored_ids(db)
    with db() as session, session.begin():
        session.query(DashboardSession).delete()  # the rows are the truth, not the signature
    verdict = sessions.verify(current.value)

    # Assert
    assert old.expires_at < clock.now < current.expires_at
    assert kept == {token_hash(current.value.split(".")[2])}
    assert verdict is False
