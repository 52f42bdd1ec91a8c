"""A round's detail says what each client sent and received (``traffic``), on SQLite and PostgreSQL:
the demo's communication table per client per round is read from it."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.coordinator.helpers import (
    create_federation,
    enroll_mix,
    next_task,
    payload,
    put_payload,
    round_detail,
    start,
)


def test_traffic_counts_each_clients_uploads_and_full_downloads(client: TestClient) -> None:
    # Prepare: three clients selected; the image+text one downloads both globals (one twice, one in part)
    federation = create_federation(client, rounds=1)
    image, text, multimodal = enroll_mix(client, federation)
    start(client, federation["id"])
    task = next_task(client, federation["id"], multimodal)
    rows, dim = len(task["subset"]), task["embed_dim"]

    # Execute
    downloads = [client.get(task["global_urls"][m], headers=multimodal.headers) for m in ("image", "text")]
    client.get(task["global_urls"]["text"], headers=multimodal.headers)  # a repeat counts again
    client.get(task["global_urls"]["text"], headers={**multimodal.headers, "Range": "bytes=10-"})  # a part: no
    bodies = {m: payload(rows, dim, m, seed=i) for i, m in enumerate(("image", "text"))}
    for modality, body in bodies.items():
        response = put_payload(client, task["upload_urls"][modality], multimodal, body)
        assert response.status_code == 201, response.text
    text_task = next_task(client, federation["id"], text)
    text_body = payload(rows, dim, "text", seed=7)
    assert put_payload(client, text_task["upload_urls"]["text"], text, text_body).status_code == 201
    detail = round_detail(client, federation["id"], 1)

    # Assert
    traffic = detail["traffic"]
    assert traffic[multimodal.id] == {
        "up": sum(len(b) for b in bodies.values()),
        "down": sum(len(d.content) for d in downloads) + len(downloads[1].content),
    }
    assert traffic[text.id] == {"up": len(text_body), "down": 0}
    assert traffic[image.id] == {"up": 0, "down": 0}  # selected, nothing sent or received yet
    assert detail["bytes_up"] == sum(t["up"] for t in traffic.values())
    assert detail["bytes_down"] == sum(t["down"] for t in traffic.values())
    assert list(traffic) == sorted(traffic)
