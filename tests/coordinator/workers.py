"""The coordinator's API in-process with no worker of its own, and workers made by the test: real
:class:`Worker` instances run one step at a time (``run_once``) or in threads, with an injectable
clock and artifact store."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from coordinator_service.app import create_app
from coordinator_service.artifacts import ArtifactStore
from coordinator_service.db.engine import transaction
from coordinator_service.db.models import Job, Round, RoundTransition, utcnow
from coordinator_service.jobs.worker import Worker
from coordinator_service.settings import Settings
from tests.coordinator.helpers import EnrolledClient, enroll_mix, next_task, start, upload_all
from tests.coordinator.helpers import create_federation as create_federation_via_api


class Coordinator:
    """The API in-process with no worker of its own; workers are made by the test."""

    def __init__(self, http: TestClient, settings: Settings) -> None:
        self.http = http
        services = http.app.state.services  # type: ignore[attr-defined]
        self.db: sessionmaker[Session] = services.db
        self.store: ArtifactStore = services.store
        self.settings = settings

    def worker(self, clock: Callable[[], datetime] = utcnow) -> Worker:
        return Worker(self.db, self.store, self.settings, clock=clock)

    def jobs(self, federation_id: str) -> list[Job]:
        with transaction(self.db) as session:
            return list(session.scalars(select(Job).where(Job.federation_id == federation_id).order_by(Job.id)))

    def round_row(self, federation_id: str, number: int) -> Round:
        with transaction(self.db) as session:
            return session.scalars(
                select(Round).where(Round.federation_id == federation_id, Round.number == number)
            ).one()

    def transitions(self, federation_id: str) -> dict[int, list[str]]:
        """Round number -> the states it entered, in order."""
        with transaction(self.db) as session:
            rows = session.execute(
                select(Round.number, RoundTransition.state)
                .join(Round, Round.id == RoundTransition.round_id)
                .where(Round.federation_id == federation_id)
                .order_by(RoundTransition.id)
            ).all()
        states: dict[int, list[str]] = {}
        for number, state in rows:
            states.setdefault(number, []).append(state)
        return states


@contextlib.contextmanager
def manual_coordinator(settings: Settings, store: ArtifactStore | None = None) -> Iterator[Coordinator]:
    """The application on ``settings`` (and ``store``, if given) without its in-process worker."""
    manual = settings.model_copy(update={"in_process_worker": False, "worker_poll_s": 0.02})
    with TestClient(create_app(manual, store=store)) as http:
        yield Coordinator(http, manual)


class ManualClock:
    """A clock the test moves: now starts at the real time and only moves by :meth:`advance`."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def advance_to(self, moment: datetime) -> None:
        self.now = max(self.now, moment)


def started_federation(coordinator: Coordinator, **config: object) -> tuple[str, list[EnrolledClient]]:
    federation = create_federation_via_api(coordinator.http, **config)
    clients = enroll_mix(coordinator.http, federation)
    start(coordinator.http, federation["id"])
    return federation["id"], clients


def upload_everything(coordinator: Coordinator, federation_id: str, clients: list[EnrolledClient]) -> None:
    for position, member in enumerate(clients):
        task = next_task(coordinator.http, federation_id, member, wait=0)
        assert task["kind"] == "train", task
        upload_all(coordinator.http, task, member, seed=position)
