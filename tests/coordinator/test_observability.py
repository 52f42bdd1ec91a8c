"""Liveness, readiness and Prometheus metrics of the coordinator."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from coordinator_service.db.engine import make_engine, make_sessionmaker
from tests.coordinator.helpers import create_federation, enroll_mix, run_round, start


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    selector = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(selector) + r"\}" if labels else "") + r" ([0-9.e+-]+)$"
    found = re.search(pattern, text, flags=re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_metrics_count_rounds_uploads_jobs_and_requests(client: TestClient) -> None:
    # Prepare: counters are process-wide, so the test compares before and after
    before = client.get("/metrics").text
    federation = create_federation(client, rounds=1)
    clients = enroll_mix(client, federation)
    start(client, federation["id"])

    # Execute
    detail = run_round(client, federation["id"], clients, 1)
    after = client.get("/metrics")

    # Assert
    assert after.status_code == 200 and after.headers["content-type"].startswith("text/plain")
    text = after.text
    assert metric(text, "creamfl_rounds", state="completed") >= 1
    assert metric(text, "creamfl_rounds", state="open") == 0
    uploads = sum(
        metric(text, "creamfl_uploads_total", modality=m, outcome="created")
        - metric(before, "creamfl_uploads_total", modality=m, outcome="created")
        for m in ("image", "text")
    )
    assert uploads == 4  # image, text, and the multimodal client's two
    uploaded = metric(text, "creamfl_upload_bytes_total") - metric(before, "creamfl_upload_bytes_total")
    assert uploaded == detail["bytes_up"]
    for kind in ("publish", "aggregate", "train", "evaluate"):
        done = metric(text, "creamfl_job_seconds_count", kind=kind) - metric(
            before, "creamfl_job_seconds_count", kind=kind
        )
        assert done == 1, kind
    route = "/api/v1/federations/{federation_id}/rounds/{number}/uploads/{modality}"
    assert metric(text, "creamfl_http_request_seconds_count", method="PUT", route=route, status="201") >= 4


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/api/v1/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_readiness_fails_with_a_json_503_when_the_database_is_unreachable(client: TestClient) -> None:
    # Prepare: point the running app at a database nobody listens for
    services = client.app.state.services  # type: ignore[attr-defined]
    services.db = make_sessionmaker(make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2"))

    # Execute
    response = client.get("/readyz")

    # Assert
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "not_ready"
    assert client.get("/healthz").status_code == 200  # alive, just not ready
