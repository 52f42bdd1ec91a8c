"""Crash safety with a real coordinator process killed with SIGKILL and restarted on the same data.

Three crash points: while uploads are arriving, while the aggregation job runs and while server
training runs (the job has written its artifacts and is held before its commit by the fault
injection setting ``CREAMFL_JOB_HOLD_S``). After the restart the federation must finish with no
accepted upload lost, no round transition run twice, and every artifact the database names on disk.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from coordinator_service.artifacts import LocalArtifactStore
from coordinator_service.db.models import Artifact, Federation, Job, Round, Upload
from coordinator_service.launcher import CoordinatorProcess
from tests.coordinator.databases import database
from tests.coordinator.helpers import (
    ADMIN,
    API,
    ROUND_STATES,
    EnrolledClient,
    create_federation,
    enroll,
    enroll_mix,
    next_task,
    payload,
    round_detail,
    run_round,
    start,
    upload_all,
    wait_for_round,
)
from tests.coordinator.servers import coordinator_process

# Short lease so a killed worker's job is claimed again soon; quick polling for quick tests.
FAST = {"lease_s": 2, "worker_poll_s": 0.1, "watch_interval_s": 0.1, "threads": 1}
JOB_HOLD_S = 2.5  # long enough to see a job's artifacts on disk and kill it before its commit
TIMEOUT_S = 90.0


# -- inspecting the database and the artifact store directly -------------------------------------


@dataclass
class Storage:
    """The coordinator's database and artifact store, read from outside the process."""

    url: str
    store: LocalArtifactStore

    def session(self) -> Session:
        return Session(create_engine(self.url, poolclass=NullPool))

    def recorded_artifacts(self) -> set[str]:
        with self.session() as session:
            return set(session.scalars(select(Artifact.sha256)))

    def stored_files(self) -> set[str]:
        return {artifact.sha256 for artifact in self.store.list_stored()}

    def orphans(self) -> set[str]:
        """Files under their hash that no database row records (a write whose commit never came)."""
        return self.stored_files() - self.recorded_artifacts()

    def temp_files(self) -> list[str]:
        return self.store.staging_files()

    def uploads(self, federation_id: str, number: int) -> dict[tuple[str, str], str]:
        """(client id, modality) -> sha256 of the round's recorded uploads."""
        with self.session() as session:
            round_id = session.scalars(
                select(Round.id).where(Round.federation_id == federation_id, Round.number == number)
            ).one()
            rows = session.scalars(select(Upload).where(Upload.round_id == round_id)).all()
            return {(row.client_id, row.modality): row.sha256 for row in rows}

    def job(self, federation_id: str, number: int, kind: str) -> Job:
        with self.session() as session:
            return session.scalars(
                select(Job)
                .join(Round, Round.id == Job.round_id)
                .where(Job.federation_id == federation_id, Round.number == number, Job.kind == kind)
            ).one()

    def round_state(self, federation_id: str, number: int) -> str:
        with self.session() as session:
            return session.scalars(
                select(Round.state).where(Round.federation_id == federation_id, Round.number == number)
            ).one()

    def referenced(self) -> dict[str, str]:
        """Every sha256 a row names -> where: uploads, global reps, aggregates, checkpoints."""
        names: dict[str, str] = {}
        with self.session() as session:
            for up in session.scalars(select(Upload)):
                names[up.sha256] = f"upload {up.client_id}/{up.modality}"
            for round_ in session.scalars(select(Round)):
                for what, value in (("global", round_.global_reps), ("aggregate", round_.aggregates)):
                    for modality, sha in (value or {}).items():
                        names[sha] = f"round {round_.number} {what} {modality}"
                for what, sha in (("published", round_.checkpoint_published), ("trained", round_.checkpoint_trained)):
                    if sha is not None:
                        names[sha] = f"round {round_.number} checkpoint {what}"
            for federation in session.scalars(select(Federation)):
                for what, sha in (("latest", federation.latest_checkpoint), ("best", federation.best_checkpoint)):
                    if sha is not None:
                        names[sha] = f"federation checkpoint {what}"
        return names

    def assert_consistent(self) -> None:
        """Every artifact a row names is recorded, on disk and intact."""
        recorded = self.recorded_artifacts()
        for sha, where in self.referenced().items():
            assert sha in recorded, f"{where}: {sha} has no artifact row"
            assert self.store.exists(sha), f"{where}: {sha} is missing from the store"
            assert _sha(self.store.read(sha)) == sha, f"{where}: {sha} is corrupt"


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        yield url


