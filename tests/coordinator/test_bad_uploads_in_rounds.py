"""One client can neither end nor buy a federation (issue 11), on SQLite and PostgreSQL.

An upload that decodes to Inf is refused before it is stored and the round completes with the honest
clients; a client that scales its rows gets the weight of the same rows unscaled; an upload whose
stored bytes went bad is left out of the aggregate with the reason, and the round completes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save as st_save
from sqlalchemy import select

from coordinator_service import repositories as repo
from coordinator_service.api.deps import Services
from coordinator_service.artifacts import LocalArtifactStore
from coordinator_service.db.engine import transaction
from coordinator_service.db.models import Upload
from creamfl.payload import encode_payload
from tests.coordinator.helpers import (
    ADMIN,
    API,
    EnrolledClient,
    assert_error,
    create_federation,
    enroll,
    next_task,
    payload,
    put_payload,
    start,
    wait_for_round,
)


def int8_127s_times_3e38(rows: int, dim: int, modality: str) -> bytes:
    """Every value 127 with a finite row scale of 3e38: valid on the wire, Inf once decoded."""
    return st_save(
        {modality: torch.full((rows, dim), 127, dtype=torch.int8), f"{modality}.scale": torch.full((rows,), 3e38)}
    )


def unit_rows(rows: int, dim: int, seed: int) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


def federation_of(http: TestClient, clients: dict[str, str], **overrides: Any) -> tuple[str, dict[str, EnrolledClient]]:
    """A started one-round federation whose clients (name -> modality) are all selected."""
    federation = create_federation(http, rounds=1, clients_per_round=len(clients), **overrides)
    models = {"image": "image-cnn-s", "text": "text-gru-s"}
    enrolled = {name: enroll(http, federation, name, [m], models[m]) for name, m in clients.items()}
    start(http, federation["id"])
    return federation["id"], enrolled


def upload(http: TestClient, task: dict[str, Any], client: EnrolledClient, body: bytes) -> dict[str, Any]:
    (url,) = task["upload_urls"].values()
    response = put_payload(http, url, client, body)
    assert response.status_code == 201, response.text
    uploaded: dict[str, Any] = response.json()
    return uploaded


def test_an_int8_upload_that_decodes_to_inf_is_refused_and_the_round_completes_without_it(client: TestClient) -> None:
    # Prepare: the attacker and two honest clients; the round closes at its deadline with a quorum of two
    federation_id, clients = federation_of(
        client, {"attacker": "image", "img": "image", "txt": "text"}, min_clients=2, round_deadline_s=3
    )
    tasks = {name: next_task(client, federation_id, member) for name, member in clients.items()}
    rows, dim = len(tasks["img"]["subset"]), tasks["img"]["embed_dim"]

    # Execute
    refused = put_payload(
        client, tasks["attacker"]["upload_urls"]["image"], clients["attacker"], int8_127s_times_3e38(rows, dim, "image")
    )
    for seed, name in enumerate(("img", "txt")):
        upload(client, tasks[name], clients[name], payload(rows, dim, clients[name].modalities[0], seed=seed))
    detail = wait_for_round(client, federation_id, 1, ("completed", "failed"))
    federation = client.get(f"{API}/federations/{federation_id}", headers=ADMIN).json()

    # Assert
    error = assert_error(refused, 422, "invalid")
    assert "NaN or Inf" in error["message"], error
    assert detail["state"] == "completed", detail["failure_reason"]
    assert federation["state"] == "completed", federation
    assert set(detail["uploaded"]) == {clients["img"].id, clients["txt"].id}
    assert detail["weights"]["image"]["clients"] == [clients["img"].id]
    assert detail["excluded"] == []


def test_a_client_scaling_its_rows_gets_the_weight_of_the_same_rows_unscaled(client: TestClient) -> None:
    # Prepare: two image clients upload the same directions, one of them scaled 1024 times (exact in float32)
    federation_id, clients = federation_of(client, {"honest": "image", "scaled": "image", "txt": "text"})
    tasks = {name: next_task(client, federation_id, member) for name, member in clients.items()}
    rows, dim = len(tasks["txt"]["subset"]), tasks["txt"]["embed_dim"]
    directions = unit_rows(rows, dim, seed=3)

    # Execute
    upload(client, tasks["honest"], clients["honest"], encode_payload({"image": directions}, dtype="float32"))
    upload(client, tasks["scaled"], clients["scaled"], encode_payload({"image": directions * 1024}, dtype="float32"))
    upload(client, tasks["txt"], clients["txt"], payload(rows, dim, "text", seed=4))
    detail = wait_for_round(client, federation_id, 1, ("completed", "failed"))

    # Assert: the norm bought nothing (without normalising, the scaled client took nearly all the weight)
    assert detail["state"] == "completed", detail["failure_reason"]
    image = detail["weights"]["image"]
    weights = dict(zip(image["clients"], image["mean_weight"], strict=True))
    assert weights == {clients["honest"].id: 0.5, clients["scaled"].id: 0.5}
    assert image["max_weight"] == 0.5


def overwrite_a_byte(services: Services, sha256: str) -> None:
    """Bit rot behind the database's back: the last byte of the stored file changes, and it still parses."""
    assert isinstance(services.store, LocalArtifactStore)
    path = services.store.root / sha256[:2] / sha256
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def store_unvalidated_inf(services: Services, sha256: str) -> None:
    """An upload stored by a coordinator that did not check decoded values yet: its row now names a
    payload that decodes to Inf, put into the store through its interface."""
    with transaction(services.db) as session:
        upload_row = session.scalars(select(Upload).where(Upload.sha256 == sha256)).one()
        body = int8_127s_times_3e38(upload_row.rows, upload_row.dim, upload_row.modality)
        upload_row.sha256 = services.store.put_bytes(body)
        repo.record_artifact(session, sha256=upload_row.sha256, size=len(body), kind="upload")


