"""Drivers for the agent tests: coordinators (in-process, or behind an in-thread uvicorn; a real
subprocess is ``tests.coordinator.servers.coordinator_process(data_dir, **FAST)``), agents (in
threads, or ``creamfl-agent`` subprocesses), and reads of the coordinator's database."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from client_agent.agent import Agent
from client_agent.command import AgentCommand
from client_agent.progress import Reporter
from client_agent.settings import AgentSettings, load_settings
from client_agent.stopping import Stopper
from coordinator_service.app import create_app
from coordinator_service.db.models import Report, Round, Upload
from coordinator_service.launcher import child_env
from coordinator_service.settings import Settings
from tests.coordinator.helpers import ADMIN, API, Http, fast_settings

BIN = Path(sys.executable).parent
MODALITIES = ("image", "text", "multimodal")
WITHOUT_TRANSFORMERS = Path(__file__).parent / "without_transformers"
# Quick polling and a short lease: the coordinator's settings in every agent test (in-process or not).
FAST: dict[str, Any] = {"worker_poll_s": 0.05, "watch_interval_s": 0.05, "lease_s": 5.0, "threads": 1}


def coordinator_settings(data_dir: Path, database_url: str) -> Settings:
    return fast_settings(data_dir, database_url, **FAST)


# --- coordinators ------------------------------------------------------------------------------


class InProcessTransport(httpx.BaseTransport):
    """Sends an ``httpx.Client``'s requests to the ASGI app through a TestClient (in this process).

    Starlette's TestClient is built on ``httpx2``, not ``httpx``: this adapter lets the agent keep
    its ``httpx.Client`` (what it gets in production) while the app runs in-process.
    """

    def __init__(self, app_client: TestClient) -> None:
        self.app_client = app_client

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        answer = self.app_client.request(
            request.method, str(request.url), headers=request.headers.multi_items(), content=request.read()
        )
        return httpx.Response(answer.status_code, headers=answer.headers.multi_items(), content=answer.content)


class FailingTransport(httpx.BaseTransport):
    """In front of another transport: answers ``status`` to matching requests ``times`` times.

    For faults the coordinator cannot be made to produce on demand (a 5xx from a proxy in front
    of it); everything else reaches the real app."""

    def __init__(self, inner: httpx.BaseTransport, method: str, path_contains: str, status: int, times: int) -> None:
        self.inner, self.method, self.path_contains = inner, method, path_contains
        self.status, self.times = status, times
        self.failed = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == self.method and self.path_contains in request.url.path and self.failed < self.times:
            self.failed += 1
            body = {"error": {"code": "injected", "message": "injected by the test transport", "details": {}}}
            return httpx.Response(self.status, json=body)
        return self.inner.handle_request(request)


def in_process_http(app_client: TestClient, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    return httpx.Client(base_url="http://testserver", transport=transport or InProcessTransport(app_client))


@contextmanager
def uvicorn_in_thread(settings: Settings, port: int = 0) -> Iterator[str]:
    """The coordinator app behind a real uvicorn HTTP server in this process; yields its URL."""
    sock = socket.create_server(("127.0.0.1", port))
    config = uvicorn.Config(create_app(settings), log_level="warning", timeout_graceful_shutdown=2, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


# --- agents ------------------------------------------------------------------------------------


def builtin_data(index: int, clients: int = 3, samples: int = 40) -> str:
    return f"builtin:0:{index}/{clients}?samples={samples}"


def agent_defaults(coordinator: str, federation: dict[str, Any], modality: str, state_dir: Path) -> AgentCommand:
    """Every test agent: the built-in share of its modality, on the CPU, quick to poll and to retry."""
    return AgentCommand(
        coordinator=coordinator,
        federation=federation["id"],
        join_token=federation["join_token"],
        modality=modality,
        data=builtin_data(MODALITIES.index(modality)),
        name=f"agent-{modality}",
        state_dir=state_dir,
        device="cpu",
        poll_wait_s=5.0,
        backoff_max_s=0.5,
        progress="plain",
    )


def agent_settings(
    coordinator: str, federation: dict[str, Any], modality: str, state_dir: Path, **overrides: Any
) -> AgentSettings:
    """The settings of an agent in a thread of this process (``overrides``: AgentCommand fields)."""
    in_thread = {"retry_for_s": 60.0, "request_timeout_s": 30.0, **overrides}
    command = replace(agent_defaults(coordinator, federation, modality, state_dir), **in_thread)
    return load_settings(asdict(command))


@dataclass
class AgentThread:
    agent: Agent
    thread: threading.Thread
    result: dict[str, Any]

    def join(self, timeout: float = 120.0) -> int:
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.agent.stopper.request()
            self.thread.join(30)
            raise AssertionError(f"agent {self.agent.settings.name} did not finish in {timeout}s")
        if "error" in self.result:
            raise self.result["error"]
        code: int = self.result["code"]
        return code


def start_agent(settings: AgentSettings, http: httpx.Client) -> AgentThread:
    """An agent in a thread of this process (no signal handling: it stops through its Stopper)."""
    logger = logging.getLogger(f"client_agent.test.{settings.name}")
    logger.setLevel(logging.INFO)  # its step lines are emitted whatever the root logger's level
    agent = Agent(settings, http, stopper=Stopper(), reporter=Reporter("plain", logger=logger), logger=logger)
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["code"] = agent.run()
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=run, name=f"agent-{settings.name}", daemon=True)
    thread.start()
    return AgentThread(agent, thread, result)


def agent_command(
    coordinator: str, federation: dict[str, Any], modality: str, state_dir: Path, **overrides: Any
) -> list[str]:
    """A ``creamfl-agent`` subprocess's command line (one torch thread; ``overrides``: AgentCommand fields)."""
    command = replace(agent_defaults(coordinator, federation, modality, state_dir), **{"threads": 1, **overrides})
    return command.argv(str(BIN / "creamfl-agent"))


def spawn_agent(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    """A ``creamfl-agent`` process, with transformers importable as an error (``creamfl[agent]`` has none)."""
    env = {**child_env(inherit_creamfl=False), "PYTHONPATH": str(WITHOUT_TRANSFORMERS)}
    return subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


# --- the coordinator's side ----------------------------------------------------------------------


def wait_for_clients(http: Http, federation_id: str, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        clients: list[dict[str, Any]] = http.get(f"{API}/federations/{federation_id}/clients", headers=ADMIN).json()
        if len(clients) >= count:
            return clients
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(clients)} clients enrolled after {timeout}s, expected {count}")
        time.sleep(0.1)


@dataclass(frozen=True, order=True)
class StoredUpload:
    round: int
    client_id: str
    modality: str
    sha256: str


def stored_uploads(database_url: str) -> list[StoredUpload]:
    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            rows = session.execute(
                select(Round.number, Upload.client_id, Upload.modality, Upload.sha256).join(
                    Round, Round.id == Upload.round_id
                )
            ).all()
    finally:
        engine.dispose()
    return sorted(StoredUpload(*row) for row in rows)


def stored_reports(database_url: str) -> dict[tuple[int, str], dict[str, float]]:
    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            rows = session.execute(
                select(Round.number, Report.client_id, Report.metrics).join(Round, Round.id == Report.round_id)
            ).all()
    finally:
        engine.dispose()
    return {(number, client_id): dict(metrics) for number, client_id, metrics in rows}
