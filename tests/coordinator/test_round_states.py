"""The round state machine through the API, on SQLite and PostgreSQL (DESIGN.md section 4).

The job worker is driven by hand here (``Worker.run_once``: sweep deadlines, then run one job), so
each test decides exactly when a deadline is looked at and when a job runs. The API is the real
application in-process; the rounds use tiny configurations and deadlines of about a second.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from coordinator_service.app import create_app
from coordinator_service.db.engine import transaction
from coordinator_service.db.models import Job, Round
from coordinator_service.jobs.worker import Worker
from coordinator_service.settings import Settings
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
    put_payload,
    round_detail,
    start,
    upload_all,
)

DEADLINE_S = 1.0


class Coordinator:
    """The API in-process, with no worker of its own, and a worker run by hand."""

    def __init__(self, http: TestClient, settings: Settings) -> None:
        self.http = http
        services = http.app.state.services  # type: ignore[attr-defined]
        self.db = services.db
        self.worker = Worker(services.db, services.store, settings)

    def run_jobs(self) -> int:
        """Sweep deadlines and run jobs until none is left; returns how many ran."""
        ran = 0
        while self.worker.run_once():
            ran += 1
        return ran

    def jobs(self, federation_id: str) -> list[tuple[int, str, int, str]]:
        """(round number, kind, round attempt, state) of every job of the federation, oldest first."""
        with transaction(self.db) as session:
            rows = session.execute(
                select(Round.number, Job.kind, Job.round_attempt, Job.state)
                .join(Round, Round.id == Job.round_id)
                .where(Job.federation_id == federation_id)
                .order_by(Job.id)
            ).all()
        return [(number, kind, attempt, state) for number, kind, attempt, state in rows]


@pytest.fixture
def coordinator(settings: Settings) -> Iterator[Coordinator]:
    manual = settings.model_copy(update={"in_process_worker": False})
    with TestClient(create_app(manual)) as http:
        yield Coordinator(http, manual)


def control(http: TestClient, federation_id: str, action: str) -> Any:
    return http.post(f"{API}/federations/{federation_id}/{action}", headers=ADMIN)


def federation_state(http: TestClient, federation_id: str) -> dict[str, Any]:
    response = http.get(f"{API}/federations/{federation_id}", headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def open_first_round(coordinator: Coordinator, federation_id: str) -> dict[str, Any]:
    """Start the federation and run its publish job: round 1 is open."""
    start(coordinator.http, federation_id)
    assert coordinator.worker.run_once()
    detail = round_detail(coordinator.http, federation_id, 1)
    assert detail["state"] == "open", detail
    return detail


def sleep_past_deadline(detail: dict[str, Any]) -> None:
    deadline = datetime.fromisoformat(detail["deadline"])
    time.sleep(max((deadline - datetime.now(UTC)).total_seconds(), 0.0) + 0.05)


def image_clients(http: TestClient, federation: dict[str, Any], count: int) -> dict[str, EnrolledClient]:
    return {c.id: c for c in (enroll(http, federation, f"cam-{i}", ["image"], "image-cnn-s") for i in range(count))}


def together(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released at the same instant; their results (or exceptions) in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(position: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[position] = call()
        except Exception as exc:  # surfaced by the caller's assertions
            results[position] = exc

    threads = [threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_round_closes_once_every_selected_client_uploaded_every_modality(coordinator: Coordinator) -> None:
    # Prepare: an image, a text and an image+text client, all selected
    http = coordinator.http
    federation = create_federation(http, rounds=1)
    img, txt, both = enroll_mix(http, federation)
    open_first_round(coordinator, federation["id"])
    tasks = {c.id: next_task(http, federation["id"], c, wait=0) for c in (img, txt, both)}
    upload_all(http, tasks[img.id], img, seed=1)
    upload_all(http, tasks[txt.id], txt, seed=2)
    image_only = {**tasks[both.id], "upload_urls": {"image": tasks[both.id]["upload_urls"]["image"]}}
    upload_all(http, image_only, both, seed=3)

    # Execute: the image+text client's text upload is the last one the round waits for
    waiting = round_detail(http, federation["id"], 1)
    text_only = {**tasks[both.id], "upload_urls": {"text": tasks[both.id]["upload_urls"]["text"]}}
    upload_all(http, text_only, both, seed=3)
    closed = round_detail(http, federation["id"], 1)

    # Assert: one missing modality keeps the round open; the last upload closes it in its own transaction
    assert waiting["state"] == "open"
    assert closed["state"] == "aggregating"
    assert closed["transitions"][-1]["reason"] == "all selected clients uploaded"
    assert [t["state"] for t in closed["transitions"]] == ROUND_STATES[:3]
    assert set(closed["uploaded"]) == {img.id, txt.id, both.id}
    assert coordinator.jobs(federation["id"]) == [(1, "publish", 0, "done"), (1, "aggregate", 0, "queued")]


def test_deadline_with_quorum_closes_with_only_the_uploaders_and_refuses_late_uploads(
    coordinator: Coordinator,
) -> None:
    # Prepare: three selected clients, a quorum of two; the image+text client never uploads in time
    http = coordinator.http
    federation = create_federation(http, rounds=1, min_clients=2, round_deadline_s=DEADLINE_S)
    img, txt, both = enroll_mix(http, federation)
    opened = open_first_round(coordinator, federation["id"])
    late_task = next_task(http, federation["id"], both, wait=0)
    for seed, member in enumerate((img, txt)):
        upload_all(http, next_task(http, federation["id"], member, wait=0), member, seed=seed)
    sleep_past_deadline(opened)

    # Execute: the sweep closes the round (and the same worker aggregates); then the straggler uploads
    coordinator.worker.run_once()
    closed = round_detail(http, federation["id"], 1)
    body = payload(len(late_task["subset"]), late_task["embed_dim"], "image")
    late = put_payload(http, late_task["upload_urls"]["image"], both, body)

    # Assert
    assert closed["state"] == "training" and closed["attempt"] == 0
    assert [t["state"] for t in closed["transitions"]] == ROUND_STATES[:4]
    assert closed["transitions"][2]["reason"] == "deadline with quorum: 2 of 2 needed"
    assert late.status_code == 410, late.text
    assert late.json() == {
        "error": {
            "code": "gone",
            "message": "round 1 is training; it takes no uploads",
            "details": {"state": "training"},
        }
    }
    assert set(closed["uploaded"]) == {img.id, txt.id}
    assert closed["weights"]["image"]["clients"] == [img.id]
    assert closed["weights"]["text"]["clients"] == [txt.id]
    assert round_detail(http, federation["id"], 1)["uploaded"] == closed["uploaded"]


def test_below_quorum_the_round_reopens_with_a_fresh_selection_then_fails(coordinator: Coordinator) -> None:
    # Prepare: two seats, a quorum of two, one re-opening allowed; one selected client uploads
    http = coordinator.http
    federation = create_federation(
        http, rounds=1, clients_per_round=2, min_clients=2, max_reopen=1, round_deadline_s=DEADLINE_S
    )
    clients = image_clients(http, federation, 3)
    first = open_first_round(coordinator, federation["id"])
    uploader = clients[first["selected"][0]]
    upload_all(http, next_task(http, federation["id"], uploader, wait=0), uploader)
    sleep_past_deadline(first)

    # Execute: the first deadline re-opens the round, the second one fails it
    coordinator.worker.run_once()
    reopened = round_detail(http, federation["id"], 1)
    newcomer = next(clients[c] for c in reopened["selected"] if c != uploader.id)
    newcomer_task = next_task(http, federation["id"], newcomer, wait=0)
    sleep_past_deadline(reopened)
    coordinator.worker.run_once()
    failed = round_detail(http, federation["id"], 1)

    # Assert
    assert reopened["state"] == "open" and reopened["attempt"] == 1
    assert reopened["selected"][0] == uploader.id and len(reopened["selected"]) == 2
    assert reopened["transitions"][-1]["state"] == "open"
    assert reopened["transitions"][-1]["reason"] == "re-opened: quorum missed (1 of 2)"
    assert datetime.fromisoformat(reopened["deadline"]) > datetime.fromisoformat(first["deadline"])
    assert newcomer_task["kind"] == "train" and newcomer_task["attempt"] == 1
    assert failed["state"] == "failed"
    assert failed["failure_reason"] == "quorum missed at the deadline 2 times (1 of 2)"
    assert [t["state"] for t in failed["transitions"]] == ["pending", "open", "open", "failed"]
    summary = federation_state(http, federation["id"])
    assert summary["state"] == "failed"
    assert summary["failure_reason"] == "round 1: quorum missed at the deadline 2 times (1 of 2)"
    assert next_task(http, federation["id"], uploader, wait=0)["kind"] == "done"
    assert coordinator.jobs(federation["id"]) == [(1, "publish", 0, "done")]
    assert control(http, federation["id"], "start").status_code == 409


def test_reopened_round_closes_once_with_one_aggregate_job(coordinator: Coordinator) -> None:
    # Prepare: the round misses its quorum once, then the re-opened attempt's newcomer uploads
    http = coordinator.http
    federation = create_federation(http, rounds=1, clients_per_round=2, min_clients=2, round_deadline_s=DEADLINE_S)
    clients = image_clients(http, federation, 3)
    first = open_first_round(coordinator, federation["id"])
    uploader = clients[first["selected"][0]]
    upload_all(http, next_task(http, federation["id"], uploader, wait=0), uploader, seed=1)
    sleep_past_deadline(first)
    coordinator.worker.run_once()
    reopened = round_detail(http, federation["id"], 1)
    newcomer = next(clients[c] for c in reopened["selected"] if c != uploader.id)

    # Execute: the last upload closes attempt 1; a sweep past its deadline then finds nothing to do
    upload_all(http, next_task(http, federation["id"], newcomer, wait=0), newcomer, seed=2)
    sleep_past_deadline(reopened)
    coordinator.worker.run_once()
    coordinator.worker.sweep_deadlines()

    # Assert
    done = round_detail(http, federation["id"], 1)
    assert done["state"] == "training" and done["attempt"] == 1
    assert [t["state"] for t in done["transitions"]] == ["pending", "open", "open", "aggregating", "training"]
    assert done["transitions"][3]["reason"] == "all selected clients uploaded"
    assert sorted(done["weights"]["image"]["clients"]) == sorted([uploader.id, newcomer.id])
    assert coordinator.jobs(federation["id"]) == [
        (1, "publish", 0, "done"),
        (1, "aggregate", 1, "done"),
        (1, "train", 1, "queued"),
    ]


def test_a_late_client_takes_a_free_seat_but_not_a_full_round(coordinator: Coordinator) -> None:
    # Prepare: two seats, one client enrolled when the round opens
    http = coordinator.http
    federation = create_federation(http, rounds=1, clients_per_round=2)
    early = enroll(http, federation, "early", ["image"], "image-cnn-s")
    opened = open_first_round(coordinator, federation["id"])

    # Execute: two more clients enroll after the draw and ask for work
    second = enroll(http, federation, "second", ["text"], "text-gru-s")
    second_task = next_task(http, federation["id"], second, wait=0)
    third = enroll(http, federation, "third", ["image"], "image-cnn-s")
    third_task = next_task(http, federation["id"], third, wait=0)
    seated = round_detail(http, federation["id"], 1)
    upload_all(http, next_task(http, federation["id"], early, wait=0), early, seed=1)
    upload_all(http, second_task, second, seed=2)

    # Assert: the free seat went to the first latecomer; the full round closed without the third
    assert opened["selected"] == [early.id]
    assert second_task["kind"] == "train" and second_task["round"] == 1
    assert third_task["kind"] == "wait"
    assert seated["selected"] == [early.id, second.id]
    closed = round_detail(http, federation["id"], 1)
    assert closed["state"] == "aggregating"
    assert next_task(http, federation["id"], third, wait=0)["kind"] == "wait"


def test_pause_holds_tasks_and_the_deadline_resume_hands_them_out_stop_ends(coordinator: Coordinator) -> None:
    # Prepare: an open round with a one-second deadline and nobody uploading yet
    http = coordinator.http
    federation = create_federation(http, rounds=1, round_deadline_s=DEADLINE_S)
    member = enroll(http, federation, "cam", ["image"], "image-cnn-s")
    opened = open_first_round(coordinator, federation["id"])

    # Execute: pause past the deadline, resume, then stop past the new deadline
    paused = control(http, federation["id"], "pause")
    paused_task = next_task(http, federation["id"], member, wait=0)
    sleep_past_deadline(opened)
    coordinator.worker.run_once()
    while_paused = round_detail(http, federation["id"], 1)
    resumed_at = datetime.now(UTC)
    resumed = control(http, federation["id"], "start")
    resumed_task = next_task(http, federation["id"], member, wait=0)
    after_resume = round_detail(http, federation["id"], 1)
    stopped = control(http, federation["id"], "stop")
    stopped_task = next_task(http, federation["id"], member, wait=0)
    sleep_past_deadline(after_resume)
    coordinator.worker.run_once()

    # Assert: a paused federation hands out no task and its round does not miss its quorum meanwhile
    assert paused.status_code == 200 and paused.json()["state"] == "paused"
    assert paused_task["kind"] == "wait"
    assert while_paused["state"] == "open" and while_paused["attempt"] == 0
    assert resumed.status_code == 200 and resumed.json()["state"] == "running"
    assert resumed_task["kind"] == "train" and resumed_task["attempt"] == 0
    assert datetime.fromisoformat(resumed_task["deadline"]) >= resumed_at + timedelta(seconds=DEADLINE_S)
    assert stopped.status_code == 200 and stopped.json()["state"] == "stopped"
    assert stopped_task["kind"] == "done"
    final = round_detail(http, federation["id"], 1)
    assert final["state"] == "open" and final["attempt"] == 0  # a stopped federation's round is left alone
    summary = federation_state(http, federation["id"])
    assert summary["state"] == "stopped" and summary["failure_reason"] is None


def test_a_federation_paused_mid_round_finishes_the_round_and_starts_the_next_on_resume(
    coordinator: Coordinator,
) -> None:
    # Prepare: round 1 closed, its jobs not run yet
    http = coordinator.http
    federation = create_federation(http, rounds=2)
    members = enroll_mix(http, federation)
    open_first_round(coordinator, federation["id"])
    for position, member in enumerate(members):
        upload_all(http, next_task(http, federation["id"], member, wait=0), member, seed=position)

    # Execute: pause, let the jobs finish round 1, resume
    control(http, federation["id"], "pause")
    coordinator.run_jobs()
    while_paused = federation_state(http, federation["id"])
    paused_task = next_task(http, federation["id"], members[0], wait=0)
    control(http, federation["id"], "start")
    coordinator.run_jobs()
    resumed_task = next_task(http, federation["id"], members[0], wait=0)

    # Assert: jobs already queued run while paused, but the next round waits for the resume
    assert round_detail(http, federation["id"], 1)["state"] == "completed"
    assert while_paused["state"] == "paused" and while_paused["current_round"] == 1
    assert paused_task["kind"] == "wait"
    assert resumed_task["kind"] == "train" and resumed_task["round"] == 2
    assert [j[:2] for j in coordinator.jobs(federation["id"])] == [
        *[(1, kind) for kind in ("publish", "aggregate", "train", "evaluate")],
        (2, "publish"),
    ]


def test_stop_leaves_queued_jobs_unrun(coordinator: Coordinator) -> None:
    # Prepare: started, so round 1's publish job is queued, but no worker has run yet
    http = coordinator.http
    federation = create_federation(http, rounds=1)
    member = enroll(http, federation, "cam", ["image"], "image-cnn-s")
    start(http, federation["id"])

    # Execute
    stopped = control(http, federation["id"], "stop")
    coordinator.run_jobs()

    # Assert: the job was closed without running, the round never opened, clients are told to stop
    assert stopped.status_code == 200
    assert coordinator.jobs(federation["id"]) == [(1, "publish", 0, "failed")]
    jobs = http.get(f"{API}/jobs", params={"federation_id": federation["id"]}, headers=ADMIN).json()
    assert jobs[0]["error"] == "the federation is stopped"
    detail = round_detail(http, federation["id"], 1)
    assert detail["state"] == "pending" and detail["transitions"][-1]["state"] == "pending"
    task = next_task(http, federation["id"], member, wait=0)
    assert task == {"kind": "done", "reason": "the federation is stopped"}


def test_illegal_control_transitions_are_409_with_the_error_body(coordinator: Coordinator) -> None:
    # Prepare
    http = coordinator.http
    federation = create_federation(http, rounds=1)
    fid = federation["id"]

    # Execute: every action from every state a federation can be put in here
    steps = [
        ("pause", "created"),
        ("resume", "created"),
        ("start", "created"),
        ("start", "running"),
        ("resume", "running"),
        ("pause", "running"),
        ("pause", "paused"),
        ("resume", "paused"),
        ("stop", "paused"),
        ("start", "stopped"),
        ("pause", "stopped"),
        ("resume", "stopped"),
        ("stop", "stopped"),
    ]
    outcomes = [(action, before, control(http, fid, action)) for action, before in steps]

    # Assert
    allowed = {
        "start": ["created", "paused"],
        "pause": ["running"],
        "stop": ["created", "paused", "running"],
        "resume": ["failed"],
    }
    for action, before, response in outcomes:
        if before in allowed[action]:
            assert response.status_code == 200, (action, before, response.text)
            continue
        assert response.status_code == 409, (action, before, response.text)
        assert response.json() == {
            "error": {
                "code": "conflict",
                "message": f"cannot {action} a federation that is {before}",
                "details": {"state": before, "allowed_from": allowed[action]},
            }
        }
    assert federation_state(http, fid)["state"] == "stopped"


def test_concurrent_last_uploads_close_the_round_exactly_once(coordinator: Coordinator) -> None:
    # Prepare: four uploads are all the round waits for; their bodies are ready
    http = coordinator.http
    federation = create_federation(http, rounds=1)
    members = enroll_mix(http, federation)
    open_first_round(coordinator, federation["id"])
    sends = []
    for position, member in enumerate(members):
        task = next_task(http, federation["id"], member, wait=0)
        for modality, url in task["upload_urls"].items():
            body = payload(len(task["subset"]), task["embed_dim"], modality, seed=position)
            sends.append(lambda url=url, member=member, body=body: put_payload(http, url, member, body))

    # Execute
    responses = together(*sends)

    # Assert
    assert [getattr(r, "status_code", r) for r in responses] == [201] * 4
    detail = round_detail(http, federation["id"], 1)
    assert [t["state"] for t in detail["transitions"]] == ["pending", "open", "aggregating"]
    assert coordinator.jobs(federation["id"]) == [(1, "publish", 0, "done"), (1, "aggregate", 0, "queued")]


def test_deadline_sweeps_racing_the_last_upload_close_the_round_once(coordinator: Coordinator) -> None:
    # Prepare: two seats, a quorum of one; one upload in, the deadline passed, the last body ready
    http = coordinator.http
    federation = create_federation(http, rounds=1, clients_per_round=2, min_clients=1, round_deadline_s=DEADLINE_S)
    clients = image_clients(http, federation, 2)
    first, last = (clients[c] for c in open_first_round(coordinator, federation["id"])["selected"])
    upload_all(http, next_task(http, federation["id"], first, wait=0), first, seed=1)
    last_task = next_task(http, federation["id"], last, wait=0)
    body = payload(len(last_task["subset"]), last_task["embed_dim"], "image", seed=2)
    sleep_past_deadline(round_detail(http, federation["id"], 1))
    second_worker = Worker(coordinator.db, coordinator.worker.runner.store, coordinator.worker.settings)

    # Execute: the last upload and two workers' deadline sweeps at the same instant
    upload, *sweeps = together(
        lambda: put_payload(http, last_task["upload_urls"]["image"], last, body),
        coordinator.worker.sweep_deadlines,
        second_worker.sweep_deadlines,
    )

    # Assert: exactly one close, by whichever came first, and the upload's answer agrees with it
    assert sweeps == [None, None]
    detail = round_detail(http, federation["id"], 1)
    assert [t["state"] for t in detail["transitions"]] == ["pending", "open", "aggregating"]
    reason = detail["transitions"][-1]["reason"]
    if upload.status_code == 201:
        assert reason == "all selected clients uploaded"
        assert set(detail["uploaded"]) == {first.id, last.id}
    else:
        assert upload.status_code == 410, upload.text
        assert reason == "deadline with quorum: 1 of 1 needed"
        assert set(detail["uploaded"]) == {first.id}
    assert coordinator.jobs(federation["id"]) == [(1, "publish", 0, "done"), (1, "aggregate", 0, "queued")]
