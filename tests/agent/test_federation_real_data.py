"""The paper's setting on real formats, end to end over real HTTP: a Karpathy-format public set and
evaluation set registered on `creamfl-coordinator serve`, an image agent on CIFAR-100 pickles, a text
agent on an AG_NEWS CSV and an image+text agent on Karpathy pairs (`creamfl-agent run` processes),
a trained client tokenizer; and the same scenario through `creamfl simulate`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from creamfl.data.samples import SampleScenario, write_sample_scenario
from tests.agent.helpers import FAST, agent_command, spawn_agent, stored_reports, wait_for_clients
from tests.coordinator.helpers import ADMIN, API, Http, create_federation, round_detail, start
from tests.coordinator.servers import coordinator_process

ROUNDS = 2


def write_scenario(root: Path) -> SampleScenario:
    return write_sample_scenario(root, seed=11, public=48, test=24, private=80, news=80)


def register(http: Http, name: str, source: str, timeout: float = 120.0) -> str:
    response = http.post(f"{API}/datasets", json={"name": name, "source": source}, headers=ADMIN)
    assert response.status_code == 202, response.text
    dataset_id: str = response.json()["id"]
    deadline = time.monotonic() + timeout
    while (state := http.get(f"{API}/datasets/{dataset_id}", headers=ADMIN).json())["state"] != "ready":
        assert state["state"] == "registering" and time.monotonic() < deadline, state
        time.sleep(0.1)
    return dataset_id


def test_agents_on_real_formats_complete_a_federation_on_registered_datasets(tmp_path: Path) -> None:
    # Prepare: the files, a coordinator that may read them, the two datasets, the federation
    scenario = write_scenario(tmp_path / "sources")
    settings = {**FAST, "dataset_roots": str((tmp_path / "sources").resolve())}
    with coordinator_process(tmp_path / "data", **settings) as coordinator, coordinator.http() as http:
        public = register(http, "coco-train", scenario.public)
        evaluation = register(http, "coco-test", scenario.test)
        federation = create_federation(
            http,
            rounds=ROUNDS,
            public_set={"dataset": public},
            evaluation_set={"dataset": evaluation},
            public_subset_size=32,
            tokenizer="trained:400",
        )
        agents = {
            modality: spawn_agent(
                agent_command(coordinator.url, federation, modality, tmp_path / modality, data=spec),
                tmp_path / f"{modality}.log",
            )
            for modality, spec in scenario.clients.items()
        }
        clients = wait_for_clients(http, federation["id"], 3, timeout=180)

        # Execute
        start(http, federation["id"])
        codes = {modality: process.wait(timeout=400) for modality, process in agents.items()}

        # Assert: every agent finished, every round completed with all three uploading, scored on the test split
        logs = {modality: (tmp_path / f"{modality}.log").read_text() for modality in agents}
        assert codes == dict.fromkeys(agents, 0), logs
        summary = http.get(f"{API}/federations/{federation['id']}", headers=ADMIN).json()
        assert summary["state"] == "completed" and summary["rounds_completed"] == ROUNDS, summary
        details = [round_detail(http, federation["id"], number) for number in range(1, ROUNDS + 1)]
    assert all(d["state"] == "completed" and len(d["uploaded"]) == 3 for d in details), details
    assert all(d["metrics"]["rsum"] >= 0 for d in details)
    # The agents fetched the shards (not the built-in generator) and read text with the trained tokenizer
    for modality in agents:
        assert "public set" in logs[modality] and "federation done" in logs[modality]
    reports = stored_reports(coordinator.database_url)
    names = {c["id"]: c["name"] for c in clients}
    unk = {names[client]: metrics.get("unk_share") for (_, client), metrics in reports.items()}
    assert unk["agent-text"] is not None and unk["agent-text"] < 0.05, unk
    assert unk["agent-multimodal"] is not None and unk["agent-multimodal"] < 0.05, unk


def test_the_same_scenario_runs_in_the_simulator(tmp_path: Path) -> None:
    # Prepare
    scenario = write_scenario(tmp_path / "sources")
    clients = [arg for modality, spec in scenario.clients.items() for arg in ("--client", f"{modality}={spec}")]
    output = tmp_path / "history.json"

    # Execute
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "creamfl.cli",
            "simulate",
            "--public",
            scenario.public,
            "--test",
            scenario.test,
            *clients,
            "--tokenizer",
            "trained:400",
            "--rounds",
            str(ROUNDS),
            "--embed-dim",
            "16",
            "--public-subset",
            "32",
            "--json",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )

    # Assert
    assert completed.returncode == 0, completed.stdout + completed.stderr
    history: dict[str, Any] = json.loads(output.read_text())
    rounds = history["rounds"]
    assert len(rounds) == ROUNDS and all(r["rsum"] >= 0 for r in rounds), history
