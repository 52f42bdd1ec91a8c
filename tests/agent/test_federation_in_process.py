"""Three agents (image, text, image+text) work a 2-round federation against the ASGI app in-process."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from tests.agent.data_files import scenes, write_ag_news, write_image_folder, write_karpathy
from tests.agent.helpers import (
    MODALITIES,
    agent_settings,
    in_process_http,
    start_agent,
    stored_reports,
    stored_uploads,
    wait_for_clients,
)
from tests.coordinator.helpers import ADMIN, API, create_federation, round_detail, start


def test_three_agents_complete_a_two_round_federation(
    app_client: TestClient, database_url: str, tmp_path: Path
) -> None:
    # Prepare
    federation = create_federation(app_client, rounds=2)
    http = in_process_http(app_client)
    agents = [
        start_agent(agent_settings("http://testserver", federation, m, tmp_path / m, threads=1), http)
        for m in MODALITIES
    ]
    clients = wait_for_clients(app_client, federation["id"], 3)

    # Execute
    start(app_client, federation["id"])
    codes = [agent.join(timeout=180) for agent in agents]

    # Assert
    assert codes == [0, 0, 0]
    summary = app_client.get(f"{API}/federations/{federation['id']}", headers=ADMIN).json()
    assert summary["state"] == "completed" and summary["rounds_completed"] == 2
    by_name = {c["name"]: c["id"] for c in clients}
    expected = {
        by_name["agent-image"]: ["image"],
        by_name["agent-text"]: ["text"],
        by_name["agent-multimodal"]: ["image", "text"],
    }
    for number in (1, 2):
        detail = round_detail(app_client, federation["id"], number)
        assert detail["state"] == "completed", detail
        assert {k: sorted(v) for k, v in detail["uploaded"].items()} == expected
        assert detail["bytes_down"] > 0  # the agents downloaded the global representations
    uploads = stored_uploads(database_url)
    assert len(uploads) == 8  # 4 uploads (image, text, image + text) per round, each exactly once
    reports = stored_reports(database_url)
    assert sorted(reports) == sorted((n, cid) for n in (1, 2) for cid in by_name.values())
    for metrics in reports.values():
        assert metrics["task_loss"] > 0 and metrics["inter_loss"] > 0 and metrics["intra_loss"] > 0
        assert metrics["train_seconds"] > 0 and metrics["steps"] >= 1
    second_round = [reports[(2, cid)]["rounds_trained"] for cid in by_name.values()]
    assert second_round == [2.0, 2.0, 2.0]  # each agent kept its model from round 1


def test_agents_on_the_real_file_formats_complete_a_round(
    app_client: TestClient, database_url: str, tmp_path: Path
) -> None:
    # Prepare: an image folder, an AG_NEWS CSV, and Karpathy captions with their images
    data = scenes(24)
    folder = write_image_folder(tmp_path / "folder", data)
    news = write_ag_news(tmp_path / "news.csv", data)
    document, images = write_karpathy(tmp_path / "coco", data)
    specs = {
        "image": f"image-folder:{folder}",
        "text": f"ag-news:{news}",
        "multimodal": f"karpathy:{document}?images={images}",
    }
    federation = create_federation(app_client, rounds=1)
    http = in_process_http(app_client)
    agents = [
        start_agent(agent_settings("http://testserver", federation, m, tmp_path / m, data=specs[m]), http)
        for m in MODALITIES
    ]
    wait_for_clients(app_client, federation["id"], 3)

    # Execute
    start(app_client, federation["id"])
    codes = [agent.join(timeout=180) for agent in agents]

    # Assert
    assert codes == [0, 0, 0]
    detail = round_detail(app_client, federation["id"], 1)
    assert detail["state"] == "completed" and len(detail["uploaded"]) == 3
    assert len(stored_uploads(database_url)) == 4
    samples = sorted(m["samples"] for m in stored_reports(database_url).values())
    assert samples == [20.0, 24.0, 24.0]  # karpathy's train split holds 20 of the 24 scenes
