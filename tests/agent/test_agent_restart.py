"""A restarted agent resumes: same identity (never enrolls twice), same model, a committed round
delivered rather than trained again; and it stops cleanly on SIGTERM."""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import stat
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from client_agent.agent import Agent
from client_agent.coordinator_errors import ServerFailing
from client_agent.errors import ConfigError
from tests.agent.helpers import (
    AgentThread,
    FailingTransport,
    InProcessTransport,
    agent_command,
    agent_settings,
    in_process_http,
    spawn_agent,
    start_agent,
    stored_reports,
    stored_uploads,
    wait_for_clients,
)
from tests.coordinator.helpers import ADMIN, API, create_federation, round_detail, start


def test_a_restarted_agent_resumes_as_the_same_client(
    app_client: TestClient, database_url: str, tmp_path: Path
) -> None:
    # Prepare: the agent works round 1 and exits (--once)
    federation = create_federation(app_client, rounds=2)
    http = in_process_http(app_client)
    state_dir = tmp_path / "state"
    first = start_agent(agent_settings("http://testserver", federation, "image", state_dir, once=True), http)
    wait_for_clients(app_client, federation["id"], 1)
    start(app_client, federation["id"])
    assert first.join() == 0
    identity = json.loads((state_dir / "identity.json").read_text())

    # Execute: started again, without the join token
    again = agent_settings("http://testserver", federation, "image", state_dir, join_token=None)
    assert start_agent(again, http).join() == 0

    # Assert
    clients = app_client.get(f"{API}/federations/{federation['id']}/clients", headers=ADMIN).json()
    assert [c["id"] for c in clients] == [identity["client_id"]]  # enrolled once
    assert stat.S_IMODE((state_dir / "identity.json").stat().st_mode) == 0o600
    for number in (1, 2):
        assert list(round_detail(app_client, federation["id"], number)["uploaded"]) == [identity["client_id"]]
    reports = stored_reports(database_url)
    assert reports[(2, identity["client_id"])]["rounds_trained"] == 2.0  # the model of round 1 went on training


def test_a_round_trained_before_a_failure_is_delivered_not_retrained(
    app_client: TestClient, database_url: str, tmp_path: Path
) -> None:
    # Prepare: every upload fails (503) until the agent gives up, after training and committing round 1
    federation = create_federation(app_client, rounds=1)
    state_dir = tmp_path / "state"
    failing = FailingTransport(InProcessTransport(app_client), "PUT", "/uploads/", 503, times=10_000)
    settings = agent_settings("http://testserver", federation, "image", state_dir, retry_for_s=1.0)
    crashed = start_agent(settings, in_process_http(app_client, failing))
    wait_for_clients(app_client, federation["id"], 1)
    start(app_client, federation["id"])
    with pytest.raises(ServerFailing):
        crashed.join()
    committed = json.loads((state_dir / "state.json").read_text())
    outbox = (state_dir / "outbox" / committed["round"]["outbox"]["image"]).read_bytes()

    # Execute: restarted with a working network
    assert start_agent(settings, in_process_http(app_client)).join() == 0

    # Assert
    assert failing.failed >= 2
    uploads = stored_uploads(database_url)
    assert [(u.round, u.modality, u.sha256) for u in uploads] == [(1, "image", hashlib.sha256(outbox).hexdigest())]
    reports = stored_reports(database_url)
    assert [m["rounds_trained"] for m in reports.values()] == [1.0]  # trained once, not again
    assert round_detail(app_client, federation["id"], 1)["state"] == "completed"


def test_sigterm_stops_a_polling_agent_at_once_and_cleanly(live_url: str, tmp_path: Path) -> None:
    # Prepare: the federation never starts, so the agent long-polls
    with httpx.Client(base_url=live_url, timeout=30) as http:
        federation = create_federation(http, rounds=1)
        command = agent_command(live_url, federation, "text", tmp_path / "state", poll_wait_s=30)
        process = spawn_agent(command, tmp_path / "agent.log")
        wait_for_clients(http, federation["id"], 1, timeout=120)
        time.sleep(0.5)  # into its long poll

        # Execute
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        elapsed = time.monotonic() - signalled

    # Assert
    log = (tmp_path / "agent.log").read_text()
    assert code == 0, log
    assert elapsed < 5  # not the 30 s of its long poll
    assert "signal=SIGTERM" in log and "stopped" in log
    assert json.loads((tmp_path / "state" / "identity.json").read_text())["federation_id"] == federation["id"]


class StopWhen(logging.Handler):
    """Asks an agent to stop when it logs a line starting with ``prefix`` (a step beginning)."""

    def __init__(self, agent: AgentThread, prefix: str) -> None:
        super().__init__()
        self.agent, self.prefix = agent, prefix

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith(self.prefix):
            self.agent.agent.stopper.request()


def test_a_stop_during_local_training_abandons_it_without_a_trace(
    app_client: TestClient, database_url: str, tmp_path: Path
) -> None:
    # Prepare
    federation = create_federation(app_client, rounds=1)
    http = in_process_http(app_client)
    settings = agent_settings("http://testserver", federation, "multimodal", tmp_path / "state")
    stopped = start_agent(settings, http)
    logger = logging.getLogger(f"client_agent.test.{settings.name}")
    handler = StopWhen(stopped, "train round=1")
    logger.addHandler(handler)
    wait_for_clients(app_client, federation["id"], 1)

    # Execute
    try:
        start(app_client, federation["id"])
        code = stopped.join()
    finally:
        logger.removeHandler(handler)

    # Assert: stopped cleanly, nothing committed or sent; a restart does the round (training once)
    assert code == 0
    assert not (tmp_path / "state" / "state.json").exists() and not list((tmp_path / "state" / "outbox").iterdir())
    assert stored_uploads(database_url) == []
    assert start_agent(settings, http).join() == 0
    assert [m["rounds_trained"] for m in stored_reports(database_url).values()] == [1.0]


def test_a_second_agent_on_the_same_state_dir_is_refused(app_client: TestClient, tmp_path: Path) -> None:
    # Prepare: one agent runs (polling: the federation has not started)
    federation = create_federation(app_client, rounds=1)
    http = in_process_http(app_client)
    settings = agent_settings("http://testserver", federation, "text", tmp_path / "state", poll_wait_s=1.0)
    running = start_agent(settings, http)
    wait_for_clients(app_client, federation["id"], 1)

    # Execute
    with pytest.raises(ConfigError) as refused:
        Agent(settings, http).run()

    # Assert
    assert "another agent is running with the state dir" in str(refused.value)
    running.agent.stopper.request()
    assert running.join() == 0
    assert [
        c["name"] for c in app_client.get(f"{API}/federations/{federation['id']}/clients", headers=ADMIN).json()
    ] == ["agent-text"]
