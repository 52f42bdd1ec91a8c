"""The agent's CoordinatorClient against the real app: in-process, and behind a real uvicorn with a
fault-injecting proxy (503 bursts with Retry-After, dropped downloads, an unreachable port)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from client_agent.coordinator_client import CoordinatorClient, RetryPolicy
from client_agent.coordinator_errors import Rejected, ServerFailing, Unreachable
from coordinator_service.launcher import free_port
from shared_schemas.client import ClientCreate
from shared_schemas.rounds import TrainTask
from tests.agent.helpers import InProcessTransport
from tests.agent.proxy import FaultProxy, Rule
from tests.coordinator.helpers import create_federation, payload, start

FAST = RetryPolicy(retry_for_s=20.0, initial_s=0.01, max_backoff_s=0.05)


class CountingTransport(httpx.BaseTransport):
    """Records every request that reaches the app (a real transport in front of the real app)."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.sent: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((request.method, request.url.path))
        return self.inner.handle_request(request)


@pytest.fixture
def counting(app_client: TestClient) -> CountingTransport:
    return CountingTransport(InProcessTransport(app_client))


@pytest.fixture
def http(counting: CountingTransport) -> Iterator[httpx.Client]:
    with httpx.Client(base_url="http://testserver", transport=counting) as client:
        yield client


def enrolled(http: httpx.Client, federation: dict[str, Any], *, retry: RetryPolicy = FAST) -> CoordinatorClient:
    client = CoordinatorClient(http, federation["id"], retry=retry)
    client.enroll(
        federation["join_token"], ClientCreate(name="gw", modalities=["image"], model="image-cnn-s", samples=9)
    )
    return client


def train_task(client: CoordinatorClient) -> TrainTask:
    task = client.next_task(wait=10)
    assert isinstance(task, TrainTask), task
    return task


def test_enroll_public_set_task_download_upload_report(
    app_client: TestClient, http: httpx.Client, tmp_path: Path
) -> None:
    # Prepare
    federation = create_federation(app_client, rounds=1)
    client = enrolled(http, federation)
    start(app_client, federation["id"])

    # Execute
    manifest = client.public_set()
    task = train_task(client)
    path = client.download_global(
        task.global_urls["text"], expected_sha256=task.global_sha256["text"], cache_dir=tmp_path
    )
    body = payload(len(task.subset), task.embed_dim, "image")
    first = client.upload(task.upload_urls["image"], body)
    again = client.upload(task.upload_urls["image"], body)
    report = client.report(task.round, {"task_loss": 1.5})

    # Assert
    assert manifest.kind == "builtin" and manifest.size == 24 and manifest.embed_dim == 16
    assert hashlib.sha256(path.read_bytes()).hexdigest() == task.global_sha256["text"]
    assert first.created and not again.created and again.upload.sha256 == first.upload.sha256
    assert report.metrics == {"task_loss": 1.5}


def test_a_cached_download_costs_no_request(
    app_client: TestClient, http: httpx.Client, counting: CountingTransport, tmp_path: Path
) -> None:
    # Prepare
    federation = create_federation(app_client, rounds=1)
    client = enrolled(http, federation)
    start(app_client, federation["id"])
    task = train_task(client)
    url, sha = task.global_urls["image"], task.global_sha256["image"]
    client.download_global(url, expected_sha256=sha, cache_dir=tmp_path)
    before = len(counting.sent)

    # Execute
    again = client.download_global(url, expected_sha256=sha, cache_dir=tmp_path)

    # Assert
    assert len(counting.sent) == before
    assert again == tmp_path / f"{sha}.safetensors"


def test_different_bytes_for_a_stored_upload_are_a_conflict(app_client: TestClient, http: httpx.Client) -> None:
    # Prepare
    federation = create_federation(app_client, rounds=1)
    client = enrolled(http, federation)
    start(app_client, federation["id"])
    task = train_task(client)
    client.upload(task.upload_urls["image"], payload(len(task.subset), task.embed_dim, "image", seed=1))

    # Execute
    with pytest.raises(Rejected) as refused:
        client.upload(task.upload_urls["image"], payload(len(task.subset), task.embed_dim, "image", seed=2))

    # Assert
    assert refused.value.status == 409 and refused.value.code == "conflict"


@pytest.mark.parametrize(("status", "path"), [(401, "/clients"), (404, "/clients")])
def test_4xx_is_not_retried(
    app_client: TestClient, http: httpx.Client, counting: CountingTransport, status: int, path: str
) -> None:
    # Prepare
    federation = create_federation(app_client, rounds=1)
    federation_id = federation["id"] if status == 401 else "fed-missing"
    client = CoordinatorClient(http, federation_id, retry=FAST)
    request = ClientCreate(name="gw", modalities=["text"], model="text-gru-s", samples=1)

    # Execute
    with pytest.raises(Rejected) as refused:
        client.enroll("wrong-token" if status == 401 else federation["join_token"], request)

    # Assert
    assert refused.value.status == status
    assert str(refused.value).count("\n") == 0 and f"HTTP {status}" in str(refused.value)
    assert [p for _, p in counting.sent if p.endswith(path)] == [f"/api/v1/federations/{federation_id}/clients"]


