"""Faults are not failures (DESIGN.md section 4), on real SQLite and PostgreSQL: a full disk holds a
round without spending its jobs' attempts and answers uploads 507; an admin resumes a failed
federation from its last committed step; what admins see of an error is one line without server paths.

The disk is made full for real: while :attr:`FullDisk.full` is set, the store's staged writes go to
``/dev/full``, whose every write the kernel refuses with ENOSPC. Workers are real, one step at a
time, on a clock the test moves.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from sqlalchemy.exc import OperationalError

from coordinator_service.artifacts import LocalArtifactStore
from coordinator_service.faults import DATABASE_UNREACHABLE, environment_fault, one_line
from coordinator_service.settings import Settings
from tests.coordinator.helpers import (
    ADMIN,
    API,
    ROUND_STATES,
    assert_error,
    next_task,
    payload,
    put_payload,
    round_detail,
)
from tests.coordinator.workers import (
    Coordinator,
    ManualClock,
    manual_coordinator,
    started_federation,
    upload_everything,
)

# An absolute path: a slash that starts neither a URL's host nor a relative path's next part.
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/\w")


class FullDisk(LocalArtifactStore):
    """A local store whose disk can be made full: while ``full``, a staged write's temp file is
    created (a full disk may still have inodes) but its bytes go to /dev/full."""

    full = False

    def _open_staging_file(self) -> tuple[Path, BinaryIO]:
        path, handle = super()._open_staging_file()
        if not self.full:
            return path, handle
        handle.close()
        return path, Path("/dev/full").open("wb")


@pytest.fixture
def disk(settings: Settings) -> FullDisk:
    return FullDisk(settings.resolved_artifact_dir)


@pytest.fixture
def coordinator(settings: Settings, disk: FullDisk) -> Iterator[Coordinator]:
    with manual_coordinator(settings, store=disk) as coordinator:
        yield coordinator


def jobs_listed(coordinator: Coordinator, federation_id: str) -> dict[str, dict[str, Any]]:
    """kind -> the job as ``GET /jobs`` shows it (one round)."""
    response = coordinator.http.get(f"{API}/jobs", params={"federation_id": federation_id}, headers=ADMIN)
    assert response.status_code == 200, response.text
    return {job["kind"]: job for job in response.json()}


def control(coordinator: Coordinator, federation_id: str, action: str) -> Any:
    return coordinator.http.post(f"{API}/federations/{federation_id}/{action}", headers=ADMIN)


# -- a full disk ---------------------------------------------------------------------------------


def test_an_upload_to_a_full_disk_is_refused_507_and_leaves_no_staged_file(
    coordinator: Coordinator, disk: FullDisk
) -> None:
    # Prepare: round 1 is open; the disk fills up
    fid, clients = started_federation(coordinator, rounds=1)
    assert coordinator.worker().run_once()  # publish
    task = next_task(coordinator.http, fid, clients[0], wait=0)
    body = payload(len(task["subset"]), task["embed_dim"], "image")
    url = task["upload_urls"]["image"]
    disk.full = True

    # Execute: the upload while the disk is full, then again once it has room
    refused = put_payload(coordinator.http, url, clients[0], body)
    staged_after_refusal = disk.staging_files()
    disk.full = False
    stored = put_payload(coordinator.http, url, clients[0], body)

    # Assert
    error = assert_error(refused, 507, "insufficient_storage")
    assert error["details"] == {"reason": "disk full"}
    assert staged_after_refusal == []
    assert stored.status_code == 201, stored.text
    assert disk.staging_files() == []


@pytest.mark.parametrize("size", [100, 5 << 20])  # buffered until the file is finished; written at once
def test_a_write_to_a_full_disk_raises_enospc_and_leaves_no_staged_file(tmp_path: Path, size: int) -> None:
    # Prepare
    disk = FullDisk(tmp_path / "artifacts")
    disk.full = True

    # Execute
    with pytest.raises(OSError) as refused:
        disk.put_bytes(b"x" * size)

    # Assert
    assert refused.value.errno == errno.ENOSPC
    assert disk.staging_files() == [] and list(disk.list_stored()) == []


def test_a_full_disk_holds_the_round_without_spending_attempts_until_it_has_room(
    coordinator: Coordinator, disk: FullDisk
) -> None:
    # Prepare: one attempt per job, so a single counted failure would fail the round; the round is
    # training when the disk fills up, so the trained checkpoint cannot be written
    coordinator.settings = coordinator.settings.model_copy(
        update={"max_job_attempts": 1, "retry_base_s": 30.0, "retry_max_s": 1000.0}
    )
    fid, clients = started_federation(coordinator, rounds=1)
    clock = ManualClock()
    worker = coordinator.worker(clock)
    assert worker.run_once()  # publish
    upload_everything(coordinator, fid, clients)
    assert worker.run_once()  # aggregate
    disk.full = True

    # Execute: three tries on the full disk, each once its backoff ended (none before); then room again
    delays, early_runs, held = [], [], []
    for _ in range(3):
        tried_at = clock()
        assert worker.run_once()
        held.append((round_detail(coordinator.http, fid, 1), jobs_listed(coordinator, fid)["train"]))
        not_before = coordinator.jobs(fid)[-1].not_before
        assert not_before is not None
        delays.append((not_before - tried_at).total_seconds())
        clock.advance_to(not_before)
        clock.advance(-1)
        early_runs.append(worker.run_once())
        clock.advance(1)
    staged_while_full = disk.staging_files()
    summary_while_full = coordinator.http.get(f"{API}/federations/{fid}", headers=ADMIN).json()
    disk.full = False
    trained = worker.run_once()
    evaluated = worker.run_once()

    # Assert: held with the reason, no attempt spent, backing off; then the round went on, once
    assert delays == [30.0, 60.0, 120.0]
    assert early_runs == [False, False, False]
    for number, (detail, job) in enumerate(held, start=1):
        assert detail["state"] == "training" and detail["failure_reason"] is None, detail
        assert detail["held_reason"].startswith("disk full (OSError: [Errno 28] No space left on device"), detail
        assert (job["state"], job["attempts"], job["holds"]) == ("queued", 0, number), job
        assert job["held_reason"] == detail["held_reason"]
        assert job["error"] == "OSError: [Errno 28] No space left on device"
        assert job["not_before"] is not None
    assert staged_while_full == []
    assert summary_while_full["state"] == "running"
    assert trained and evaluated
    done = round_detail(coordinator.http, fid, 1)
    assert done["state"] == "completed" and done["held_reason"] is None
    assert [t["state"] for t in done["transitions"]] == ROUND_STATES
    train = jobs_listed(coordinator, fid)["train"]
    assert (train["state"], train["attempts"], train["holds"], train["held_reason"]) == ("done", 1, 3, None)
    assert coordinator.http.get(f"{API}/federations/{fid}", headers=ADMIN).json()["state"] == "completed"


# -- resume --------------------------------------------------------------------------------------


def test_resume_brings_a_failed_federation_back_from_its_last_committed_step(coordinator: Coordinator) -> None:
    # Prepare: one attempt per job; the training job fails because the round's aggregate is gone
    coordinator.settings = coordinator.settings.model_copy(update={"max_job_attempts": 1})
    fid, clients = started_federation(coordinator, rounds=2)
    worker = coordinator.worker()
    assert worker.run_once()  # publish
    upload_everything(coordinator, fid, clients)
    refused_while_running = control(coordinator, fid, "resume")
    assert worker.run_once()  # aggregate
    before = coordinator.round_row(fid, 1)
    assert before.aggregates is not None
    aggregate = before.aggregates["image"]
    kept = coordinator.store.read(aggregate)
    coordinator.store.delete(aggregate)
    assert worker.run_once()  # train: fails
    failed = round_detail(coordinator.http, fid, 1)
    coordinator.store.put_bytes(kept)  # the admin fixed the store

    # Execute
    resumed = control(coordinator, fid, "resume")
    detail_after_resume = round_detail(coordinator.http, fid, 1)
    train_after_resume = jobs_listed(coordinator, fid)["train"]
    while worker.run_once():  # train, evaluate, then round 2's publish
        pass

    # Assert: 409 unless failed; then training ran again, and nothing committed before it did
    assert_error(refused_while_running, 409, "conflict")
    assert failed["state"] == "failed" and failed["failure_reason"].startswith("train job failed 1 times")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["state"] == "running" and resumed.json()["failure_reason"] is None
    assert detail_after_resume["state"] == "training" and detail_after_resume["failure_reason"] is None
    assert detail_after_resume["transitions"][-1]["reason"] == "resumed by an admin"
    assert (train_after_resume["state"], train_after_resume["attempts"]) == ("queued", 0)
    done = round_detail(coordinator.http, fid, 1)
    assert done["state"] == "completed"
    assert [t["state"] for t in done["transitions"]] == [*ROUND_STATES[:4], "failed", *ROUND_STATES[3:]]
    jobs = coordinator.jobs(fid)
    assert [(j.kind, j.state, j.attempts) for j in jobs] == [
        ("publish", "done", 1),
        ("aggregate", "done", 1),
        ("train", "done", 1),
        ("evaluate", "done", 1),
        ("publish", "done", 1),
    ]
    after = coordinator.round_row(fid, 1)
    assert (after.checkpoint_published, after.aggregates) == (before.checkpoint_published, before.aggregates)
    assert round_detail(coordinator.http, fid, 2)["state"] == "open"
    assert_error(control(coordinator, fid, "resume"), 409, "conflict")


def test_resume_reopens_a_round_that_failed_collecting(coordinator: Coordinator) -> None:
    # Prepare: no re-opening allowed; the deadline passes with no upload, so the round fails
    fid, clients = started_federation(coordinator, rounds=1, max_reopen=0)
    clock = ManualClock()
    worker = coordinator.worker(clock)
    assert worker.run_once()  # publish
    clock.advance(120)  # past the 60 s deadline set at publishing
    worker.run_once()  # the deadline sweep
    failed = round_detail(coordinator.http, fid, 1)

    # Execute
    resumed = control(coordinator, fid, "resume")
    upload_everything(coordinator, fid, clients)
    while worker.run_once():
        pass

    # Assert: a fresh attempt of the open round, which then completed
    assert failed["state"] == "failed" and failed["failure_reason"].startswith("quorum missed")
    assert resumed.status_code == 200, resumed.text
    done = round_detail(coordinator.http, fid, 1)
    assert (done["state"], done["attempt"]) == ("completed", 1)
    assert [t["state"] for t in done["transitions"]] == ["pending", "open", "failed", *ROUND_STATES[1:]]
    assert done["transitions"][3]["reason"] == "resumed by an admin: re-opened"


# -- what admins see of an error -----------------------------------------------------------------


def test_a_failed_jobs_error_is_one_line_without_server_paths(
    coordinator: Coordinator, settings: Settings, tmp_path: Path
) -> None:
    # Prepare: one attempt per job; a global representation's file is a directory now, so the
    # aggregation job raises an error that names its absolute path
    coordinator.settings = coordinator.settings.model_copy(update={"max_job_attempts": 1})
    fid, clients = started_federation(coordinator, rounds=1)
    worker = coordinator.worker()
    assert worker.run_once()  # publish
    upload_everything(coordinator, fid, clients)
    global_reps = coordinator.round_row(fid, 1).global_reps
    assert global_reps is not None
    sha = global_reps["text"]
    stored = settings.resolved_artifact_dir / sha[:2] / sha
    stored.unlink()
    stored.mkdir()

    # Execute
    assert worker.run_once()

    # Assert: one line, the type and message, the path relative to the data dir
    error = coordinator.jobs(fid)[-1].error
    reason = round_detail(coordinator.http, fid, 1)["failure_reason"]
    summary = coordinator.http.get(f"{API}/federations/{fid}", headers=ADMIN).json()
    assert error == f"IsADirectoryError: [Errno 21] Is a directory: 'artifacts/{sha[:2]}/{sha}'"
    assert reason == f"aggregate job failed 1 times: {error}"
    assert summary["failure_reason"] == f"round 1: {reason}"
    for shown in (error, reason, summary["failure_reason"], jobs_listed(coordinator, fid)["aggregate"]["error"]):
        assert "\n" not in shown and "Traceback" not in shown, shown
        assert str(tmp_path) not in shown and "/work/" not in shown, shown
        assert not ABSOLUTE_PATH.search(shown), shown


def test_one_line_names_paths_relative_to_the_data_dir_or_by_their_last_part() -> None:
    # Prepare
    error = FileNotFoundError(errno.ENOENT, "No such file or directory", "/srv/creamfl/data/artifacts/tmp/x.part")
    elsewhere = RuntimeError("failed in /usr/lib/python3/site-packages/torch/serialization.py:42\n  more")
    url = ValueError("see https://sqlalche.me/e/20/e3q8 and ./relative/path")

    # Execute
    shown = [one_line(e, roots=["/srv/creamfl/data"]) for e in (error, elsewhere, url)]

    # Assert
    assert shown == [
        "FileNotFoundError: [Errno 2] No such file or directory: 'artifacts/tmp/x.part'",
        "RuntimeError: failed in serialization.py:42 more",
        "ValueError: see https://sqlalche.me/e/20/e3q8 and ./relative/path",
    ]


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "disk full"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "disk quota exceeded"),
        (OSError(errno.EMFILE, "Too many open files"), "too many open files"),
        (OperationalError("SELECT 1", {}, Exception("connection refused")), DATABASE_UNREACHABLE.reason),
        (RuntimeError("wrapped"), None),
        (FileNotFoundError(errno.ENOENT, "No such file or directory"), None),
    ],
)
def test_environment_faults_are_told_from_errors_of_the_work(exc: Exception, reason: str | None) -> None:
    # Prepare: raised from a library's own error, as torch or the store would wrap it
    try:
        try:
            raise exc
        except Exception as inner:
            raise RuntimeError("while saving") from inner
    except RuntimeError as outer:
        wrapped = outer

    # Execute
    faults = [environment_fault(exc), environment_fault(wrapped)]

    # Assert
    assert [f.reason if f is not None else None for f in faults] == [reason, reason]
