"""Faults between agent and coordinator: a coordinator that is down when the agent starts, one
killed mid-upload and restarted, bursts of 5xx, and a connection dropped during a download."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from coordinator_service.app import create_app
from coordinator_service.launcher import free_port
from coordinator_service.settings import Settings
from tests.agent.helpers import (
    FAST,
    agent_settings,
    start_agent,
    stored_reports,
    stored_uploads,
    uvicorn_in_thread,
    wait_for_clients,
)
from tests.agent.proxy import FaultProxy, Rule
from tests.coordinator.helpers import create_federation, round_detail, start, wait_for_round
from tests.coordinator.servers import coordinator_process


def test_an_agent_started_before_its_coordinator_waits_then_joins(settings: Settings, tmp_path: Path) -> None:
    # Prepare: a federation exists, but nothing listens at the coordinator's address
    with TestClient(create_app(settings)) as app_client:
        federation = create_federation(app_client, rounds=1)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    state_dir = tmp_path / "state"

    # Execute
    with httpx.Client(base_url=url) as agent_http:
        agent = start_agent(agent_settings(url, federation, "image", state_dir), agent_http)
        time.sleep(1.5)
        waited = agent.thread.is_alive() and not (state_dir / "identity.json").exists()
        with uvicorn_in_thread(settings, port=port), httpx.Client(base_url=url, timeout=30) as http:
            wait_for_clients(http, federation["id"], 1)
            start(http, federation["id"])
            code = agent.join()
            detail = round_detail(http, federation["id"], 1)

    # Assert
    assert waited  # retrying with backoff, not failed, while nothing listened
    assert code == 0
    assert detail["state"] == "completed" and len(detail["uploaded"]) == 1


def one_round_through(
    proxy: FaultProxy,
    coordinator_url: str,
    modality: str,
    state_dir: Path,
    meanwhile: Callable[[], None] = lambda: None,
) -> tuple[int, dict[str, Any]]:
    """One agent, talking to the coordinator through ``proxy``, works a one-round federation
    (``meanwhile`` runs once the round has started); its exit code and the round. Closes the proxy."""
    try:
        with httpx.Client(base_url=coordinator_url, timeout=30) as http, httpx.Client(base_url=proxy.url) as agent_http:
            federation = create_federation(http, rounds=1)
            agent = start_agent(agent_settings(proxy.url, federation, modality, state_dir), agent_http)
            wait_for_clients(http, federation["id"], 1)
            start(http, federation["id"])
            meanwhile()
            code = agent.join()
            return code, wait_for_round(http, federation["id"], 1, ("completed", "failed"))
    finally:
        proxy.close()


@pytest.mark.parametrize("when", ["after the coordinator stored it", "halfway through the body"])
def test_coordinator_killed_mid_upload_then_restarted_the_upload_lands_once(tmp_path: Path, when: str) -> None:
    with coordinator_process(tmp_path / "data", **FAST) as coordinator:
        # Prepare
        proxy = FaultProxy(coordinator.port)
        killed = threading.Event()

        def kill() -> None:
            coordinator.kill()
            killed.set()

        def restart_once_killed() -> None:
            assert killed.wait(120)
            time.sleep(1.0)  # the agent retries against a dead coordinator meanwhile
            coordinator.restart()

        proxy.add(Rule("PUT", "/uploads/image", cut_request=when == "halfway through the body", then=kill))

        # Execute
        code, detail = one_round_through(proxy, coordinator.url, "image", tmp_path / "state", restart_once_killed)

    # Assert
    assert code == 0
    assert detail["state"] == "completed"
    outcomes = [s.outcome for s in proxy.requests("PUT", "/uploads/image")]
    assert outcomes[0] == "withheld" and "bad gateway" in outcomes
    # Stored before the kill: the retry is an identical repeat (200); cut short: it is new (201).
    assert outcomes[-1] == ("relayed 200" if when == "after the coordinator stored it" else "relayed 201")
    uploads = stored_uploads(coordinator.database_url)
    assert [(u.round, u.modality) for u in uploads] == [(1, "image")]
    assert len(stored_reports(coordinator.database_url)) == 1


def test_bursts_of_5xx_on_every_call_are_ridden_out(live_url: str, database_url: str, tmp_path: Path) -> None:
    # Prepare
    proxy = FaultProxy(int(live_url.rsplit(":", 1)[1]))
    for method, path, status in [
        ("POST", "/clients", 503),
        ("GET", "/public-set", 504),
        ("GET", "/tasks/next", 503),
        ("GET", "/global/", 502),
        ("PUT", "/uploads/", 503),
        ("POST", "/reports", 500),
    ]:
        proxy.add(Rule(method, path, times=3, status=status, retry_after="0.05"))

    # Execute
    code, detail = one_round_through(proxy, live_url, "multimodal", tmp_path / "state")

    # Assert
    assert code == 0
    assert detail["state"] == "completed"
    assert all(rule.applied == 3 for rule in proxy.rules)
    injected = [s for s in proxy.seen if s.outcome.startswith("injected")]
    assert len(injected) == 18
    assert sorted((u.round, u.modality) for u in stored_uploads(database_url)) == [(1, "image"), (1, "text")]
    assert len(stored_reports(database_url)) == 1


def test_a_download_cut_off_midway_resumes(live_url: str, database_url: str, tmp_path: Path) -> None:
    # Prepare
    proxy = FaultProxy(int(live_url.rsplit(":", 1)[1]))
    proxy.add(Rule("GET", "/global/text", times=1, drop_after=500))

    # Execute
    code, detail = one_round_through(proxy, live_url, "image", tmp_path / "state")

    # Assert
    assert code == 0 and detail["state"] == "completed"
    downloads = proxy.requests("GET", "/global/text")
    assert [d.outcome for d in downloads] == ["dropped", "relayed 206"]
    assert downloads[1].headers["range"] == "bytes=500-"
    assert len(stored_uploads(database_url)) == 1
