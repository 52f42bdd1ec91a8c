"""The round engine's promise: a federation run through the services (coordinator + agents talking
HTTP to the ASGI app, the worker running the jobs) computes what the simulator computes.

Same built-in data, 2 rounds, 3 clients of different modalities. Both paths call the same engine
steps on the same inputs, in float16 payloads both ways, with every random stream derived from
(seed, round, purpose), and one torch thread everywhere (the coordinator's settings pin it for
the threads it starts, the agents' for theirs, and the test for the simulator's). So the
tolerance is exact: any difference means one path computes something else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

from coordinator_service.demo.config import federation_config
from creamfl.participants import client_layout
from creamfl.sim_config import SimulationConfig
from creamfl.simulation import run_simulation
from tests.agent.helpers import agent_settings, in_process_http, start_agent, wait_for_clients
from tests.coordinator.helpers import ADMIN, API, round_detail, start

SCENARIO = SimulationConfig(
    rounds=2,
    seed=3,
    image_clients=1,
    text_clients=1,
    multimodal_clients=1,
    embed_dim=32,
    public_size=64,
    public_subset=48,
    test_size=48,
    private_per_client=40,
    server_image_widths=(8, 16, 32),
    server_batch_size=16,
    client_batch_size=16,
)


def run_services(app_client: TestClient, tmp_path: Path) -> dict[int, dict[str, Any]]:
    """The scenario as a federation: one agent per simulated client, holding that client's share."""
    body = federation_config(SCENARIO, deadline_s=600)
    response = app_client.post(f"{API}/federations", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    federation = response.json()
    http = in_process_http(app_client)
    total = SCENARIO.total_clients
    agents = [
        start_agent(
            agent_settings(
                "http://testserver",
                federation,
                slot.kind,
                tmp_path / slot.name,
                name=slot.name,
                model=slot.model_spec,
                data=f"builtin:{SCENARIO.seed}:{slot.number}/{total}?samples={SCENARIO.private_per_client}"
                f"&alpha={SCENARIO.dirichlet_alpha}",
                threads=1,
            ),
            http,
        )
        for slot in client_layout(SCENARIO)
    ]
    clients = wait_for_clients(app_client, federation["id"], total)
    start(app_client, federation["id"])
    assert [agent.join(timeout=300) for agent in agents] == [0] * total
    names = {c["id"]: c["name"] for c in clients}
    rounds = {}
    for number in range(1, SCENARIO.rounds + 1):
        detail = round_detail(app_client, federation["id"], number)
        assert detail["state"] == "completed", detail
        rounds[number] = {
            "metrics": detail["metrics"],
            "weights": {
                modality: dict(zip([names[c] for c in stats["clients"]], stats["mean_weight"], strict=True))
                for modality, stats in detail["weights"].items()
            },
        }
    return rounds


@pytest.mark.timeout(900)
def test_the_services_compute_what_the_simulator_computes(app_client: TestClient, tmp_path: Path) -> None:
    # Prepare: the simulator runs in this thread, which set its thread count before the app pinned it
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    # Execute
    try:
        services = run_services(app_client, tmp_path)
        simulation = run_simulation(SCENARIO)
    finally:
        torch.set_num_threads(threads)

    # Assert: every round's metrics, and every client's mean ensemble weight per modality
    for round_result in simulation.rounds:
        number = round_result.round
        assert services[number]["metrics"] == round_result.test.as_dict(), f"round {number}"
        expected = {m: dict(zip(s.clients, s.mean_weight, strict=True)) for m, s in round_result.weights.items()}
        assert services[number]["weights"] == expected, f"round {number}"
    assert {number for number in services} == {1, 2}
