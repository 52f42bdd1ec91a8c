"""The same uploads give the same round, whatever order they arrive in (SQLite and PostgreSQL).

The ensemble sums the clients' representations in float; summed in arrival order, two runs of the
same federation drift apart after a round whose uploads raced differently (the demo saw it).
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.coordinator.helpers import (
    ADMIN,
    API,
    EnrolledClient,
    create_federation,
    enroll,
    next_task,
    payload,
    put_payload,
    wait_for_round,
)

CLIENTS = [  # name, modalities, model: four text uploads and two image uploads per round
    ("img", ["image"], "image-cnn-s"),
    ("mm", ["image", "text"], "dual-s"),
    ("t1", ["text"], "text-gru-s"),
    ("t2", ["text"], "text-gru-s"),
    ("t3", ["text"], "text-gru-s"),
]


def run_one_round(client: TestClient, order: list[str]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """One round whose clients upload in ``order``; the round, the federation, and the weights by client name."""
    federation = create_federation(client, rounds=1, clients_per_round=len(CLIENTS))
    enrolled: dict[str, EnrolledClient] = {
        name: enroll(client, federation, name, m, model) for name, m, model in CLIENTS
    }
    client.post(f"{API}/federations/{federation['id']}/start", headers=ADMIN)
    tasks = {name: next_task(client, federation["id"], enrolled[name]) for name in enrolled}
    for name in order:
        task = tasks[name]
        for modality, url in sorted(task["upload_urls"].items()):
            body = payload(len(task["subset"]), task["embed_dim"], modality, seed=sum(map(ord, name + modality)))
            assert put_payload(client, url, enrolled[name], body).status_code == 201
    detail = wait_for_round(client, federation["id"], 1, ("completed", "failed"))
    summary = client.get(f"{API}/federations/{federation['id']}", headers=ADMIN).json()
    by_id = {c.id: name for name, c in enrolled.items()}
    weights = {
        modality: {
            "mean_weight": dict(zip([by_id[c] for c in stats["clients"]], stats["mean_weight"], strict=True)),
            "order": [by_id[c] for c in stats["clients"]],
            "max_weight": stats["max_weight"],
            "entropy": stats["entropy"],
        }
        for modality, stats in detail["weights"].items()
    }
    return detail, summary, weights


def test_the_round_does_not_depend_on_the_order_uploads_arrive_in(client: TestClient) -> None:
    # Prepare
    names = [name for name, _, _ in CLIENTS]

    # Execute
    first, first_federation, first_weights = run_one_round(client, names)
    second, second_federation, second_weights = run_one_round(client, names[::-1])

    # Assert: the same aggregates, so the same distilled server, bit for bit
    assert first["state"] == second["state"] == "completed"
    assert first_federation["latest_checkpoint"] == second_federation["latest_checkpoint"]
    assert first_weights == second_weights
    assert first_weights["text"]["order"] == ["mm", "t1", "t2", "t3"]  # by name, not by arrival
    assert first["metrics"] == second["metrics"]
