"""A whole federation through the API on SQLite and PostgreSQL: rounds run once each, in order."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import torch
from fastapi.testclient import TestClient

from coordinator_service.round_config import round_config
from creamfl import rounds
from creamfl.checkpoint import load_training_state
from creamfl.data.builtin import BuiltinSpec
from shared_schemas.federation import FederationCreate
from tests.coordinator.helpers import (
    ADMIN,
    API,
    ROUND_STATES,
    create_federation,
    enroll_mix,
    next_task,
    payload,
    put_payload,
    round_detail,
    run_round,
    start,
    upload_all,
    wait_for_round,
)


def test_two_round_federation_completes_with_metrics(client: TestClient) -> None:
    # Prepare
    federation = create_federation(client, rounds=2)
    clients = enroll_mix(client, federation)
    start(client, federation["id"])

    # Execute
    rounds = [run_round(client, federation["id"], clients, number) for number in (1, 2)]

    # Assert
    for detail in rounds:
        assert detail["state"] == "completed", detail
        assert [t["state"] for t in detail["transitions"]] == ROUND_STATES
        assert detail["metrics"]["rsum"] == detail["metrics"]["i2t_r1"] + detail["metrics"]["t2i_r1"]
        assert sorted(detail["uploaded"]) == sorted(c.id for c in clients)
        assert set(detail["weights"]) == {"image", "text"}
        assert len(detail["weights"]["image"]["clients"]) == 2  # image client + image+text client
        assert detail["bytes_up"] > 0 and detail["bytes_down"] == 0  # no global rep was downloaded
    summary = client.get(f"{API}/federations/{federation['id']}", headers=ADMIN).json()
    assert summary["state"] == "completed"
    assert summary["rounds_completed"] == 2
    assert summary["best_rsum"] == max(r["metrics"]["rsum"] for r in rounds)
    assert next_task(client, federation["id"], clients[0], wait=0)["kind"] == "done"
    jobs = client.get(f"{API}/jobs", headers=ADMIN).json()
    assert sorted((j["round"], j["kind"]) for j in jobs) == sorted(
        (r, k) for r in (1, 2) for k in ("publish", "aggregate", "train", "evaluate")
    )
    assert all(j["state"] == "done" and j["attempts"] == 1 for j in jobs)


def test_best_checkpoint_downloads_and_reproduces_the_best_rsum(client: TestClient) -> None:
    # Prepare
    federation = create_federation(client, rounds=2)
    clients = enroll_mix(client, federation)
    start(client, federation["id"])
    for number in (1, 2):
        run_round(client, federation["id"], clients, number)
    summary = client.get(f"{API}/federations/{federation['id']}", headers=ADMIN).json()

    # Execute
    response = client.get(f"{API}/federations/{federation['id']}/checkpoints/best", headers=ADMIN)

    # Assert: the file is the recorded checkpoint, and a fresh server loaded from it scores the best rsum again
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == summary["best_checkpoint"]
    config = FederationCreate.model_validate(summary["config"])
    server = rounds.new_server(replace(round_config(config), seed=123), device="cpu")
    load_training_state(server.model, server.optimizer, response.content)
    spec = BuiltinSpec(
        seed=config.public_set.seed, public_size=config.public_set.size, test_size=config.public_set.test_size
    )
    data = rounds.builtin_server_data(spec, server.tokenizer)
    metrics = rounds.evaluate(server, data.evaluation, device=torch.device("cpu"))
    assert metrics.rsum == summary["best_rsum"]


def test_checkpoint_before_any_round_is_a_404(client: TestClient) -> None:
    federation = create_federation(client)

    response = client.get(f"{API}/federations/{federation['id']}/checkpoints/latest", headers=ADMIN)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_checkpoint_downloads_as_a_named_file_with_etag_and_range(client: TestClient) -> None:
    # Prepare
    federation = create_federation(client, rounds=1)
    clients = enroll_mix(client, federation)
    start(client, federation["id"])
    run_round(client, federation["id"], clients, 1)
    url = f"{API}/federations/{federation['id']}/checkpoints/latest"
    sha = client.get(f"{API}/federations/{federation['id']}", headers=ADMIN).json()["latest_checkpoint"]

    # Execute
    full = client.get(url, headers=ADMIN)
    cached = client.get(url, headers={**ADMIN, "If-None-Match": f'"{sha}"'})
    part = client.get(url, headers={**ADMIN, "Range": "bytes=-100"})
    outside = client.get(url, headers={**ADMIN, "Range": f"bytes={len(full.content)}-"})

    # Assert
    assert full.status_code == 200 and hashlib.sha256(full.content).hexdigest() == sha
    assert full.headers["etag"] == f'"{sha}"' and full.headers["x-content-sha256"] == sha
    assert full.headers["content-length"] == str(len(full.content))
    assert full.headers["content-disposition"] == f'attachment; filename="{federation["id"]}-latest.safetensors"'
    assert cached.status_code == 304
    size = len(full.content)
    assert part.status_code == 206 and part.content == full.content[-100:]
    assert part.headers["content-range"] == f"bytes {size - 100}-{size - 1}/{size}"
    assert outside.status_code == 416 and outside.json()["error"]["code"] == "range_not_satisfiable"


def test_downloads_count_towards_the_round_and_support_etag_and_range(client: TestClient) -> None:
    # Prepare
    federation = create_federation(client, rounds=1)
    clients = enroll_mix(client, federation)
    start(client, federation["id"])
    task = next_task(client, federation["id"], clients[0])
    url = task["global_urls"]["text"]

    # Execute
    full = client.get(url, headers=clients[0].headers)
    cached = client.get(url, headers={**clients[0].headers, "If-None-Match": full.headers["etag"]})
    part = client.get(url, headers={**clients[0].headers, "Range": "bytes=10-", "If-Range": full.headers["etag"]})
    # If-Range names other content: the client's part is useless, so the whole file comes back.
    stale_part = client.get(url, headers={**clients[0].headers, "Range": "bytes=10-", "If-Range": '"other"'})

    # Assert
    size = len(full.content)
    assert full.status_code == 200
    assert full.headers["etag"] == f'"{task["global_sha256"]["text"]}"'
    assert (full.headers["accept-ranges"], full.headers["content-length"]) == ("bytes", str(size))
    assert hashlib.sha256(full.content).hexdigest() == task["global_sha256"]["text"]
    assert cached.status_code == 304
    assert part.status_code == 206 and part.content == full.content[10:]
    assert part.headers["content-range"] == f"bytes 10-{size - 1}/{size}"
    assert stale_part.status_code == 200 and stale_part.content == full.content
    detail = client.get(f"{API}/federations/{federation['id']}/rounds/1", headers=ADMIN).json()
    assert detail["bytes_down"] == len(full.content)


def test_revoking_the_last_missing_client_closes_the_round(client: TestClient) -> None:
    # Prepare: three selected clients, two of them uploaded
    federation = create_federation(client, rounds=1)
    img, txt, mm = enroll_mix(client, federation)
    start(client, federation["id"])
    for position, enrolled in enumerate((img, txt)):
        upload_all(client, next_task(client, federation["id"], enrolled), enrolled, seed=position)
    assert round_detail(client, federation["id"], 1)["state"] == "open"

    # Execute
    response = client.post(f"{API}/federations/{federation['id']}/clients/{mm.id}/revoke", headers=ADMIN)

    # Assert: the round no longer waits for the revoked client; it aggregates the two uploads
    assert response.status_code == 200 and response.json()["status"] == "revoked"
    detail = wait_for_round(client, federation["id"], 1, ("completed", "failed"))
    assert detail["state"] == "completed"
    assert detail["transitions"][2] == {
        "state": "aggregating",
        "at": detail["transitions"][2]["at"],
        "reason": "all selected clients uploaded",
    }
    assert sorted(detail["uploaded"]) == sorted([img.id, txt.id])
    assert client.get(f"{API}/federations/{federation['id']}/tasks/next", headers=mm.headers).status_code == 403


def test_a_stopped_federation_takes_no_uploads(client: TestClient) -> None:
    # Prepare: a client got its task, then the admin stopped the federation
    federation = create_federation(client, rounds=1)
    img, *_ = enroll_mix(client, federation)
    start(client, federation["id"])
    task = next_task(client, federation["id"], img)
    assert client.post(f"{API}/federations/{federation['id']}/stop", headers=ADMIN).status_code == 200

    # Execute
    response = put_payload(client, task["upload_urls"]["image"], img, payload(len(task["subset"]), 16, "image"))

    # Assert
    assert response.status_code == 410
    assert response.json()["error"]["message"] == "the federation is stopped; it takes no uploads"
    assert round_detail(client, federation["id"], 1)["uploaded"] == {}
