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
from datetime import timedelta
from pathlib import Path

import pytest

from coordinator_service.artifacts import LocalArtifactStore
from coordinator_service.db.engine import make_engine, make_sessionmaker, transaction
from coordinator_service.db.models import Job, utcnow
from coordinator_service.jobs import queue
from coordinator_service.services.federations import control, create_federation
from coordinator_service.settings import Settings
from shared_schemas.federation import FederationCreate
from tests.coordinator.databases import database
from tests.coordinator.helpers import (
    ADMIN,
    API,
    ROUND_STATES,
    next_task,
    round_detail,
    run_round,
    tiny_config,
)
from tests.coordinator.workers import (
    Coordinator,
    ManualClock,
    manual_coordinator,
    started_federation,
    upload_everything,
)

JOB_KINDS = ["publish", "aggregate", "train", "evaluate"]
LEASE_S = 1.5  # the dead worker's lease: long enough to look at the queue while it holds
LOSSES = 20  # the default cap on lost workers


@pytest.fixture
def coordinator(settings: Settings) -> Iterator[Coordinator]:
    with manual_coordinator(settings) as coordinator:
        yield coordinator


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
        dead = queue.claim(session, owner="dead", lease_s=LEASE_S, max_lease_losses=LOSSES)
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
    # Taken over without spending an attempt: the lost worker is counted apart.
    assert (publish.state, publish.attempts, publish.lease_losses, publish.lease_owner) == ("done", 1, 1, worker.owner)
    assert publish.result is not None and set(publish.result["global_reps"]) == {"image", "text"}
    assert [(j.kind, j.state, j.attempts) for j in rest] == [("aggregate", "done", 1), ("train", "queued", 0)]
    assert coordinator.transitions(fid) == {1: ROUND_STATES[:4]}


def test_a_stale_worker_whose_lease_was_taken_over_cannot_commit(coordinator: Coordinator) -> None:
    # Prepare: worker A claims the publish job and computes its result, but too slowly: its lease
    # lapses and worker B takes the job over and commits first
    fid, _ = started_federation(coordinator, rounds=1)
    stale, fresh = coordinator.worker(), coordinator.worker()
    with transaction(coordinator.db) as session:
        job = queue.claim(session, owner=stale.owner, lease_s=0.3, max_lease_losses=LOSSES)
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
    assert (publish.state, publish.attempts, publish.lease_losses) == ("done", 1, 1)
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
                claimed = queue.claim(session, owner="slow", lease_s=0.2, max_lease_losses=LOSSES)
                assert claimed is not None
                job_id = claimed.id
            time.sleep(0.25)

            # Execute: "slow" reads its job (as Worker._commit does), then "fast" takes it over
            with transaction(factory) as session:
                early_copy = session.get(Job, job_id)
                assert early_copy is not None and early_copy.lease_owner == "slow"
                with transaction(factory) as other:
                    assert queue.claim(other, owner="fast", lease_s=30, max_lease_losses=LOSSES) is not None
                owned = queue.still_owned(session, job_id=job_id, owner="slow")
                owner_seen = early_copy.lease_owner

            # Assert
            assert owned is None
            assert owner_seen == "fast"
        finally:
            engine.dispose()