CORRUPTIONS: dict[str, tuple[Callable[[Services, str], None], str, str]] = {
    # name: (what happens to the victim's stored upload, the victim, what the recorded reason says)
    "bytes overwritten, image": (overwrite_a_byte, "img1", "do not match their sha256"),
    "decodes to Inf, the only text upload": (store_unvalidated_inf, "txt", "NaN or Inf"),
}


@pytest.mark.parametrize("case", CORRUPTIONS, ids=list(CORRUPTIONS))
def test_a_corrupt_stored_upload_is_left_out_with_the_reason_and_the_round_completes(
    client: TestClient, case: str
) -> None:
    # Prepare: the victim uploads first and its stored upload goes bad before the others close the round
    corrupt, victim, reason = CORRUPTIONS[case]
    federation_id, clients = federation_of(client, {"img1": "image", "img2": "image", "txt": "text"})
    tasks = {name: next_task(client, federation_id, member) for name, member in clients.items()}
    rows, dim = len(tasks["txt"]["subset"]), tasks["txt"]["embed_dim"]
    bodies = {
        name: payload(rows, dim, member.modalities[0], seed=seed) for seed, (name, member) in enumerate(clients.items())
    }
    stored = upload(client, tasks[victim], clients[victim], bodies[victim])
    corrupt(client.app.state.services, stored["sha256"])  # type: ignore[attr-defined]

    # Execute
    for name in sorted(set(clients) - {victim}):
        upload(client, tasks[name], clients[name], bodies[name])
    detail = wait_for_round(client, federation_id, 1, ("completed", "failed"))

    # Assert: the victim is left out with why, the others aggregated (by name); no usable upload, no target
    assert detail["state"] == "completed", detail["failure_reason"]
    (excluded,) = detail["excluded"]
    assert excluded["client"] == clients[victim].id and excluded["modality"] == clients[victim].modalities[0]
    assert reason in excluded["reason"], excluded
    aggregated = {m: stats["clients"] for m, stats in detail["weights"].items()}
    by_modality = {"image": ["img1", "img2"], "text": ["txt"]}
    kept = {m: [clients[name].id for name in names if name != victim] for m, names in by_modality.items()}
    assert aggregated == {m: ids for m, ids in kept.items() if ids}
