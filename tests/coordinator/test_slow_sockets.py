"""Idle and slow sockets cannot hold the coordinator (DESIGN.md section 4, "Transport"), against
``creamfl-coordinator serve`` over real sockets: sockets that never finish their headers are shed at
the header deadline while ``/healthz`` keeps answering, connections beyond the cap are answered 503,
and a flood of sockets leaves the jobs their file descriptors."""

from __future__ import annotations

import contextlib
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.pool import NullPool

from coordinator_service.db.models import Round
from coordinator_service.descriptors import RESERVED_FOR_JOBS
from coordinator_service.launcher import HOST, child_env, cli_command
from tests.coordinator.helpers import (
    ADMIN,
    API,
    create_federation,
    enroll,
    next_task,
    payload,
    put_payload,
    round_detail,
    start,
    wait_for_round,
)
from tests.coordinator.raw_http import closes, open_descriptors, read_answer
from tests.coordinator.servers import coordinator_process

HEADER_TIMEOUT_S = 2.0
FAST = {"worker_poll_s": 0.1, "watch_interval_s": 0.1, "threads": 1}


@contextlib.contextmanager
def idle_sockets(port: int, count: int) -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sockets.append(socket.create_connection((HOST, port)))
        yield sockets
    finally:
        for raw in sockets:
            raw.close()


def ended(raw: socket.socket) -> bool:
    """Whether the server has closed this connection (an end of stream or a reset), without waiting."""
    try:
        while raw.recv(65536, socket.MSG_DONTWAIT):
            pass
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    return True


