"""The admin dashboard in a real browser (Debian's chromium) against a real uvicorn coordinator.

Rounds are driven over HTTP with the coordinator test helpers, as client agents would; the page must
follow them live (it polls the admin API every 2 s) without being reloaded, and show the API's numbers.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.dashboard.conftest import in_ci

try:
    from playwright.sync_api import Dialog, Page, expect
except ImportError:
    if in_ci():
        raise
    pytest.skip("playwright for Python is not installed: pip install -e '.[dev]'", allow_module_level=True)

from tests.coordinator.helpers import ADMIN, ADMIN_TOKEN, API, create_federation, enroll_mix, run_round, start
from tests.dashboard.conftest import PHONE, Dashboard

LIVE_TIMEOUT_MS = 10_000  # a poll every 2 s, so a change shows within a few seconds
COOKIE = "creamfl_dashboard"


def api_get(http: httpx.Client, path: str) -> Any:
    response = http.get(f"{API}{path}", headers=ADMIN)
    assert response.status_code == 200, response.text
    return response.json()


def answer_next_dialog(page: Page, *, accept: bool) -> list[str]:
    """Accept or dismiss the next confirmation; returns the list its message is appended to."""
    messages: list[str] = []

    def handle(dialog: Dialog) -> None:
        messages.append(dialog.message)
        if accept:
            dialog.accept()
        else:
            dialog.dismiss()

    page.once("dialog", handle)
    return messages


def login_cookie(http: httpx.Client, **headers: str) -> httpx.Response:
    """Log in with a fresh client (``http`` keeps no cookie, so its other requests stay anonymous)."""
    with httpx.Client(base_url=http.base_url, timeout=30.0) as fresh:
        response = fresh.post(
            "/dashboard/login",
            data={"token": ADMIN_TOKEN, "next": "/dashboard"},
            headers=headers,
            follow_redirects=False,
        )
    assert response.status_code == 303, response.text
    return response


def cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={value}"}


def test_pages_and_api_are_refused_without_login(http: httpx.Client, dashboard: Dashboard) -> None:
    # Prepare
    federation = create_federation(http, name="private-federation")
    pages = [
        "/dashboard",
        f"/dashboard/federations/{federation['id']}",
        f"/dashboard/federations/{federation['id']}/rounds/1",
    ]
    genuine = login_cookie(http).cookies[COOKIE]
    forged = genuine[:-1] + ("1" if genuine.endswith("0") else "0")  # one hex digit of the MAC changed

    # Execute
    anonymous = [http.get(path, follow_redirects=False) for path in pages]
    with_forged_cookie = http.get(pages[1], headers=cookie(forged), follow_redirects=False)
    api_anonymous = http.get(f"{API}/federations")
    api_forged = http.get(f"{API}/federations", headers=cookie(forged))
    wrong_token = http.post("/dashboard/login", data={"token": "not-the-admin-token"}, follow_redirects=False)
    dashboard.page.goto(f"{dashboard.base_url}{pages[1]}")

    # Assert: pages send to the login form, the API answers 401 JSON, and nothing of the federation shows
    for path, response in zip(pages, anonymous, strict=True):
        assert response.status_code == 303, (path, response.status_code)
        assert response.headers["location"].startswith("/dashboard/login?next=")
        assert "private-federation" not in response.text
    assert with_forged_cookie.status_code == 303
    for response in (api_anonymous, api_forged):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
    assert wrong_token.status_code == 401 and COOKIE not in wrong_token.cookies
    expect(dashboard.page.locator("#login-form")).to_be_visible()
    assert "private-federation" not in dashboard.page.content()
    assert dashboard.session_cookie() is None


def test_login_sets_a_strict_http_only_session_cookie(http: httpx.Client, dashboard: Dashboard) -> None:
    # Prepare
    federation = create_federation(http, name="cookie-check")
    fid = federation["id"]

    # Execute
    plain = login_cookie(http)
    behind_https = login_cookie(http, **{"X-Forwarded-Proto": "https"})
    dashboard.page.goto(f"{dashboard.base_url}/dashboard/federations/{fid}")
    dashboard.page.fill("#token", ADMIN_TOKEN)
    dashboard.page.click("#login-form button[type=submit]")
    session = plain.cookies[COOKIE]
    write_without_header = http.post(f"{API}/federations/{fid}/start", headers=cookie(session))
    write_with_header = http.post(
        f"{API}/federations/{fid}/start", headers={**cookie(session), "X-CreamFL-Dashboard": "1"}
    )

    # Assert
    set_cookie = plain.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie and "path=/" in set_cookie
    assert "secure" not in set_cookie
    assert "secure" in behind_https.headers["set-cookie"].lower()
    dashboard.page.wait_for_url(f"{dashboard.base_url}/dashboard/federations/{fid}")  # back where login began
    (browser_cookie,) = [c for c in dashboard.context.cookies() if c["name"] == COOKIE]
    assert browser_cookie["httpOnly"] and browser_cookie["sameSite"] == "Strict" and browser_cookie["path"] == "/"
    assert dashboard.page.evaluate("document.cookie") == ""  # invisible to scripts
    assert write_without_header.status_code == 403  # cookie-authenticated writes need the dashboard's header
    assert write_with_header.status_code == 200 and write_with_header.json()["state"] == "running"


def test_running_federation_updates_live_and_matches_the_api(http: httpx.Client, dashboard: Dashboard) -> None:
    # Prepare
    federation = create_federation(http, name="live-demo", rounds=3)
    fid = federation["id"]
    clients = enroll_mix(http, federation)
    page = dashboard.page
    dashboard.login()
    row = page.locator(f"#federations tr[data-federation-id='{fid}']")
    expect(row.locator("[data-field=state]")).to_have_text("created")
    row.get_by_role("link", name="live-demo").click()
    page.wait_for_url(f"**/dashboard/federations/{fid}")
    expect(page.locator("#clients tbody tr[data-client-id]")).to_have_count(3)
    page.evaluate("window.__notReloaded = true")

    # Execute: start from the page, then three rounds driven by client uploads over the API
    confirmations = answer_next_dialog(page, accept=True)
    page.click("#action-start")
    expect(page.locator("#federation-state")).to_have_text("running")
    for number in (1, 2, 3):
        run_round(http, fid, clients, number)
        expect(page.locator(f"#rounds tr[data-round='{number}'] [data-field=state]")).to_have_text(
            "completed", timeout=LIVE_TIMEOUT_MS
        )
        expect(page.locator("#summary [data-field=rounds-done]")).to_have_text(f"{number} / 3", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#federation-state")).to_have_text("completed", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("#jobs tbody tr[data-job-id]")).to_have_count(12, timeout=LIVE_TIMEOUT_MS)

    # Assert: the same page, never reloaded, shows what the API says
    assert "live-demo" in confirmations[0]
    assert page.evaluate("window.__notReloaded") is True
    summary = api_get(http, f"/federations/{fid}")
    rounds = api_get(http, f"/federations/{fid}/rounds")
    api_rsum = {r["number"]: r["metrics"]["rsum"] for r in rounds}
    shown_rsum = {
        number: float(page.locator(f"#rounds tr[data-round='{number}'] [data-field=rsum]").get_attribute("data-value"))
        for number in (1, 2, 3)
    }
    assert shown_rsum == api_rsum
    chart = page.evaluate("(() => { const d = window.creamfl.charts.quality.data; return [d[0], d[1]]; })()")
    assert dict(zip(chart[0], chart[1], strict=True)) == api_rsum
    byte_chart = page.evaluate("window.creamfl.charts.bytes.data[1]")
    assert byte_chart == [r["bytes_up"] for r in sorted(rounds, key=lambda r: r["number"])]
    assert page.locator("#summary [data-field=rounds-done]").get_attribute("data-value") == str(
        summary["rounds_completed"]
    )
    assert page.locator("#summary [data-field=clients]").get_attribute("data-value") == str(summary["clients_enrolled"])
    assert float(page.locator("#summary [data-field=last-rsum]").get_attribute("data-value")) == summary["last_rsum"]
    assert summary["last_rsum"] == api_rsum[3]
    for number in (1, 2, 3):
        cells = page.locator(f"#rounds tr[data-round='{number}']")
        expect(cells.locator("[data-field=participants]")).to_have_text("3 / 3")
        expect(cells.locator("[data-field=quorum]")).to_have_text("met (3 of 1)")
        for state in ("pending", "open", "aggregating", "training", "evaluating"):
            expect(cells.locator(f"[data-field=durations] [data-state={state}]")).to_have_count(1)
    api_clients = api_get(http, f"/federations/{fid}/clients")
    for client in api_clients:
        shown = page.locator(f"#clients tr[data-client-id='{client['id']}']")
        uploads = shown.locator("[data-field=uploads]").get_attribute("data-value")
        assert uploads == str(client["uploads"]) == str(3 * len(client["modalities"]))  # one per modality and round
        if client["mean_weight"] is not None:
            weight = shown.locator("[data-field=mean-weight]").get_attribute("data-value")
            assert float(weight) == client["mean_weight"]
    dashboard.screenshot("dashboard-federation.png")

    # Assert: the overview shows the same numbers
    page.goto(f"{dashboard.base_url}/dashboard")
    row = page.locator(f"#federations tr[data-federation-id='{fid}']")
    expect(row.locator("[data-field=state]")).to_have_text("completed")
    done = row.locator("[data-field=rounds-done]")
    assert (done.get_attribute("data-done"), done.get_attribute("data-total")) == ("3", "3")
    enrolled = row.locator("[data-field=clients]")
    assert enrolled.get_attribute("data-enrolled") == str(summary["clients_enrolled"]) == "3"
    assert enrolled.get_attribute("data-active") == "3"
    assert float(row.locator("[data-field=last-rsum]").get_attribute("data-value")) == summary["last_rsum"]
    dashboard.screenshot("dashboard-overview.png")
    assert dashboard.errors == []


def test_a_round_opens_with_its_transitions_participants_and_metrics(http: httpx.Client, dashboard: Dashboard) -> None:
    # Prepare
    federation = create_federation(http, name="one-round", rounds=1)
    fid = federation["id"]
    clients = enroll_mix(http, federation)
    start(http, fid)
    detail = run_round(http, fid, clients, 1)
    dashboard.login(path=f"/dashboard/federations/{fid}")

    # Execute
    dashboard.page.locator("#rounds tr[data-round='1']").get_by_role("link", name="#1").click()

    # Assert
    page = dashboard.page
    page.wait_for_url(f"**/dashboard/federations/{fid}/rounds/1")
    expect(page.locator("#round-state")).to_have_text("completed")
    expect(page.locator("#transitions tbody tr")).to_have_count(len(detail["transitions"]))
    assert page.locator("#transitions tbody tr").evaluate_all("rows => rows.map(r => r.dataset.state)") == [
        t["state"] for t in detail["transitions"]
    ]
    expect(page.locator("#participants tbody tr[data-client-id]")).to_have_count(3)
    for client in clients:
        uploaded = page.locator(f"#participants tr[data-client-id='{client.id}'] [data-field=uploaded]")
        expect(uploaded).to_have_text(", ".join(client.modalities))
    expect(page.locator("#federation-link")).to_have_text("one-round")
    rsum = page.locator("#metrics tr[data-key=rsum] td").get_attribute("data-value")
    assert float(rsum) == detail["metrics"]["rsum"]
    assert (
        float(page.locator("#round-summary [data-field=rsum]").get_attribute("data-value")) == detail["metrics"]["rsum"]
    )
    expect(page.locator("#round-timeline span")).to_have_count(5)  # completed has no duration
    dashboard.screenshot("dashboard-round.png")
    assert dashboard.errors == []


def test_pause_resume_and_stop_from_the_page_after_confirmation(http: httpx.Client, dashboard: Dashboard) -> None:
    # Prepare
    federation = create_federation(http, name="controls", rounds=2)
    fid = federation["id"]
    enroll_mix(http, federation)
    start(http, fid)
    dashboard.login(path=f"/dashboard/federations/{fid}")
    page = dashboard.page
    state = page.locator("#federation-state")
    expect(state).to_have_text("running")

    def federation_state() -> str:
        return str(api_get(http, f"/federations/{fid}")["state"])

    # Execute + Assert: a dismissed confirmation changes nothing
    answer_next_dialog(page, accept=False)
    page.click("#action-pause")
    page.wait_for_timeout(500)
    assert federation_state() == "running"

    # Execute + Assert: pause, resume, stop
    question = answer_next_dialog(page, accept=True)
    page.click("#action-pause")
    expect(state).to_have_text("paused")
    assert federation_state() == "paused" and "Pause" in question[0]
    expect(page.locator("#action-start")).to_have_text("Resume")
    expect(page.locator("#action-pause")).to_be_disabled()

    question = answer_next_dialog(page, accept=True)
    page.click("#action-start")
    expect(state).to_have_text("running")
    assert federation_state() == "running" and "Resume" in question[0]

    question = answer_next_dialog(page, accept=True)
    page.click("#action-stop")
    expect(state).to_have_text("stopped")
    assert federation_state() == "stopped" and "cannot be started again" in question[0]
    for action in ("start", "pause", "stop"):
        expect(page.locator(f"#action-{action}")).to_be_disabled()
    assert dashboard.errors == []


def test_revoke_a_client_from_the_page_after_confirmation(http: httpx.Client, dashboard: Dashboard) -> None:
    # Prepare
    federation = create_federation(http, name="revocation", rounds=2)
    fid = federation["id"]
    img, txt, mm = enroll_mix(http, federation)
    start(http, fid)
    dashboard.login(path=f"/dashboard/federations/{fid}")
    page = dashboard.page
    row = page.locator(f"#clients tr[data-client-id='{txt.id}']")
    expect(row.locator("[data-field=status]")).to_have_text("active")

    # Execute: dismiss once, then confirm
    answer_next_dialog(page, accept=False)
    row.get_by_role("button", name="Revoke").click()
    page.wait_for_timeout(500)
    kept = {c["id"]: c["status"] for c in api_get(http, f"/federations/{fid}/clients")}
    question = answer_next_dialog(page, accept=True)
    row.get_by_role("button", name="Revoke").click()

    # Assert
    expect(row.locator("[data-field=status]")).to_have_text("revoked")
    assert kept[txt.id] == "active"
    statuses = {c["id"]: c["status"] for c in api_get(http, f"/federations/{fid}/clients")}
    assert statuses == {img.id: "active", txt.id: "revoked", mm.id: "active"}
    assert "txt" in question[0]
    expect(row.get_by_role("button", name="Revoke")).to_have_count(0)
    refused = http.get(f"{API}/federations/{fid}/tasks/next", headers=txt.headers)
    assert refused.status_code == 403
    expect(page.locator("#summary [data-field=clients]")).to_have_text("3 / 2")
    assert dashboard.errors == []


def test_logout_ends_the_session_everywhere_it_was_used(http: httpx.Client, dashboard: Dashboard) -> None:
    # Prepare
    federation = create_federation(http, name="logout")
    dashboard.login(path=f"/dashboard/federations/{federation['id']}")
    page = dashboard.page
    expect(page.locator("#federation-name")).to_have_text("logout")
    session = dashboard.session_cookie()
    assert session is not None
    assert http.get(f"{API}/federations", headers=cookie(session)).status_code == 200

    # Execute
    page.click("#logout")

    # Assert: the browser is logged out, and the old cookie value no longer opens anything
    expect(page.locator("#logged-out")).to_be_visible()
    assert dashboard.session_cookie() is None
    page.goto(f"{dashboard.base_url}/dashboard")
    expect(page.locator("#login-form")).to_be_visible()
    assert http.get(f"{API}/federations", headers=cookie(session)).status_code == 401
    assert http.get("/dashboard", headers=cookie(session), follow_redirects=False).status_code == 303


def test_the_federation_page_fits_a_phone_screen(http: httpx.Client, dashboard: Dashboard) -> None:
    # Prepare
    federation = create_federation(http, name="phone", rounds=1)
    fid = federation["id"]
    clients = enroll_mix(http, federation)
    start(http, fid)
    run_round(http, fid, clients, 1)
    dashboard.page.set_viewport_size(PHONE)  # type: ignore[arg-type]

    # Execute
    dashboard.login(path=f"/dashboard/federations/{fid}")
    page = dashboard.page
    expect(page.locator("#rounds tr[data-round='1'] [data-field=state]")).to_have_text("completed")
    expect(page.locator("#chart-quality .uplot")).to_have_count(1)

    # Assert: nothing runs off the side of the page (wide tables scroll inside their own box)
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
    chart_width = page.locator("#chart-quality canvas").bounding_box()
    assert chart_width is not None and chart_width["width"] <= PHONE["width"]
    dashboard.screenshot("dashboard-federation-phone.png")
    assert dashboard.errors == []


def test_a_round_that_misses_its_quorum_shows_its_retries_and_failure_reason(
    http: httpx.Client, dashboard: Dashboard
) -> None:
    # Prepare: nobody uploads, so the round re-opens once at its deadline and then fails
    federation = create_federation(http, name="no-quorum", round_deadline_s=0.5, max_reopen=1)
    fid = federation["id"]
    enroll_mix(http, federation)
    dashboard.login(path=f"/dashboard/federations/{fid}")
    page = dashboard.page

    # Execute
    start(http, fid)

    # Assert: the page follows the round to its failure, and says why, as the API does
    row = page.locator("#rounds tr[data-round='1']")
    expect(row.locator("[data-field=state]")).to_have_text("failed", timeout=LIVE_TIMEOUT_MS)
    detail = api_get(http, f"/federations/{fid}/rounds/1")
    assert detail["state"] == "failed" and detail["attempt"] == 1
    expect(row.locator("[data-field=retries]")).to_have_text("1")
    expect(row.locator("[data-field=failures]")).to_contain_text(detail["failure_reason"])
    expect(row.locator("[data-field=failures]")).to_contain_text("re-opened: quorum missed (0 of 1)")
    expect(row.locator("[data-field=quorum]")).to_have_text("missed (0 of 1)")
    expect(page.locator("#federation-state")).to_have_text("failed")
    row.get_by_role("link", name="#1").click()
    expect(page.locator("#round-failure")).to_have_text(f"Failed: {detail['failure_reason']}")
    expect(page.locator("#transitions tbody tr[data-state=open]")).to_have_count(2)
    assert dashboard.errors == []


def test_a_failed_federation_is_resumed_from_the_page_after_confirmation(
    http: httpx.Client, dashboard: Dashboard
) -> None:
    # Prepare: nobody uploads and no re-opening is allowed, so the round fails at its deadline
    federation = create_federation(http, name="resumable", round_deadline_s=0.5, max_reopen=0)
    fid = federation["id"]
    enroll_mix(http, federation)
    dashboard.login(path=f"/dashboard/federations/{fid}")
    page = dashboard.page
    resume = page.locator("#action-resume")
    expect(page.locator("#federation-state")).to_have_text("created")
    hidden_before = resume.is_hidden()
    start(http, fid)
    expect(page.locator("#federation-state")).to_have_text("failed", timeout=LIVE_TIMEOUT_MS)

    # Execute
    question = answer_next_dialog(page, accept=True)
    resume.click()

    # Assert: the round re-opened for a fresh attempt, as the timeline records
    def resumed() -> bool:
        transitions = api_get(http, f"/federations/{fid}/rounds/1")["transitions"]
        return any(t["reason"] == "resumed by an admin: re-opened" for t in transitions)

    for _ in range(100):  # the page's request, then the API's answer: well within 10 s
        if resumed():
            break
        page.wait_for_timeout(100)
    assert hidden_before
    assert resumed()
    assert "Resume" in question[0]
    assert dashboard.errors == []
