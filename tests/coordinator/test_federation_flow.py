"""A whole federation through the API on SQLite and PostgreSQL: rounds run once each, in order."""

from __future__ import annotations

import hashlib

from fastapi.testclient import TestClient

from tests.coordinator.helpers import ADMIN, API, create_federation, enroll_mix, next_task, run_round, start

ROUND_STATES = ["pending", "open", "aggregating", "training", "evaluating", "completed"]


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
    part = client.get(url, headers={**clients[0].headers, "Range": "bytes=10-"})

    # Assert
    assert full.status_code == 200
    assert full.headers["etag"] == f'"{task["global_sha256"]["text"]}"'
    assert hashlib.sha256(full.content).hexdigest() == task["global_sha256"]["text"]
    assert cached.status_code == 304
    assert part.status_code == 206 and part.content == full.content[10:]
    detail = client.get(f"{API}/federations/{federation['id']}/rounds/1", headers=ADMIN).json()
    assert detail["bytes_down"] == len(full.content)