def test_a_503_burst_is_retried_honouring_retry_after(live_url: str) -> None:
    # Prepare
    proxy = FaultProxy(int(live_url.rsplit(":", 1)[1]))
    proxy.add(Rule("GET", "/public-set", times=3, status=503, retry_after="0.3"))
    proxy.add(Rule("GET", "/public-set", times=1, status=429, retry_after="0.3"))
    with httpx.Client(base_url=proxy.url) as http:
        federation = create_federation(http, rounds=1)
        client = enrolled(http, federation)

        # Execute
        started = time.monotonic()
        manifest = client.public_set()
        elapsed = time.monotonic() - started
    proxy.close()

    # Assert
    outcomes = [s.outcome for s in proxy.requests("GET", "/public-set")]
    assert outcomes == ["injected 503"] * 3 + ["injected 429", "relayed 200"]
    assert manifest.size == 24
    assert elapsed >= 4 * 0.3  # FAST alone would have waited at most 4 * 0.05 s


def test_5xx_that_does_not_end_fails_with_one_line(live_url: str) -> None:
    # Prepare
    proxy = FaultProxy(int(live_url.rsplit(":", 1)[1]))
    proxy.add(Rule("GET", "/public-set", times=1000, status=502))
    with httpx.Client(base_url=proxy.url) as http:
        federation = create_federation(http, rounds=1)
        client = enrolled(http, federation, retry=RetryPolicy(retry_for_s=1.0, initial_s=0.05, max_backoff_s=0.2))

        # Execute
        with pytest.raises(ServerFailing) as failed:
            client.public_set()
    proxy.close()

    # Assert
    assert len(proxy.requests("GET", "/public-set")) >= 3
    assert "kept failing (HTTP 502" in str(failed.value) and "\n" not in str(failed.value)


def test_an_unreachable_coordinator_is_retried_then_reported() -> None:
    # Prepare
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    retry = RetryPolicy(retry_for_s=1.0, initial_s=0.05, max_backoff_s=0.2)
    with httpx.Client(base_url=url) as http:
        client = CoordinatorClient(http, "fed-x", retry=retry)

        # Execute
        started = time.monotonic()
        with pytest.raises(Unreachable) as failed:
            client.enroll("t", ClientCreate(name="gw", modalities=["text"], model="text-gru-s", samples=1))

    # Assert
    assert 0.9 <= time.monotonic() - started < 5
    message = str(failed.value)
    assert message.startswith(f"cannot reach the coordinator at {url}") and "attempts over" in message
    assert "check --coordinator" in message and "\n" not in message


def test_a_dropped_download_resumes_with_a_range_request(live_url: str, tmp_path: Path) -> None:
    # Prepare
    proxy = FaultProxy(int(live_url.rsplit(":", 1)[1]))
    proxy.add(Rule("GET", "/global/image", times=1, drop_after=300))
    with httpx.Client(base_url=proxy.url) as http:
        federation = create_federation(http, rounds=1)
        client = enrolled(http, federation)
        start(http, federation["id"])
        task = train_task(client)

        # Execute
        path = client.download_global(
            task.global_urls["image"], expected_sha256=task.global_sha256["image"], cache_dir=tmp_path
        )
    proxy.close()

    # Assert
    assert hashlib.sha256(path.read_bytes()).hexdigest() == task.global_sha256["image"]
    attempts = proxy.requests("GET", "/global/image")
    assert [a.outcome for a in attempts] == ["dropped", "relayed 206"]
    assert "range" not in attempts[0].headers
    assert attempts[1].headers["range"] == "bytes=300-"
    assert not list(tmp_path.glob("*.part"))


def test_the_retry_window_restarts_whenever_the_coordinator_is_reached(live_url: str) -> None:
    # Prepare: a coordinator that takes the request and drops the connection again and again (as
    # one restarted many times does), for about twice the retry window
    proxy = FaultProxy(int(live_url.rsplit(":", 1)[1]))
    drops = proxy.add(Rule("GET", "/public-set", times=12, drop_after=0))
    retry = RetryPolicy(retry_for_s=1.0, initial_s=0.15, max_backoff_s=0.2)
    with httpx.Client(base_url=proxy.url) as http:
        federation = create_federation(http, rounds=1)
        client = enrolled(http, federation, retry=retry)

        # Execute
        started = time.monotonic()
        manifest = client.public_set()
        elapsed = time.monotonic() - started
    proxy.close()

    # Assert: it outlasted its window, because every attempt reached the coordinator
    assert drops.applied == 12 and elapsed > 1.5
    assert manifest.size == 24