def wait_until(condition: object, timeout_s: float) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout_s``."""
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s} s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_sockets_that_never_finish_their_headers_are_shed_while_healthz_answers(tmp_path: Path) -> None:
    # Prepare
    with (
        coordinator_process(tmp_path / "data", header_timeout_s=HEADER_TIMEOUT_S) as coordinator,
        idle_sockets(coordinator.port, 300) as sockets,
        coordinator.http(timeout=5) as http,
    ):
        opened = time.monotonic()
        for index, raw in enumerate(sockets):  # a third silent, a third half a request, a third trickling
            if index % 3:
                raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        wait_until(lambda: open_descriptors(coordinator.pid, sockets_only=True) > 300, 5.0)  # all accepted

        # Execute: trickle a header byte now and then, and ask for /healthz meanwhile
        health = []
        while time.monotonic() - opened < HEADER_TIMEOUT_S - 0.3:
            for raw in sockets[2::3]:
                raw.sendall(b"X")
            health.append(http.get("/healthz").status_code)
            time.sleep(0.2)
        still_held = sum(not ended(raw) for raw in sockets)
        wait_until(lambda: all(ended(raw) for raw in sockets), HEADER_TIMEOUT_S + 3.0)
        all_shed_after = time.monotonic() - opened
        after = http.get("/healthz").status_code

    # Assert: every socket held until close to the deadline, then all shed; /healthz answered throughout
    assert still_held == 300
    assert all_shed_after < HEADER_TIMEOUT_S + 1.5
    assert health and set(health) == {200} and after == 200


def test_beyond_the_connection_cap_the_server_answers_503_and_holds_no_more(tmp_path: Path) -> None:
    # Prepare
    with coordinator_process(tmp_path / "data", max_connections=100, header_timeout_s=30) as coordinator:
        baseline = open_descriptors(coordinator.pid, sockets_only=True)

        # Execute: 150 connections that send nothing, then a request on one of the held ones
        with idle_sockets(coordinator.port, 150) as sockets:
            wait_until(lambda: sum(ended(raw) for raw in sockets) >= 50, 5.0)
            time.sleep(0.3)  # nothing more is refused
            refused = [raw for raw in sockets if ended(raw)]
            held = [raw for raw in sockets if raw not in refused]
            held_sockets = open_descriptors(coordinator.pid, sockets_only=True) - baseline
            held[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            at_the_cap = held[0].recv(65536)
        with coordinator.http(timeout=5) as http:
            below_the_cap = http.get("/healthz").status_code

    # Assert: 100 connections held and 50 refused; at the cap, requests are answered 503 too
    assert (len(held), len(refused)) == (100, 50)
    assert held_sockets <= 100
    assert at_the_cap.startswith(b"HTTP/1.1 503 ")
    assert below_the_cap == 200


def test_a_flood_of_sockets_leaves_the_jobs_their_descriptors(tmp_path: Path) -> None:
    # Prepare: a server limited to 1024 open files (as a default shell would) with the largest cap
    # that fits; its round's jobs start (each held a moment before it commits), then 1100 sockets come
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1400:
        pytest.skip(f"needs 1400 open files for its own sockets; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1400), hard))
    cap = 1024 - RESERVED_FOR_JOBS
    coordinator = coordinator_process(
        tmp_path / "data", max_connections=cap, header_timeout_s=120, job_hold_s=0.5, **FAST
    )
    coordinator.program = ["prlimit", "--nofile=1024:1024", *cli_command()]
    with coordinator:
        with coordinator.http() as http:
            federation = create_federation(http, rounds=1, clients_per_round=1)
            client = enroll(http, federation, "img", ["image"], "image-cnn-s")
            start(http, federation["id"])
            wait_for_round(http, federation["id"], 1, ("open",))
            task = next_task(http, federation["id"], client)
            body = payload(len(task["subset"]), task["embed_dim"], "image")
            uploaded = put_payload(http, task["upload_urls"]["image"], client, body)
        baseline = open_descriptors(coordinator.pid, sockets_only=True)

        # Execute: the sockets stay open until the round's jobs are over (read from the database:
        # HTTP is at its cap)
        with idle_sockets(coordinator.port, 1100) as sockets:
            most = wait_for_round_end(coordinator.database_url, federation["id"], coordinator.pid)
            refused = sum(ended(raw) for raw in sockets)
        with coordinator.http() as http:
            detail = round_detail(http, federation["id"], 1)
            jobs = http.get(f"{API}/jobs", headers=ADMIN).json()

    # Assert: every job succeeded at its first attempt; the server held the cap and no more
    assert uploaded.status_code == 201, uploaded.text
    assert detail["state"] == "completed", detail
    assert [(job["state"], job["attempts"]) for job in jobs] == [("done", 1)] * len(jobs)
    assert "Too many open files" not in coordinator.log_tail(10_000)
    assert refused == 1100 - cap
    assert most - baseline <= cap + 16  # and a few accepted beyond it, being answered 503 and closed


def wait_for_round_end(database_url: str, federation_id: str, pid: int, timeout_s: float = 90.0) -> int:
    """Polls round 1's state in the database until it completes or fails; returns the most sockets
    the server held meanwhile."""
    engine = create_engine(database_url, poolclass=NullPool)
    most = 0
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            most = max(most, open_descriptors(pid, sockets_only=True))
            with engine.connect() as connection:
                state = connection.scalar(
                    select(Round.state).where(Round.federation_id == federation_id, Round.number == 1)
                )
            if state in ("completed", "failed"):
                return most
            time.sleep(0.1)
    finally:
        engine.dispose()
    raise AssertionError(f"round 1 did not end within {timeout_s} s")


def test_serve_refuses_a_cap_the_descriptor_limit_cannot_hold(tmp_path: Path) -> None:
    # Prepare
    limited = ["prlimit", "--nofile=1024:1024", *cli_command()]
    serve = ["serve", "--data-dir", str(tmp_path / "data"), "--port", "1"]

    # Execute
    refused = subprocess.run([*limited, *serve, "--max-connections", "1000"], capture_output=True, text=True)
    raised = subprocess.run(
        ["prlimit", "--nofile=256:4096", sys.executable, "-c", RAISED],
        capture_output=True,
        text=True,
        env=child_env(),
    )

    # Assert: refused with what to do; a soft limit below the hard one is raised to it
    assert refused.returncode == 2, refused.stderr
    assert f"needs at least {1000 + RESERVED_FOR_JOBS} open files" in refused.stderr
    assert "ulimit -n" in refused.stderr
    assert raised.stdout.split() == ["4096", "4096", "4096"], raised.stderr


RAISED = """
import resource
from coordinator_service.descriptors import reserve_descriptors
print(reserve_descriptors(1000), *resource.getrlimit(resource.RLIMIT_NOFILE))
"""


def test_the_deadline_restarts_after_each_answer_on_a_kept_connection(tmp_path: Path) -> None:
    # Prepare: a keep-alive connection whose requests come at intervals under the deadline
    with (
        coordinator_process(tmp_path / "data", header_timeout_s=HEADER_TIMEOUT_S, keep_alive_s=30) as coordinator,
        socket.create_connection((HOST, coordinator.port)) as raw,
    ):
        # Execute: four requests over two and a half deadlines, on the one connection
        answers = []
        for _ in range(4):
            raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answers.append(read_answer(raw, timeout_s=5))
            time.sleep(HEADER_TIMEOUT_S * 0.6)

    # Assert: each answered on the same connection
    assert [answer.status if answer else None for answer in answers] == [200] * 4


def test_headers_over_their_limit_are_refused_and_closed(tmp_path: Path) -> None:
    # Prepare
    with (
        coordinator_process(tmp_path / "data", max_header_bytes=16384) as coordinator,
        socket.create_connection((HOST, coordinator.port)) as raw,
    ):
        # Execute: a 100 kB header, a little at a time
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 100_000 + b"\r\n\r\n"
        with contextlib.suppress(OSError):  # the server may close while the rest is on its way
            for offset in range(0, len(head), 4096):
                raw.sendall(head[offset : offset + 4096])
        answer = read_answer(raw, timeout_s=5)
        closed = closes(raw)

    # Assert
    assert answer is not None and answer.status == 400 and closed
