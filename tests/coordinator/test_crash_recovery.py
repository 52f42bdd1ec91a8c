"""Crash safety with a real coordinator process killed with SIGKILL and restarted on the same data.

Three crash points: while uploads are arriving, while the aggregation job runs and while server
training runs (the job has written its artifacts and is held before its commit by the fault
injection setting ``CREAMFL_JOB_HOLD_S``). After the restart the federation must finish with no
accepted upload lost, no round transition run twice, and every artifact the database names on disk.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from coordinator_service.launcher import CoordinatorProcess
from tests.coordinator.databases import database
from tests.coordinator.helpers import (
    EnrolledClient,
    create_federation,
    enroll,
    enroll_mix,
    next_task,
    payload,
    run_round,
    start,
    upload_all,
    wait_for_round,
)
from tests.coordinator.servers import coordinator_process
from tests.coordinator.storage import assert_federation_finished, jobs_of, sha256_of, storage_of

# Short lease so a killed worker's job is claimed again soon; quick polling for quick tests.
FAST = {"lease_s": 2, "worker_poll_s": 0.1, "watch_interval_s": 0.1, "threads": 1}
JOB_HOLD_S = 2.5  # long enough to see a job's artifacts on disk and kill it before its commit
TIMEOUT_S = 90.0


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        yield url


def _wait(condition: Any, what: str, coordinator: CoordinatorProcess, timeout: float = TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{coordinator.log_tail()}")
        time.sleep(0.05)
    return value


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
    headers = {**client.headers, "Content-SHA256": sha256_of(body), "Content-Type": "application/octet-stream"}

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
        storage = storage_of(coordinator)
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
                    assert log.responses[0][1] == sha256_of(bodies[key]), key
                for key in (k for k in logs if k[0] in pauses and k[1] == _client(clients, k[0]).modalities[0]):
                    assert logs[key].errors, f"{key}: the interrupted upload never saw the connection break"
                for key, response in repeats.items():
                    assert response.status_code == 200, (key, response.text)  # identical bytes: never 409
                    assert response.json()["sha256"] == sha256_of(bodies[key])
                recorded = storage.uploads(fid, 1)
                assert recorded == {key: sha256_of(body) for key, body in bodies.items()}
                assert orphan in recorded.values() and orphan in storage.recorded_artifacts()
                for sha in recorded.values():
                    assert sha256_of(storage.store.read(sha)) == sha
                assert round_1["state"] == "completed" and round_2["state"] == "completed", (round_1, round_2)
                assert round_1["uploaded"] == {c.id: sorted(c.modalities) for c in clients}
                assert_federation_finished(http, fid, storage)
                assert all(j["attempts"] == 1 for j in jobs_of(http, fid)), "no job was running at the kill"
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
    headers = {**client.headers, "Content-SHA256": sha256_of(body), "Content-Type": "application/octet-stream"}
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
        storage = storage_of(coordinator)
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
                    sent[(client.id, modality)] = sha256_of(body)

            # Execute: the job computed its result and wrote its files, but has not committed: kill -9
            _wait(
                lambda: any(
                    j["round"] == 1 and j["kind"] == kind and j["state"] == "running" for j in jobs_of(http, fid)
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
            jobs = {(j["round"], j["kind"]): j for j in jobs_of(http, fid)}
            rerun = jobs[(1, kind)]
            # Re-run without spending an attempt: the lost worker is counted apart.
            assert (rerun["state"], rerun["attempts"], rerun["lease_losses"]) == ("done", 1, 1), rerun
            assert rerun["lease_owner"] != killed_job.lease_owner, "the restarted coordinator did not rerun it"
            assert all(j["attempts"] == 1 for key, j in jobs.items() if key != (1, kind)), jobs
            assert storage.uploads(fid, 1) == sent
            assert round_1["uploaded"] == {c.id: sorted(c.modalities) for c in clients}
            assert_federation_finished(http, fid, storage)
            # Jobs are deterministic: the rerun wrote the same files, which its commit recorded.
            assert written <= storage.recorded_artifacts(), "the rerun produced different artifacts"
            assert storage.orphans() == set()