def test_a_failing_job_is_retried_after_growing_delays_then_fails_the_round(coordinator: Coordinator) -> None:
    # Prepare: three attempts per job, retried after 10 s, then 20 s; every upload is in, but the
    # round's global image representations are gone from the artifact store, so the aggregation job
    # raises every time it runs
    coordinator.settings = coordinator.settings.model_copy(
        update={"max_job_attempts": 3, "retry_base_s": 10.0, "retry_max_s": 1000.0}
    )
    fid, clients = started_federation(coordinator, rounds=1)
    clock = ManualClock()
    worker = coordinator.worker(clock)
    assert worker.run_once()  # publish
    upload_everything(coordinator, fid, clients)
    global_reps = coordinator.round_row(fid, 1).global_reps
    assert global_reps is not None
    sha = global_reps["image"]
    coordinator.store.delete(sha)

    # Execute: run; try again before the delay ends (nothing runs), then once it ended; and again
    delays, early_runs, retried = [], [], []
    for _ in range(2):
        ran_at = clock()
        assert worker.run_once()
        retried.append(coordinator.jobs(fid)[-1])
        assert retried[-1].not_before is not None
        delays.append((retried[-1].not_before - ran_at).total_seconds())
        clock.advance_to(retried[-1].not_before - timedelta(seconds=1))
        early_runs.append(worker.run_once())
        clock.advance(1)
    state_while_retrying = round_detail(coordinator.http, fid, 1)["state"]
    assert worker.run_once()
    ran_more = worker.run_once()

    # Assert: two retries, 10 s then 20 s later, then the job, the round and the federation failed
    assert delays == [10.0, 20.0]
    assert early_runs == [False, False]
    assert [(j.kind, j.state, j.attempts) for j in retried] == [("aggregate", "queued", 1), ("aggregate", "queued", 2)]
    missing = f"ArtifactMissing: artifact {sha} is not in the store"
    assert all(j.error == missing for j in retried)
    assert state_while_retrying == "aggregating"
    assert not ran_more
    aggregate = coordinator.jobs(fid)[-1]
    assert (aggregate.kind, aggregate.state, aggregate.attempts) == ("aggregate", "failed", 3)
    failed = round_detail(coordinator.http, fid, 1)
    assert failed["state"] == "failed"
    assert failed["failure_reason"] == f"aggregate job failed 3 times: {missing}"
    assert coordinator.transitions(fid) == {1: ["pending", "open", "aggregating", "failed"]}
    summary = coordinator.http.get(f"{API}/federations/{fid}", headers=ADMIN).json()
    assert summary["state"] == "failed"
    assert summary["failure_reason"] == f"round 1: {failed['failure_reason']}"
    assert next_task(coordinator.http, fid, clients[0], wait=0)["kind"] == "done"


def test_a_job_whose_worker_dies_more_often_than_its_attempts_still_runs(coordinator: Coordinator) -> None:
    # Prepare: two attempts per job; three workers in turn claim the publish job and die (never renew)
    coordinator.settings = coordinator.settings.model_copy(update={"max_job_attempts": 2})
    fid, _ = started_federation(coordinator, rounds=1)
    clock = ManualClock()
    for owner in ("dead-1", "dead-2", "dead-3"):
        with transaction(coordinator.db) as session:
            job = queue.claim(session, owner=owner, lease_s=LEASE_S, max_lease_losses=LOSSES, now=clock())
            assert job is not None and job.kind == "publish"
        clock.advance(LEASE_S + 1)

    # Execute
    ran = coordinator.worker(clock).run_once()

    # Assert: re-run a fourth time, and no attempt spent on the dead workers
    assert ran
    (publish,) = coordinator.jobs(fid)
    assert (publish.state, publish.attempts, publish.lease_losses, publish.error) == ("done", 1, 3, None)
    assert round_detail(coordinator.http, fid, 1)["state"] == "open"


def test_a_job_that_kills_its_worker_every_time_fails_the_round(coordinator: Coordinator) -> None:
    # Prepare: a job is re-run after two lost workers at most; three workers in turn claim the
    # publish job and die (never renew)
    coordinator.settings = coordinator.settings.model_copy(update={"max_lease_losses": 2})
    fid, _ = started_federation(coordinator, rounds=1)
    clock = ManualClock()
    for owner in ("dead-1", "dead-2", "dead-3"):
        with transaction(coordinator.db) as session:
            job = queue.claim(session, owner=owner, lease_s=LEASE_S, max_lease_losses=2, now=clock())
            assert job is not None and job.kind == "publish"
        clock.advance(LEASE_S + 1)

    # Execute: the lease of the last allowed re-run has expired
    ran = coordinator.worker(clock).run_once()

    # Assert: not claimed a fourth time; the job, the round and the federation failed with the reason
    assert not ran
    (publish,) = coordinator.jobs(fid)
    assert (publish.state, publish.attempts, publish.lease_losses) == ("failed", 1, 3)
    assert publish.error == "publish job lost its worker 3 times (killed, or its commit kept failing)"
    assert round_detail(coordinator.http, fid, 1)["state"] == "failed"
    assert coordinator.transitions(fid) == {1: ["pending", "failed"]}
    summary = coordinator.http.get(f"{API}/federations/{fid}", headers=ADMIN).json()
    assert summary["state"] == "failed"
