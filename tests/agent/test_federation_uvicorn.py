"""Three `creamfl-agent run` processes work a 2-round federation served by `creamfl-coordinator serve`."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.agent.helpers import (
    FAST,
    MODALITIES,
    agent_command,
    spawn_agent,
    stored_reports,
    stored_uploads,
    wait_for_clients,
)
from tests.coordinator.helpers import ADMIN, API, create_federation, round_detail, start
from tests.coordinator.servers import coordinator_process


def test_agent_processes_complete_a_two_round_federation_over_real_http(tmp_path: Path) -> None:
    # Prepare
    with coordinator_process(tmp_path / "data", **FAST) as coordinator, coordinator.http() as http:
        federation = create_federation(http, rounds=2)
        agents = {
            m: spawn_agent(agent_command(coordinator.url, federation, m, tmp_path / m), tmp_path / f"{m}.log")
            for m in MODALITIES
        }
        clients = wait_for_clients(http, federation["id"], 3, timeout=120)

        # Execute
        start(http, federation["id"])
        codes = {m: process.wait(timeout=240) for m, process in agents.items()}

        # Assert
        logs = {m: (tmp_path / f"{m}.log").read_text() for m in MODALITIES}
        assert codes == dict.fromkeys(MODALITIES, 0), logs
        summary = http.get(f"{API}/federations/{federation['id']}", headers=ADMIN).json()
        assert summary["state"] == "completed" and summary["rounds_completed"] == 2
        details = [round_detail(http, federation["id"], n) for n in (1, 2)]
    assert all(d["state"] == "completed" and len(d["uploaded"]) == 3 for d in details)
    assert len(stored_uploads(coordinator.database_url)) == 8
    assert len(stored_reports(coordinator.database_url)) == 6
    for modality in MODALITIES:
        assert "federation done" in logs[modality]
        identity = tmp_path / modality / "identity.json"
        assert stat.S_IMODE(identity.stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / modality).stat().st_mode) == 0o700
    assert sorted(c["name"] for c in clients) == [f"agent-{m}" for m in sorted(MODALITIES)]
