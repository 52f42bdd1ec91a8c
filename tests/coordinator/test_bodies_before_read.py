"""Credentials are checked before a body is read, and bodies are bounded before they are read
(DESIGN.md section 4, "Auth"), against ``creamfl-coordinator serve`` over real sockets, on SQLite and
PostgreSQL.

The client sends its headers and holds the body back: a refusal must come without it (``body_sent``
0), and the connection must close, so the rest is never read. A body the client streams anyway is
cut at its route's limit. Anonymous 200 MB bodies leave the server's memory as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from coordinator_service.launcher import CoordinatorProcess
from tests.coordinator.databases import database
from tests.coordinator.helpers import (
    ADMIN,
    ADMIN_TOKEN,
    API,
    EnrolledClient,
    assert_error,
    create_federation,
    enroll,
)
from tests.coordinator.raw_http import MiB, memory_mib, send_body_after_headers
from tests.coordinator.servers import coordinator_process

HUGE = 200 * MiB
JSON_LIMIT = 1 * MiB
UPLOAD_LIMIT = 8 * MiB
LOGIN_LIMIT = 8192
JSON = {"Content-Type": "application/json"}
CUT_WITHIN = 32 * MiB  # what a streamed body may reach before the 413 (socket buffers on both ends)


@dataclass
class Served:
    coordinator: CoordinatorProcess
    http: httpx.Client
    federation: dict[str, Any]
    client: EnrolledClient

    @property
    def port(self) -> int:
        return self.coordinator.port

    def url(self, name: str) -> str:
        base = f"{API}/federations/{self.federation['id']}"
        return {
            "federations": f"{API}/federations",
            "enroll": f"{base}/clients",
            "report": f"{base}/rounds/1/reports",
            "upload": f"{base}/rounds/1/uploads/image",
            "login": "/dashboard/login",
        }[name]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    directory = tmp_path_factory.mktemp(f"bodies-{request.param}")
    with (
        database(request.param, directory) as url,
        coordinator_process(directory / "data", database_url=url, max_upload_bytes=UPLOAD_LIMIT) as coordinator,
        coordinator.http() as http,
    ):
        federation = create_federation(http)
        client = enroll(http, federation, "img", ["image"], "image-cnn-s")
        yield Served(coordinator, http, federation, client)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


UPLOAD_HEADERS = {"Content-Type": "application/octet-stream", "Content-SHA256": "0" * 64}
# name -> (route, method, headers or the name of a credential of the served federation)
REFUSED: dict[str, tuple[str, str, dict[str, str] | str]] = {
    "anonymous federation": ("federations", "POST", JSON),
    "wrong admin token": ("federations", "POST", {**JSON, **bearer("admin_" + "x" * 43)}),
    "a client token as admin": ("federations", "POST", "client token"),
    "a forged dashboard cookie": ("federations", "POST", {**JSON, "Cookie": "creamfl_dashboard=v1.1.forged.00"}),
    "anonymous enrollment": ("enroll", "POST", JSON),
    "wrong join token": ("enroll", "POST", {**JSON, **bearer("join_" + "x" * 43)}),
    "anonymous report": ("report", "POST", JSON),
    "wrong client token": ("report", "POST", {**JSON, **bearer("client_" + "x" * 43)}),
    "anonymous upload": ("upload", "PUT", UPLOAD_HEADERS),
}


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_missing_or_wrong_credentials_are_refused_before_the_body_is_read(
    served: Served, case: str, chunked: bool
) -> None:
    # Prepare
    route, method, headers = REFUSED[case]
    if headers == "client token":
        headers = {**JSON, **served.client.headers}
    assert isinstance(headers, dict)

    # Execute: 200 MB announced (or chunked), the body held back
    answer = send_body_after_headers(served.port, method, served.url(route), headers, body_size=HUGE, chunked=chunked)

    # Assert: 401 with the JSON error, before a byte of the body, and the connection closed
    assert (answer.status, answer.body_sent, answer.closed) == (401, 0, True), answer
    assert answer.seconds < 1.0, answer
    assert answer.headers["www-authenticate"] == "Bearer"
    assert b'"code":"unauthorized"' in answer.body


def test_three_anonymous_200_mb_bodies_leave_the_servers_memory_as_it_was(served: Served) -> None:
    # Prepare
    pid = served.coordinator.pid
    _, peak_before = memory_mib(pid)

    # Execute: each body is streamed whole unless the server answers first
    answers = [
        send_body_after_headers(served.port, "POST", served.url("federations"), JSON, body_size=HUGE, chunked=chunked)
        for chunked in (False, True, False)
    ]
    _, peak_after = memory_mib(pid)

    # Assert
    assert [(a.status, a.body_sent) for a in answers] == [(401, 0)] * 3, answers
    assert peak_after - peak_before < 64, f"peak RSS grew {peak_after - peak_before} MiB"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("route", ["federations", "enroll", "report"])
def test_an_authenticated_body_over_the_json_limit_is_cut_off_with_413(
    served: Served, route: str, chunked: bool
) -> None:
    # Prepare
    credentials = {
        "federations": ADMIN,
        "enroll": bearer(served.federation["join_token"]),
        "report": served.client.headers,
    }[route]

    # Execute
    answer = send_body_after_headers(
        served.port, "POST", served.url(route), {**JSON, **credentials}, body_size=HUGE, chunked=chunked
    )

    # Assert: a declared length over the limit is refused unread; a chunked body once past the limit
    assert (answer.status, answer.closed) == (413, True), answer
    assert answer.body_sent == 0 if not chunked else JSON_LIMIT < answer.body_sent < CUT_WITHIN, answer
    assert b'"code":"payload_too_large"' in answer.body and f'"limit":{JSON_LIMIT}'.encode() in answer.body


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_the_login_form_is_bounded_before_it_is_read(served: Served, chunked: bool) -> None:
    # Prepare
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    # Execute
    answer = send_body_after_headers(served.port, "POST", served.url("login"), form, body_size=HUGE, chunked=chunked)
    login = served.http.post("/dashboard/login", data={"token": ADMIN_TOKEN}, follow_redirects=False)

    # Assert: refused unread, or once past 8 KiB; a real login form still logs in
    assert (answer.status, answer.closed) == (413, True), answer
    assert answer.body_sent == 0 if not chunked else answer.body_sent < CUT_WITHIN, answer
    assert f'"limit":{LOGIN_LIMIT}'.encode() in answer.body
    assert login.status_code == 303 and "creamfl_dashboard" in login.cookies


def test_the_upload_keeps_its_own_limit(served: Served) -> None:
    # Prepare
    headers = {**served.client.headers, **UPLOAD_HEADERS}

    # Execute: over the JSON limit but under the upload's (round 1 does not exist: 404 after the
    # credentials, unread); over the upload's
    under = send_body_after_headers(served.port, "PUT", served.url("upload"), headers, body_size=2 * JSON_LIMIT)
    over = send_body_after_headers(served.port, "PUT", served.url("upload"), headers, body_size=UPLOAD_LIMIT + 1)

    # Assert: neither body is read, and the connection closes after each answer
    assert (under.status, under.body_sent, under.closed) == (404, 0, True), under
    assert (over.status, over.body_sent, over.closed) == (413, 0, True), over
    assert f'"limit":{UPLOAD_LIMIT}'.encode() in over.body


METRICS = {
    "a 65-character name": ({"m" * 65: 1.0}, 422),
    "a 100 kB name": ({"m" * 100_000: 1.0}, 422),
    "a 2 MB name": ({"m" * 2_000_000: 1.0}, 413),
    "an empty name": ({"": 1.0}, 422),
    "a name with a space": ({"train loss": 1.0}, 422),
    "a string value": ({"loss": "1.5"}, 422),
    "a boolean value": ({"loss": True}, 422),
    "65 metrics": ({f"m{i}": 1.0 for i in range(65)}, 422),
}


@pytest.mark.parametrize("case", METRICS, ids=list(METRICS))
def test_report_metrics_are_bounded(served: Served, case: str) -> None:
    # Prepare
    metrics, status = METRICS[case]

    # Execute
    refused = served.http.post(served.url("report"), json={"metrics": metrics}, headers=served.client.headers)
    valid = served.http.post(served.url("report"), json={"metrics": {"loss": 1.5}}, headers=served.client.headers)

    # Assert: refused by its body; a valid body gets past validation to the round (which does not exist)
    assert_error(refused, status, "invalid" if status == 422 else "payload_too_large")
    assert_error(valid, 404, "not_found")


def test_a_body_the_route_never_reads_closes_the_connection(served: Served) -> None:
    # Prepare: an admin control route takes no body

    # Execute
    answer = send_body_after_headers(
        served.port, "POST", f"{API}/federations/{served.federation['id']}/pause", ADMIN, body_size=HUGE
    )

    # Assert: answered without the body (pausing a created federation conflicts), and not drained
    assert (answer.status, answer.body_sent, answer.closed) == (409, 0, True), answer


def test_requests_whose_body_was_read_whole_keep_their_connection(served: Served) -> None:
    # Prepare / Execute: two requests on one keep-alive connection, without a body and with one
    with httpx.Client(base_url=served.coordinator.url) as http:
        first = http.get(f"{API}/federations", headers=ADMIN)
        second = http.post(f"{API}/federations", json={"name": 5}, headers=ADMIN)

    # Assert: neither closes the connection
    assert first.status_code == 200 and "close" not in first.headers.get("connection", "")
    assert second.status_code == 422 and "close" not in second.headers.get("connection", "")
