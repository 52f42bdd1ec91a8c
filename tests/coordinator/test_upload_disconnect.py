"""A client that disconnects mid-upload (a flaky gateway link) over real HTTP: one warning line, no
traceback, nothing stored or left staged, counted as its own upload outcome and not as a 5xx."""

from __future__ import annotations

import hashlib
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from coordinator_service.artifacts import LocalArtifactStore
from tests.agent.helpers import uvicorn_in_thread
from tests.coordinator.helpers import ADMIN, API, create_federation, enroll, fast_settings, next_task, payload, start

UPLOAD_ROUTE = "/api/v1/federations/{federation_id}/rounds/{number}/uploads/{modality}"
DISCONNECTED = ("creamfl_uploads_total", (("modality", "image"), ("outcome", "disconnected")))
Sample = tuple[str, tuple[tuple[str, str], ...]]


def test_a_client_gone_mid_upload_is_one_warning_and_no_server_error(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: an open round over real uvicorn, and an image client with its task
    caplog.set_level(logging.INFO)
    settings = fast_settings(tmp_path / "data", db_url, worker_poll_s=0.05, watch_interval_s=0.05, threads=1)
    with uvicorn_in_thread(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        federation = create_federation(http, rounds=1)
        client = enroll(http, federation, "img", ["image"], "image-cnn-s")
        start(http, federation["id"])
        task = next_task(http, federation["id"], client)
        body = payload(len(task["subset"]), task["embed_dim"], "image")
        before = _metrics(http)  # the registry is the process's: compare, not absolute counts
        host, port = urlsplit(url).hostname, urlsplit(url).port
        assert host is not None and port is not None

        # Execute: the headers and a tenth of the body, then the connection drops
        with socket.create_connection((host, port)) as raw:
            head = (
                f"PUT {task['upload_urls']['image']} HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {client.token}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-SHA256: {hashlib.sha256(body).hexdigest()}\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            raw.sendall(head.encode() + body[: len(body) // 10])
            time.sleep(0.3)  # the server is reading the body when the client goes
        after = _wait_for(http, lambda now: now.get(DISCONNECTED, 0.0) == before.get(DISCONNECTED, 0.0) + 1)

        # Assert: its own outcome and a 499, never a 5xx; nothing recorded for the round
        grown = {key for key, value in after.items() if value > before.get(key, 0.0)}
        statuses = {dict(labels).get("status") for name, labels in grown if dict(labels).get("route") == UPLOAD_ROUTE}
        assert "499" in statuses
        assert not [key for key in grown if dict(key[1]).get("status", "").startswith("5")]
        assert http.get(f"{API}/federations/{federation['id']}/rounds/1", headers=ADMIN).json()["uploaded"] == {}
    assert LocalArtifactStore(settings.resolved_artifact_dir).staging_files() == []
    disconnects = [r for r in caplog.records if "client disconnected" in r.getMessage()]
    assert len(disconnects) == 1 and disconnects[0].levelno == logging.WARNING and disconnects[0].exc_info is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def _metrics(http: httpx.Client) -> dict[Sample, float]:
    families = text_string_to_metric_families(http.get("/metrics").text)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples}


def _wait_for(
    http: httpx.Client, done: Callable[[dict[Sample, float]], bool], timeout: float = 20.0
) -> dict[Sample, float]:
    deadline = time.monotonic() + timeout
    while True:
        now = _metrics(http)
        if done(now):
            return now
        assert time.monotonic() < deadline, "the disconnect was not counted in /metrics"
        time.sleep(0.1)
