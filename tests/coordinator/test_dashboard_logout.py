"""A dashboard cookie refused after logout stays refused after the coordinator restarts (DESIGN.md
section 4, "Auth"), over real HTTP against ``creamfl-coordinator serve`` on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import httpx

from coordinator_service.dashboard.sessions import CSRF_HEADER, SESSION_COOKIE
from tests.coordinator.helpers import ADMIN_TOKEN, API, assert_error, tiny_config
from tests.coordinator.servers import coordinator_process


def login(http: httpx.Client) -> str:
    response = http.post("/dashboard/login", data={"token": ADMIN_TOKEN}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return response.cookies[SESSION_COOKIE]


def create_with_cookie(http: httpx.Client, cookie: str, name: str) -> httpx.Response:
    return http.post(
        f"{API}/federations",
        json=tiny_config(name=name),
        headers={"Cookie": f"{SESSION_COOKIE}={cookie}", CSRF_HEADER: "1"},
    )


def test_a_logged_out_cookie_stays_refused_after_a_restart(db_url: str, tmp_path: Path) -> None:
    # Prepare: two dashboard sessions; one logs out
    with coordinator_process(tmp_path / "data", database_url=db_url) as coordinator:
        with coordinator.http() as http:
            gone, kept = login(http), login(http)
            before_logout = create_with_cookie(http, gone, "before logout")
            logout = http.post("/dashboard/logout", headers={"Cookie": f"{SESSION_COOKIE}={gone}"})
            after_logout = create_with_cookie(http, gone, "after logout")

        # Execute
        coordinator.restart()
        with coordinator.http() as http:
            after_restart = create_with_cookie(http, gone, "after restart")
            other_session = create_with_cookie(http, kept, "other session")

    # Assert: refused from the logout on, across the restart; the other session lives on
    assert before_logout.status_code == 201, before_logout.text
    assert logout.status_code == 303
    assert_error(after_logout, 401, "unauthorized")
    assert_error(after_restart, 401, "unauthorized")
    assert other_session.status_code == 201, other_session.text
