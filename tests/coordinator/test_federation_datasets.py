"""Federations on registered datasets: the config resolved at creation, the client tokenizer, the
public set's manifest, shards and tokenizer served to clients (ETag, Range), the evaluation set
never, and a round run on the shards."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from coordinator_service.app import create_app
from coordinator_service.db.engine import make_engine, make_sessionmaker, transaction
from coordinator_service.db.models import Dataset, utcnow
from creamfl.data.builtin import BuiltinSpec, builtin_split
from creamfl.data.samples import write_karpathy
from creamfl.data.shards import Shard, dataset_sha256
from creamfl.tokenizers import load_tokenizer
from tests.coordinator.helpers import (
    ADMIN,
    API,
    assert_error,
    create_federation,
    enroll,
    fast_settings,
    run_round,
    start,
)

PUBLIC_ITEMS, TEST_ITEMS = 20, 10


@pytest.fixture
def coordinator(db_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """A coordinator allowed to read ``tmp_path/sources``, with a Karpathy fixture registered as two
    datasets: its train split (the public set) and its test split (the evaluation set)."""
    sources = tmp_path / "sources"
    spec = BuiltinSpec(seed=3, public_size=PUBLIC_ITEMS, test_size=TEST_ITEMS)
    files = write_karpathy(
        sources / "flickr", {"train": builtin_split(spec, "public"), "test": builtin_split(spec, "test")}
    )
    settings = fast_settings(tmp_path / "data", db_url, dataset_roots=[sources])
    with TestClient(create_app(settings)) as client:
        ids = {
            split: register(client, f"flickr-{split}", f"karpathy:{files.path}?images={files.images}&split={split}")
            for split in ("train", "test")
        }
        yield client, ids


def register(client: TestClient, name: str, source: str) -> str:
    response = client.post(f"{API}/datasets", json={"name": name, "source": source}, headers=ADMIN)
    assert response.status_code == 202, response.text
    dataset_id: str = response.json()["id"]
    wait_ready(client, dataset_id)
    return dataset_id


def wait_ready(client: TestClient, dataset_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        dataset: dict[str, Any] = client.get(f"{API}/datasets/{dataset_id}", headers=ADMIN).json()
        if dataset["state"] == "ready":
            return dataset
        assert dataset["state"] == "registering" and time.monotonic() < deadline, dataset
        time.sleep(0.05)


def on_datasets(ids: dict[str, str], **overrides: Any) -> dict[str, Any]:
    return {
        "public_set": {"dataset": ids["train"], "image_size": 16},
        "evaluation_set": {"dataset": ids["test"]},
        "tokenizer": "trained:300",
        **overrides,
    }


def test_a_federation_on_datasets_resolves_them_and_serves_the_public_set(
    coordinator: tuple[TestClient, dict[str, str]],
) -> None:
    # Prepare
    client, ids = coordinator
    public = client.get(f"{API}/datasets/{ids['train']}", headers=ADMIN).json()

    # Execute
    federation = create_federation(client, rounds=1, **on_datasets(ids))
    member = enroll(client, federation, "pairs", ["image", "text"], "dual-s")
    base = f"{API}/federations/{federation['id']}/public-set"
    manifest = client.get(base, headers=member.headers).json()

    # Assert: the config carries the datasets' sizes and hashes; the manifest lists the shards
    config = federation["config"]
    assert config["public_set"]["size"] == PUBLIC_ITEMS and config["public_set"]["sha256"] == public["sha256"]
    assert config["evaluation_set"]["size"] == TEST_ITEMS
    assert manifest["kind"] == "dataset" and manifest["size"] == PUBLIC_ITEMS and manifest["image_size"] == 16
    assert [s["sha256"] for s in manifest["shards"]] == [s["sha256"] for s in public["shards"]]
    assert manifest["sha256"] == dataset_sha256([s["sha256"] for s in manifest["shards"]])
    # Every shard downloads whole and checks out; its items are the public split's
    items = 0
    for shard in manifest["shards"]:
        body = client.get(f"{base}/shards/{shard['sha256']}", headers=member.headers)
        assert body.status_code == 200 and hashlib.sha256(body.content).hexdigest() == shard["sha256"]
        assert body.headers["etag"] == f'"{shard["sha256"]}"'
        items += len(Shard.from_bytes(body.content))
    assert items == PUBLIC_ITEMS
    # The tokenizer was trained on the public captions and travels as JSON
    tokenizer_ref = manifest["tokenizer"]
    assert tokenizer_ref["choice"] == "trained:300" and tokenizer_ref["sha256"]
    tokenizer_body = client.get(f"{base}/tokenizer", headers=member.headers)
    assert hashlib.sha256(tokenizer_body.content).hexdigest() == tokenizer_ref["sha256"]
    tokenizer = load_tokenizer("trained:300", tokenizer_body.text)
    assert tokenizer.vocab_size <= 300


def test_a_shard_download_resumes_with_a_range(coordinator: tuple[TestClient, dict[str, str]]) -> None:
    # Prepare
    client, ids = coordinator
    federation = create_federation(client, rounds=1, **on_datasets(ids))
    member = enroll(client, federation, "pairs", ["image", "text"], "dual-s")
    base = f"{API}/federations/{federation['id']}/public-set"
    shard = client.get(base, headers=member.headers).json()["shards"][0]
    url, etag = f"{base}/shards/{shard['sha256']}", f'"{shard["sha256"]}"'
    whole = client.get(url, headers=member.headers).content
    cut = len(whole) // 3

    # Execute: the first third, then the rest with Range and If-Range; then a conditional GET
    rest = client.get(url, headers={**member.headers, "Range": f"bytes={cut}-", "If-Range": etag})
    unchanged = client.get(url, headers={**member.headers, "If-None-Match": etag})

    # Assert
    assert rest.status_code == 206 and rest.headers["content-range"] == f"bytes {cut}-{len(whole) - 1}/{len(whole)}"
    assert whole[:cut] + rest.content == whole
    assert unchanged.status_code == 304


def test_no_client_route_reveals_the_evaluation_set(coordinator: tuple[TestClient, dict[str, str]]) -> None:
    # Prepare: a client of a federation whose evaluation set is the test split
    client, ids = coordinator
    federation = create_federation(client, rounds=1, **on_datasets(ids))
    member = enroll(client, federation, "pairs", ["image", "text"], "dual-s")
    evaluation = client.get(f"{API}/datasets/{ids['test']}", headers=ADMIN).json()
    base = f"{API}/federations/{federation['id']}"

    # Execute + Assert: the evaluation shards are not public-set shards; the dataset routes are the admin's
    for shard in evaluation["shards"]:
        assert_error(client.get(f"{base}/public-set/shards/{shard['sha256']}", headers=member.headers), 404)
    for path in ("/datasets", f"/datasets/{ids['test']}"):
        assert client.get(f"{API}{path}", headers=member.headers).status_code in (401, 403)
    assert client.delete(f"{API}/datasets/{ids['test']}", headers=member.headers).status_code in (401, 403)
    # Nor the federation's config, which names the evaluation set
    assert client.get(base, headers=member.headers).status_code in (401, 403)


def test_a_round_runs_on_the_shards(coordinator: tuple[TestClient, dict[str, str]]) -> None:
    # Prepare
    client, ids = coordinator
    federation = create_federation(client, rounds=1, **on_datasets(ids, public_subset_size=12))
    members = [enroll(client, federation, "pairs", ["image", "text"], "dual-s")]
    start(client, federation["id"])

    # Execute
    detail = run_round(client, federation["id"], members, 1)

    # Assert: evaluated on the test split's 10 images
    assert detail["state"] == "completed", detail
    assert set(detail["metrics"]) >= {"i2t_r1", "t2i_r10", "rsum"}
    assert "r1_sum" not in detail["metrics"]  # the 1K protocol is for 5,000-image sets


@pytest.mark.parametrize(
    ("overrides", "status", "message"),
    [
        ({"evaluation_set": None}, 422, "evaluation_set"),
        ({"tokenizer": "builtin-words"}, 422, "builtin-words"),
        ({"public_subset_size": PUBLIC_ITEMS + 1}, 422, "public_subset_size"),
        ({"public_set": {"dataset": "no-such-dataset"}}, 422, "no dataset"),
        ({"public_set": {"dataset": "TRAIN", "sha256": "0" * 64}}, 409, "pins"),
        ({"public_set": {"dataset": "TRAIN", "size": 3}}, 409, "pins"),
        ({"tokenizer": "trained:5"}, 422, "tokenizer"),
    ],
)
def test_a_federation_that_does_not_fit_its_datasets_is_refused(
    coordinator: tuple[TestClient, dict[str, str]], overrides: dict[str, Any], status: int, message: str
) -> None:
    # Prepare
    client, ids = coordinator
    if "public_set" in overrides:  # a pinned size or hash of the real public dataset
        dataset = overrides["public_set"]["dataset"].replace("TRAIN", ids["train"])
        overrides = {"public_set": {**overrides["public_set"], "dataset": dataset}}
    config = {"name": "misfit", **on_datasets(ids), **overrides}
    before = client.get(f"{API}/federations", headers=ADMIN).json()

    # Execute
    response = client.post(f"{API}/federations", json=config, headers=ADMIN)

    # Assert: a clear error; nothing created
    error = assert_error(response, status)
    assert message in str(error), error
    assert client.get(f"{API}/federations", headers=ADMIN).json() == before


@pytest.mark.parametrize("state", ["registering", "failed"])
def test_a_dataset_that_is_not_ready_cannot_be_used(
    coordinator: tuple[TestClient, dict[str, str]], db_url: str, state: str
) -> None:
    # Prepare: a dataset another worker is registering (its lease far ahead), or one that failed
    client, ids = coordinator
    engine = make_engine(db_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            session.add(
                Dataset(
                    id="ds-elsewhere",
                    name="elsewhere",
                    source="karpathy:/nowhere.json?images=/nowhere",
                    state=state,
                    failure_reason="image 3 does not decode" if state == "failed" else None,
                    lease_owner="another-worker",
                    lease_expires_at=utcnow() + timedelta(hours=1),
                )
            )
    finally:
        engine.dispose()

    # Execute
    response = client.post(
        f"{API}/federations", json={"name": "early", **on_datasets({**ids, "train": "ds-elsewhere"})}, headers=ADMIN
    )

    # Assert
    error = assert_error(response, 409, "conflict")
    assert state in error["message"]


def test_a_built_in_federation_is_as_before(coordinator: tuple[TestClient, dict[str, str]]) -> None:
    # Prepare
    client, _ = coordinator
    federation = create_federation(client, rounds=1)
    member = enroll(client, federation, "pairs", ["image", "text"], "dual-s")
    base = f"{API}/federations/{federation['id']}/public-set"

    # Execute
    manifest = client.get(base, headers=member.headers).json()

    # Assert: regenerated locally, the built-in words, no tokenizer to download
    assert manifest["kind"] == "builtin" and manifest["shards"] == [] and len(manifest["items"]) == 24
    assert manifest["tokenizer"] == {"choice": "builtin-words", "sha256": None, "size": None}
    assert_error(client.get(f"{base}/tokenizer", headers=member.headers), 404)
