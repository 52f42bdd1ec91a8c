"""The job queue and its workers against real SQLite and PostgreSQL: leases, reclaiming, retries.

Workers are real :class:`Worker` instances (each with its own owner id) in threads of this process,
running real jobs on tiny federations; the API is the real application in-process, with no worker
of its own.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from coordinator_service.app import create_app
from coordinator_service.artifacts import ArtifactStore, LocalArtifactStore
from coordinator_service.db.engine import make_engine, make_sessionmaker, transaction
from coordinator_service.db.models import Job, Round, RoundTransition, Upload, utcnow
from coordinator_service.jobs import queue
from coordinator_service.jobs.worker import Worker
from coordinator_service.services.federations import control, create_federation
from coordinator_service.settings import Settings
from shared_schemas.federation import FederationCreate
from tests.coordinator.databases import database
from tests.coordinator.helpers import (
    ADMIN,
    API,
    ROUND_STATES,
    EnrolledClient,
    enroll_mix,
    next_task,
    round_detail,
    run_round,
    start,
    tiny_config,
    upload_all,
)
from tests.coordinator.helpers import (
    create_federation as create_federation_via_api,
)

JOB_KINDS = ["publish", "aggregate", "train", "evaluate"]
LEASE_S = 1.5  # the dead worker's lease: long enough to look at the queue while it holds


class Coordinator:
    """The API in-process with no worker of its own; workers are made by the test."""

    def __init__(self, http: TestClient, settings: Settings) -> None:
        self.http = http
        services = http.app.state.services  # type: ignore[attr-defined]
        self.db: sessionmaker[Session] = services.db
        self.store: ArtifactStore = services.store
        self.settings = settings

    def worker(self) -> Worker:
        return Worker(self.db, self.store, self.settings)

    def jobs(self, federation_id: str) -> list[Job]:
        with transaction(self.db) as session:
            return list(session.scalars(select(Job).where(Job.federation_id == federation_id).order_by(Job.id)))

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


@pytest.fixture
def coordinator(settings: Settings) -> Iterator[Coordinator]:
    manual = settings.model_copy(update={"in_process_worker": False, "worker_poll_s": 0.02})
    with TestClient(create_app(manual)) as http:
        yield Coordinator(http, manual)


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


def test_two_workers_run_every_job_exactly_once(coordinator: Coordinator, caplog: pytest.LogCaptureFixture) -> None:
    # Prepare: two federations at once, so both workers always have work to fight over; each job is
    # held a little before its commit to widen any window in which a second worker could take it
    caplog.set_level(logging.INFO, logger="creamfl.worker")
    coordinator.settings = coordinator.settings.model_copy(update={"job_hold_s": 0.2})
    workers = [coordinator.worker(), coordinator.worker()]
    stop = threading.Event()
    threads = [threading.Thread(target=w.run_forever, args=(stop,), daemon=True) for w in workers]
    federations = [started_federation(coordinator, rounds=1) for _ in range(2)]

    # Execute
    for thread in threads:
        thread.start()
    try:
        finished = [run_round(coordinator.http, fid, clients, 1) for fid, clients in federations]
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)

    # Assert: every job claimed once, run once and committed once; every state entered once
    assert [detail["state"] for detail in finished] == ["completed", "completed"]
    owners = Counter[str]()
    for fid, _ in federations:
        jobs = coordinator.jobs(fid)
        assert [j.kind for j in jobs] == JOB_KINDS
        assert [(j.state, j.attempts, j.error) for j in jobs] == [("done", 1, None)] * 4
        owners.update(j.lease_owner for j in jobs if j.lease_owner is not None)
        assert coordinator.transitions(fid) == {1: ROUND_STATES}
    assert set(owners) == {w.owner for w in workers}  # both took part
    claimed = Counter(re.findall(r"job (\d+) \(\w+, round \d+\) claimed", caplog.text))
    committed = Counter(re.findall(r"job (\d+) \(\w+\) committed", caplog.text))
    assert len(claimed) == 8 and set(claimed.values()) == {1}
    assert claimed == committed


def test_a_dead_workers_job_is_reclaimed_after_its_lease_and_the_round_goes_on(coordinator: Coordinator) -> None:
    # Prepare: a worker claimed round 1's publish job with a short lease and died (never renews)
    fid, clients = started_federation(coordinator, rounds=1)
    with transaction(coordinator.db) as session:
        dead = queue.claim(session, owner="dead", lease_s=LEASE_S)
        assert dead is not None and dead.kind == "publish" and dead.lease_expires_at is not None
        job_id, lease_expires_at = dead.id, dead.lease_expires_at
    worker = coordinator.worker()

    # Execute: nothing to do while the lease holds; once it expired the job is taken over
    ran_during_lease = worker.run_once()
    lease_held = utcnow() < lease_expires_at
    time.sleep(max((lease_expires_at - utcnow()).total_seconds(), 0.0) + 0.05)
    ran_after_lease = worker.run_once()
    upload_everything(coordinator, fid, clients)
    aggregated = worker.run_once()

    # Assert
    assert lease_held, f"the test was too slow to look while the {LEASE_S}s lease held"
    assert not ran_during_lease and ran_after_lease and aggregated
    publish, *rest = coordinator.jobs(fid)
    assert publish.id == job_id
    assert (publish.state, publish.attempts, publish.lease_owner) == ("done", 2, worker.owner)
    assert publish.result is not None and set(publish.result["global_reps"]) == {"image", "text"}
    assert [(j.kind, j.state, j.attempts) for j in rest] == [("aggregate", "done", 1), ("train", "queued", 0)]
    assert coordinator.transitions(fid) == {1: ROUND_STATES[:4]}


def test_a_stale_worker_whose_lease_was_taken_over_cannot_commit(coordinator: Coordinator) -> None:
    # Prepare: worker A claims the publish job and computes its result, but too slowly: its lease
    # lapses and worker B takes the job over and commits first
    fid, _ = started_federation(coordinator, rounds=1)
    stale, fresh = coordinator.worker(), coordinator.worker()
    with transaction(coordinator.db) as session:
        job = queue.claim(session, owner=stale.owner, lease_s=0.3)
        assert job is not None
        job_id = job.id
        snapshot = stale._snapshot(session, job)
    assert snapshot is not None
    output = stale.runner.run(snapshot)
    time.sleep(0.35)
    assert fresh.run_once()
    opened = round_detail(coordinator.http, fid, 1)

    # Execute
    with transaction(coordinator.db) as session:
        owned = queue.still_owned(session, job_id=job_id, owner=stale.owner)
    committed = stale._commit(job_id, output)

    # Assert: the stale result is dropped; the round opened once, with B's selection and deadline
    assert owned is None
    assert committed is False
    [publish] = coordinator.jobs(fid)
    assert (publish.state, publish.attempts) == ("done", 2)
    assert coordinator.transitions(fid) == {1: ["pending", "open"]}
    assert round_detail(coordinator.http, fid, 1) == opened


def test_still_owned_reads_the_row_under_its_lock_not_the_sessions_copy(tmp_path: Path) -> None:
    """PostgreSQL: a worker's commit transaction reads its job before it locks it. If the lease
    passes to another worker in between, the locked read must see the new owner. (SQLite cannot
    interleave like this: its IMMEDIATE transactions hold the write lock from their start.)"""
    # Prepare
    with database("postgresql", tmp_path) as url:
        engine = make_engine(url)
        factory = make_sessionmaker(engine)
        try:
            store = LocalArtifactStore(tmp_path / "artifacts")
            federation = create_federation(factory, store, FederationCreate.model_validate(tiny_config()))
            with transaction(factory) as session:
                control(session, federation_id=federation.id, action="start")
            with transaction(factory) as session:
                claimed = queue.claim(session, owner="slow", lease_s=0.2)
                assert claimed is not None
                job_id = claimed.id
            time.sleep(0.25)

            # Execute: "slow" reads its job (as Worker._commit does), then "fast" takes it over
            with transaction(factory) as session:
                early_copy = session.get(Job, job_id)
                assert early_copy is not None and early_copy.lease_owner == "slow"
                with transaction(factory) as other:
                    assert queue.claim(other, owner="fast", lease_s=30) is not None
                owned = queue.still_owned(session, job_id=job_id, owner="slow")
                owner_seen = early_copy.lease_owner

            # Assert
            assert owned is None
            assert owner_seen == "fast"
        finally:
            engine.dispose()


def test_a_failing_job_is_retried_then_fails_the_round_and_the_federation(coordinator: Coordinator) -> None:
    # Prepare: two attempts per job; every upload is in, but one upload's file is gone from the
    # artifact store, so the aggregation job raises every time it runs
    coordinator.settings = coordinator.settings.model_copy(update={"max_job_attempts": 2})
    fid, clients = started_federation(coordinator, rounds=1)
    worker = coordinator.worker()
    assert worker.run_once()  # publish
    upload_everything(coordinator, fid, clients)
    assert round_detail(coordinator.http, fid, 1)["state"] == "aggregating"
    with transaction(coordinator.db) as session:
        sha = session.scalars(select(Upload.sha256).order_by(Upload.id).limit(1)).one()
    coordinator.store.delete(sha)

    # Execute
    assert worker.run_once()
    after_first = coordinator.jobs(fid)[-1]
    first_round = round_detail(coordinator.http, fid, 1)
    assert worker.run_once()
    ran_more = worker.run_once()

    # Assert: one retry, then the job, the round and the federation failed with the error as reason
    assert (after_first.kind, after_first.state, after_first.attempts) == ("aggregate", "queued", 1)
    assert after_first.error is not None and after_first.error.startswith("ArtifactMissing")
    assert first_round["state"] == "aggregating"
    assert not ran_more
    aggregate = coordinator.jobs(fid)[-1]
    assert (aggregate.kind, aggregate.state, aggregate.attempts) == ("aggregate", "failed", 2)
    failed = round_detail(coordinator.http, fid, 1)
    assert failed["state"] == "failed"
    assert failed["failure_reason"].startswith("aggregate job failed 2 times: ArtifactMissing")
    assert sha in failed["failure_reason"]
    assert coordinator.transitions(fid) == {1: ["pending", "open", "aggregating", "failed"]}
    summary = coordinator.http.get(f"{API}/federations/{fid}", headers=ADMIN).json()
    assert summary["state"] == "failed"
    assert summary["failure_reason"] == f"round 1: {failed['failure_reason']}"
    assert next_task(coordinator.http, fid, clients[0], wait=0)["kind"] == "done"


def test_a_job_whose_worker_dies_on_every_attempt_fails_the_round(coordinator: Coordinator) -> None:
    # Prepare: two attempts per job; two workers in turn claim the publish job and die (never renew)
    coordinator.settings = coordinator.settings.model_copy(update={"max_job_attempts": 2})
    fid, _ = started_federation(coordinator, rounds=1)
    for owner in ("dead-1", "dead-2"):
        with transaction(coordinator.db) as session:
            job = queue.claim(session, owner=owner, lease_s=0.2, max_attempts=2)
            assert job is not None and job.kind == "publish"
        time.sleep(0.3)
    worker = coordinator.worker()

    # Execute: the lease of the last allowed attempt has expired
    ran = worker.run_once()

    # Assert: not claimed a third time; the job, the round and the federation failed with the reason
    assert not ran
    (publish,) = coordinator.jobs(fid)
    assert (publish.state, publish.attempts) == ("failed", 2)
    assert publish.error == "publish job lost its worker 2 times (killed, or its commit kept failing)"
    assert round_detail(coordinator.http, fid, 1)["state"] == "failed"
    assert coordinator.transitions(fid) == {1: ["pending", "failed"]}
    summary = coordinator.http.get(f"{API}/federations/{fid}", headers=ADMIN).json()
    assert summary["state"] == "failed"