def _storage(coordinator: CoordinatorProcess) -> Storage:
    return Storage(coordinator.database_url, LocalArtifactStore(coordinator.data_dir / "artifacts"))


def _wait(condition: Any, what: str, coordinator: CoordinatorProcess, timeout: float = TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{coordinator.log_tail()}")
        time.sleep(0.05)
    return value


def _jobs(http: httpx.Client, federation_id: str) -> list[dict[str, Any]]:
    response = http.get(f"{API}/jobs", params={"federation_id": federation_id}, headers=ADMIN)
    assert response.status_code == 200, response.text
    jobs: list[dict[str, Any]] = response.json()
    return jobs


def _sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _assert_federation_finished(http: httpx.Client, federation_id: str, storage: Storage) -> None:
    """Both rounds ran each transition once, the federation completed, the store matches the rows."""
    for number in (1, 2):
        detail = round_detail(http, federation_id, number)
        assert detail["state"] == "completed", detail
        assert [t["state"] for t in detail["transitions"]] == ROUND_STATES, detail["transitions"]
        assert detail["metrics"] is not None and detail["metrics"]["rsum"] >= 0
    summary = http.get(f"{API}/federations/{federation_id}", headers=ADMIN).json()
    assert summary["state"] == "completed", summary
    assert summary["rounds_completed"] == 2
    jobs = _jobs(http, federation_id)
    assert sorted((j["round"], j["kind"]) for j in jobs) == sorted(
        (r, k) for r in (1, 2) for k in ("publish", "aggregate", "train", "evaluate")
    ), "a job was enqueued twice or not at all"
    assert all(j["state"] == "done" for j in jobs), jobs
    storage.assert_consistent()


# -- (a) killed while uploads are arriving -------------------------------------------------------


@dataclass
class UploadLog:
    """What one client saw: every response (status, sha256, before the kill?) and transport error."""

    responses: list[tuple[int, str | None, bool]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _upload_until_stored(
    base_url: str,
    url: str,
    client: EnrolledClient,
    body: bytes,
    log: UploadLog,
    killed: threading.Event,
    abandon: threading.Event,
    pause: tuple[threading.Event, threading.Event] | None = None,
) -> None:
    """Upload like a client agent: retry on a broken connection until a response comes (or the
    test ``abandon``s it).

    ``pause`` (sent, resume): the first attempt sends half the body, sets ``sent`` and waits for
    ``resume`` before sending the rest, so the coordinator dies while this upload is arriving."""
    headers = {**client.headers, "Content-SHA256": _sha(body), "Content-Type": "application/octet-stream"}

    def paced(sent: threading.Event, resume: threading.Event) -> Iterator[bytes]:
        yield body[: len(body) // 2]
        sent.set()
        resume.wait(TIMEOUT_S)
        yield body[len(body) // 2 :]

    deadline = time.monotonic() + TIMEOUT_S
    first = True
    while True:
        content: bytes | Iterator[bytes] = paced(*pause) if first and pause is not None else body
        first = False
        try:
            with httpx.Client(base_url=base_url, timeout=30.0) as http:
                response = http.put(url, content=content, headers=headers)
        except httpx.TransportError as exc:
            log.errors.append(type(exc).__name__)
            if time.monotonic() > deadline or abandon.wait(0.2):
                return
            continue
        sha = response.json().get("sha256") if response.status_code in (200, 201) else None
        log.responses.append((response.status_code, sha, not killed.is_set()))
        return


def test_kill_while_uploads_arrive_loses_no_accepted_upload(tmp_path: Path, storage_url: str) -> None:
    # Prepare: six clients (eight uploads) selected for round 1, which is open
    with coordinator_process(tmp_path / "data", database_url=storage_url, **FAST) as coordinator:
        storage = _storage(coordinator)
        with coordinator.http() as http:
            federation = create_federation(http, rounds=2, clients_per_round=6)
            fid = federation["id"]
            clients = [
                *enroll_mix(http, federation),
                enroll(http, federation, "img2", ["image"], "image-cnn-s"),
                enroll(http, federation, "txt2", ["text"], "text-gru-s"),
                enroll(http, federation, "mm2", ["image", "text"], "dual-s"),
            ]
            start(http, fid)
            tasks = {c.id: next_task(http, fid, c) for c in clients}
        assert all(t["kind"] == "train" and t["round"] == 1 for t in tasks.values()), tasks
        bodies = {
            (c.id, m): payload(len(tasks[c.id]["subset"]), tasks[c.id]["embed_dim"], m, seed=10 * i + j)
            for i, c in enumerate(clients)
            for j, m in enumerate(c.modalities)
        }
        fast, slow = clients[:3], clients[3:]
        killed, abandon = threading.Event(), threading.Event()
        logs = {key: UploadLog() for key in bodies}
        pauses = {c.id: (threading.Event(), threading.Event()) for c in slow}

        def client_agent(client: EnrolledClient) -> None:
            for position, modality in enumerate(client.modalities):
                key = (client.id, modality)
                pause = pauses.get(client.id) if position == 0 else None
                url = tasks[client.id]["upload_urls"][modality]
                _upload_until_stored(coordinator.url, url, client, bodies[key], logs[key], killed, abandon, pause)

        threads = [threading.Thread(target=client_agent, args=(c,), daemon=True) for c in clients]

        try:
            # Execute: the fast clients' uploads are accepted, the slow clients' are half sent: kill -9
            for thread in threads:
                thread.start()
            fast_keys = [(c.id, m) for c in fast for m in c.modalities]
            _wait(lambda: all(logs[k].responses for k in fast_keys), "the fast uploads", coordinator)
            _wait(lambda: all(sent.is_set() for sent, _ in pauses.values()), "the slow uploads to start", coordinator)
            _wait(lambda: len(storage.temp_files()) == len(slow), "the slow uploads to arrive", coordinator)
            coordinator.kill()
            killed.set()
            partial_bodies = storage.temp_files()
            before_restart = storage.uploads(fid, 1)
            for _, resume in pauses.values():
                resume.set()
            # A crash between moving an upload into the store and its commit leaves the file unrecorded.
            slow_key = (slow[0].id, slow[0].modalities[0])
            orphan = storage.store.put_bytes(bodies[slow_key])
            coordinator.restart()
            with coordinator.http() as http:
                repeats = {
                    key: _put(http, tasks[key[0]]["upload_urls"][key[1]], _client(clients, key[0]), bodies[key])
                    for key in fast_keys
                }
                for thread in threads:
                    thread.join(TIMEOUT_S)
                round_1 = wait_for_round(http, fid, 1, ("completed", "failed"), timeout=TIMEOUT_S)
                round_2 = run_round(http, fid, clients, 2)

                # Assert
                assert not any(thread.is_alive() for thread in threads)
                assert all(log.responses for log in logs.values()), {k: v.errors for k, v in logs.items()}
                accepted_before_kill = {k: log.responses[0][1] for k, log in logs.items() if log.responses[0][2]}
                assert set(accepted_before_kill) == set(fast_keys), {k: v.responses for k, v in logs.items()}
                assert before_restart == accepted_before_kill  # recorded the moment they were accepted
                assert len(partial_bodies) == len(slow), "the kill did not catch the slow uploads mid-body"
                for key, log in logs.items():
                    assert [status for status, _, _ in log.responses] == [201], (key, log)
                    assert log.responses[0][1] == _sha(bodies[key]), key
                for key in (k for k in logs if k[0] in pauses and k[1] == _client(clients, k[0]).modalities[0]):
                    assert logs[key].errors, f"{key}: the interrupted upload never saw the connection break"
                for key, response in repeats.items():
                    assert response.status_code == 200, (key, response.text)  # identical bytes: never 409
                    assert response.json()["sha256"] == _sha(bodies[key])
                recorded = storage.uploads(fid, 1)
                assert recorded == {key: _sha(body) for key, body in bodies.items()}
                assert orphan in recorded.values() and orphan in storage.recorded_artifacts()
                for sha in recorded.values():
                    assert _sha(storage.store.read(sha)) == sha
                assert round_1["state"] == "completed" and round_2["state"] == "completed", (round_1, round_2)
                assert round_1["uploaded"] == {c.id: sorted(c.modalities) for c in clients}
                _assert_federation_finished(http, fid, storage)
                assert all(j["attempts"] == 1 for j in _jobs(http, fid)), "no job was running at the kill"
                removed = storage.store.collect_garbage(storage.recorded_artifacts(), min_age_s=0)
                assert removed == [] and storage.temp_files() == []  # the partial bodies were the only litter
                storage.assert_consistent()
        finally:  # no client thread outlives the test, whatever happened
            abandon.set()
            for _, resume in pauses.values():
                resume.set()


def _client(clients: list[EnrolledClient], client_id: str) -> EnrolledClient:
    return next(c for c in clients if c.id == client_id)


def _put(http: httpx.Client, url: str, client: EnrolledClient, body: bytes) -> httpx.Response:
    headers = {**client.headers, "Content-SHA256": _sha(body), "Content-Type": "application/octet-stream"}
    return http.put(url, content=body, headers=headers)


# -- (b), (c) killed while a job runs --------------------------------------------------------------

# Files a job writes before its commit: an aggregate per modality, or the trained checkpoint.
FILES_WRITTEN = {"aggregate": 2, "train": 1}
STATE_OF_JOB = {"aggregate": "aggregating", "train": "training"}


@pytest.mark.parametrize(
    ("kind", "db"),
    [("aggregate", "sqlite"), ("aggregate", "postgresql"), ("train", "sqlite")],
)
def test_kill_during_a_job_reruns_it_once_after_its_lease(tmp_path: Path, kind: str, db: str) -> None:
    with (
        database(db, tmp_path) as url,
        coordinator_process(tmp_path / "data", database_url=url, **FAST, job_hold_s=JOB_HOLD_S) as coordinator,
    ):
        # Prepare: round 1 collects every upload; its jobs then run, each held before its commit
        storage = _storage(coordinator)
        with coordinator.http() as http:
            federation = create_federation(http, rounds=2)
            fid = federation["id"]
            clients = enroll_mix(http, federation)
            start(http, fid)
            sent = {}
            for position, client in enumerate(clients):
                task = next_task(http, fid, client, wait=TIMEOUT_S)
                assert task["kind"] == "train" and task["round"] == 1, task
                upload_all(http, task, client, seed=100 + position)
                for modality in client.modalities:
                    body = payload(len(task["subset"]), task["embed_dim"], modality, seed=100 + position)
                    sent[(client.id, modality)] = _sha(body)

            # Execute: the job computed its result and wrote its files, but has not committed: kill -9
            _wait(
                lambda: any(
                    j["round"] == 1 and j["kind"] == kind and j["state"] == "running" for j in _jobs(http, fid)
                ),
                f"the {kind} job to run",
                coordinator,
            )

            def files_written() -> set[str] | None:
                orphans = storage.orphans()
                return orphans if len(orphans) >= FILES_WRITTEN[kind] else None

            written = _wait(files_written, f"the {kind} job's files", coordinator)
        coordinator.kill()
        killed_job = storage.job(fid, 1, kind)
        state_at_kill = storage.round_state(fid, 1)
        coordinator.restart(job_hold_s=0)
        with coordinator.http() as http:
            round_1 = wait_for_round(http, fid, 1, ("completed", "failed"), timeout=TIMEOUT_S)
            round_2 = run_round(http, fid, clients, 2)

            # Assert
            assert (killed_job.state, killed_job.attempts) == ("running", 1), "the kill came after the commit"
            assert killed_job.lease_owner is not None
            assert state_at_kill == STATE_OF_JOB[kind]
            assert round_1["state"] == "completed" and round_2["state"] == "completed", (round_1, round_2)
            jobs = {(j["round"], j["kind"]): j for j in _jobs(http, fid)}
            rerun = jobs[(1, kind)]
            assert (rerun["state"], rerun["attempts"]) == ("done", 2), rerun
            assert rerun["lease_owner"] != killed_job.lease_owner, "the restarted coordinator did not rerun it"
            assert all(j["attempts"] == 1 for key, j in jobs.items() if key != (1, kind)), jobs
            assert storage.uploads(fid, 1) == sent
            assert round_1["uploaded"] == {c.id: sorted(c.modalities) for c in clients}
            _assert_federation_finished(http, fid, storage)
            # Jobs are deterministic: the rerun wrote the same files, which its commit recorded.
            assert written <= storage.recorded_artifacts(), "the rerun produced different artifacts"
            assert storage.orphans() == set()
