"""Agents against the real coordinator (in-process) on the federation's data: a trained client
tokenizer (downloaded, the models built on its vocabulary, the [UNK] share reported every round), and
a registered dataset as the public set (its shards downloaded into the public cache)."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient

from client_agent.public_files import TOKENIZER_SUFFIX, shard_name, tokenizer_name
from coordinator_service.app import create_app
from creamfl.data.builtin import BuiltinSpec, builtin_split
from creamfl.data.samples import write_karpathy
from creamfl.tokenizers import load_tokenizer
from tests.agent.helpers import (
    FAST,
    agent_settings,
    in_process_http,
    start_agent,
    stored_reports,
    wait_for_clients,
)
from tests.coordinator.helpers import ADMIN, API, create_federation, fast_settings, round_detail, start
from tests.coordinator.test_federation_datasets import register


def test_agents_train_with_the_federation_tokenizer_and_report_their_unknown_share(
    app_client: TestClient, database_url: str, tmp_path: Path
) -> None:
    # Prepare
    federation = create_federation(app_client, rounds=1, tokenizer="trained:120")
    http = in_process_http(app_client)
    agents = {
        modality: start_agent(agent_settings("http://testserver", federation, modality, tmp_path / modality), http)
        for modality in ("text", "image")
    }
    clients = {c["name"]: c["id"] for c in wait_for_clients(app_client, federation["id"], 2)}

    # Execute
    start(app_client, federation["id"])
    codes = [agent.join(timeout=180) for agent in agents.values()]

    # Assert
    assert codes == [0, 0]
    (downloaded,) = (tmp_path / "text" / "public").glob(f"*{TOKENIZER_SUFFIX}")
    tokenizer = load_tokenizer("trained:120", downloaded.read_text())
    record = json.loads((tmp_path / "text" / "state.json").read_text())
    assert record["model"]["vocab_size"] == tokenizer.vocab_size != load_tokenizer("builtin-words", None).vocab_size
    reports = stored_reports(database_url)
    text_metrics, image_metrics = reports[(1, clients["agent-text"])], reports[(1, clients["agent-image"])]
    assert 0.0 <= text_metrics["unk_share"] <= 0.05  # trained on the built-in captions, it knows their words
    assert "unk_share" not in image_metrics


def test_agents_download_a_registered_public_set_and_train_on_it(database_url: str, tmp_path: Path) -> None:
    # Prepare: a Karpathy file registered as two datasets, the public set and the evaluation set
    sources = tmp_path / "sources"
    scenes = BuiltinSpec(seed=3, public_size=20, test_size=10)
    karpathy = write_karpathy(
        sources / "flickr", {"train": builtin_split(scenes, "public"), "test": builtin_split(scenes, "test")}
    )
    settings = fast_settings(tmp_path / "data", database_url, dataset_roots=[sources], **FAST)
    with TestClient(create_app(settings)) as app_client:
        ids = {
            split: register(app_client, split, f"karpathy:{karpathy.path}?images={karpathy.images}&split={split}")
            for split in ("train", "test")
        }
        public = {"dataset": ids["train"], "image_size": 24}
        federation = create_federation(
            app_client, rounds=1, public_set=public, evaluation_set={"dataset": ids["test"]}, tokenizer="trained:150"
        )
        http = in_process_http(app_client)
        agents = [
            start_agent(agent_settings("http://testserver", federation, m, tmp_path / m), http)
            for m in ("text", "multimodal")
        ]
        clients = wait_for_clients(app_client, federation["id"], 2)

        # Execute
        start(app_client, federation["id"])
        codes = [agent.join(timeout=180) for agent in agents]

        # Assert
        assert codes == [0, 0]
        assert round_detail(app_client, federation["id"], 1)["state"] == "completed"
        dataset = app_client.get(f"{API}/datasets/{ids['train']}", headers=ADMIN).json()
        manifest = app_client.get(
            f"{API}/federations/{federation['id']}/public-set",
            headers={"Authorization": f"Bearer {agents[0].agent.client.token}"},
        ).json()
    cached = {shard_name(shard["sha256"]) for shard in dataset["shards"]} | {
        tokenizer_name(manifest["tokenizer"]["sha256"])
    }
    for modality in ("text", "multimodal"):
        assert {p.name for p in (tmp_path / modality / "public").iterdir()} == cached
    reports = stored_reports(database_url)
    assert all("unk_share" in reports[(1, client["id"])] for client in clients)
