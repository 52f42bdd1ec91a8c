"""Artifact rows are content-addressed too: the same bytes recorded by two transactions at once (two
federations with the same config publish identical checkpoints, two workers commit them) is one
row, never a unique-key error (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select

from coordinator_service import repositories as repo
from coordinator_service.db.engine import make_engine, make_sessionmaker, transaction
from coordinator_service.db.models import Artifact

SHA = "ab" * 32


def test_two_transactions_recording_the_same_artifact_at_once_keep_one_row(db_url: str) -> None:
    # Prepare
    engine = make_engine(db_url)
    factory = make_sessionmaker(engine)
    first_recorded = threading.Event()
    errors: list[Exception] = []

    def second_worker() -> None:
        first_recorded.wait(10)
        try:
            with transaction(factory) as session:
                repo.record_artifact(session, sha256=SHA, size=10, kind="checkpoint")
        except Exception as exc:  # the assertion below reports it
            errors.append(exc)

    other = threading.Thread(target=second_worker)
    other.start()

    # Execute: the second transaction reaches its insert while the first one's is not committed yet
    with transaction(factory) as session:
        repo.record_artifact(session, sha256=SHA, size=10, kind="checkpoint")
        repo.record_artifact(session, sha256=SHA, size=10, kind="checkpoint")
        first_recorded.set()
        time.sleep(0.3)
    other.join(10)

    # Assert
    with transaction(factory) as session:
        rows = session.scalars(select(Artifact)).all()
    engine.dispose()
    assert errors == []
    assert [(a.sha256, a.size, a.kind) for a in rows] == [(SHA, 10, "checkpoint")]
