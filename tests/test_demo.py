"""``creamfl-coordinator demo`` end to end, as a user runs it: a subprocess that starts a real coordinator
and six real agent processes, on the tiny preset.

Every test also checks that nothing the demo started outlives it: no process whose command line names
the test's run dir (the coordinator's data dir and every agent's state dir are under it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from coordinator_service.launcher import CoordinatorProcess, free_port

BIN = Path(sys.executable).parent
NAMES = ["image-0", "image-1", "multimodal-0", "multimodal-1", "text-0", "text-1"]
MODELS = {
    "image-0": "image-cnn-s",
    "image-1": "image-cnn-m",
    "text-0": "text-gru-s",
    "text-1": "text-gru-m",
    "multimodal-0": "dual-s",
    "multimodal-1": "dual-m",
}

pytestmark = pytest.mark.slow


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CREAMFL_")}


def processes_naming(text: str) -> list[str]:
    """Live processes (not zombies) whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline}")
    return found


class Demo:
    """``creamfl-coordinator demo`` as a subprocess, its output collected line by line."""

    def __init__(self, run_dir: Path, *args: str) -> None:
        self.run_dir = run_dir
        command = [str(BIN / "creamfl-coordinator"), "demo", "--preset", "tiny", "--run-dir", str(run_dir), *args]
        self.process = subprocess.Popen(
            command, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, self.stdout), daemon=True),
            threading.Thread(target=self._read, args=(self.process.stderr, self.stderr), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: object, lines: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if any(text in line for line in self.stdout + self.stderr):
                return True
            time.sleep(0.1)
        return False

    def wait(self, timeout: float) -> int:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        for reader in self._readers:
            reader.join(timeout=10)
        return code

    @property
    def output(self) -> str:
        return "\n".join(["--- stdout", *self.stdout, "--- stderr", *self.stderr])


def test_demo_runs_a_federation_of_agent_processes(tmp_path: Path) -> None:
    # Prepare
    run_dir = tmp_path / "run"
    started = time.monotonic()

    # Execute
    demo = Demo(run_dir)
    code = demo.wait(timeout=400)
    seconds = time.monotonic() - started
    leftovers = processes_naming(str(run_dir))

    # Assert: the exit status, the printed tables, nothing left running
    assert code == 0, demo.output
    assert leftovers == []
    out = "\n".join(demo.stdout)
    header = next(line for line in demo.stdout if line.lstrip().startswith("round  publish s"))
    assert all(column in header for column in ("up KB", "down KB", "img w min-max", "txt H/logK", "i2t R@1", "rsum"))
    rows = {cells[0]: cells for cells in map(str.split, demo.stdout) if len(cells) == 17 and cells[0] in ("1", "2")}
    assert "server-only baseline" in out and "communication per client" in out
    assert "dashboard: http://127.0.0.1:" in out and "admin-token" in out
    assert "all 6 agents exited with code 0" in out

    # Assert: the summary
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["ok"] is True
    assert summary["federation"]["state"] == "completed"
    assert summary["federation"]["rounds_completed"] == 2
    assert [r["round"] for r in summary["rounds"]] == [1, 2]
    for record in summary["rounds"]:
        assert record["state"] == "completed"
        assert record["participants"] == NAMES
        assert list(record["traffic"]) == NAMES
        assert sum(t["up"] for t in record["traffic"].values()) == record["bytes_up"] > 0
        assert sum(t["down"] for t in record["traffic"].values()) == record["bytes_down"] > 0
        assert set(record["weights"]) == {"image", "text"}
        for spread in record["weights"].values():
            assert len(spread["clients"]) == 4  # 2 one-modality clients + 2 image+text clients
            assert 0 < spread["min"] <= 0.25 <= spread["max"] < 1
        assert record["seconds"]["total"] > 0 and record["seconds"]["open"] > 0
        assert record["rsum"] == pytest.approx(record["i2t_r1"] + record["t2i_r1"])
        row = rows[str(record["round"])]
        assert row[-1] == f"{record['rsum']:.2f}" and row[7] == "6"
    assert {c["name"]: c["model"] for c in summary["clients"]} == MODELS
    assert all(c["parameter_bytes"] > 0 and 0 < c["mean_weight"] < 1 for c in summary["clients"])
    assert len(summary["communication"]) == 2 * 6
    baseline = summary["baseline"]
    assert baseline["strategy"] == "server-only" and [r["round"] for r in baseline["rounds"]] == [1, 2]
    assert summary["simulate_command"].startswith("creamfl simulate --public-size 100")
    checkpoint = Path(summary["checkpoint"])
    assert checkpoint.is_file() and checkpoint.parent == run_dir
    print(f"demo (tiny preset) took {seconds:.0f} s")

    # Assert: the numbers are the coordinator's (started again on the demo's data)
    token = Path(summary["admin_token_file"]).read_text().strip()
    with CoordinatorProcess(data_dir=run_dir / "coordinator", inherit_creamfl=False) as coordinator:
        headers = {"Authorization": f"Bearer {token}"}
        federation_id = summary["federation"]["id"]
        api = f"{coordinator.url}/api/v1/federations/{federation_id}"
        rounds = httpx.get(f"{api}/rounds", headers=headers).json()
        federation = httpx.get(api, headers=headers).json()
    assert [r["metrics"]["rsum"] for r in rounds] == [r["rsum"] for r in summary["rounds"]]
    assert [r["bytes_up"] for r in rounds] == [r["bytes_up"] for r in summary["rounds"]]
    assert federation["best_checkpoint"] == summary["checkpoint_sha256"]
    assert processes_naming(str(run_dir)) == []


def test_ctrl_c_during_the_rounds_stops_every_process(tmp_path: Path) -> None:
    # Prepare: a demo long enough to be interrupted while its agents train
    run_dir = tmp_path / "run"
    demo = Demo(run_dir, "--rounds", "20", "--port", str(free_port()))
    try:
        assert demo.wait_for("round 1: open", timeout=300), demo.output
        assert len([p for p in processes_naming(str(run_dir)) if "client_agent.cli" in p]) == 6

        # Execute
        demo.process.send_signal(signal.SIGINT)
        code = demo.wait(timeout=120)
    finally:
        if demo.process.poll() is None:
            demo.process.kill()

    # Assert
    assert code == 130, demo.output
    assert "interrupted by SIGINT" in demo.output
    assert "stopped 6 agents" in demo.output
    assert processes_naming(str(run_dir)) == []
    assert not (run_dir / "summary.json").exists()


def test_an_agent_that_dies_fails_the_demo_with_its_log(tmp_path: Path) -> None:
    # Prepare
    run_dir = tmp_path / "run"
    demo = Demo(run_dir, "--rounds", "20")
    try:
        assert demo.wait_for("round 1: open", timeout=300), demo.output
        victim = next(p for p in processes_naming(str(run_dir)) if "--name text-1" in p)

        # Execute
        os.kill(int(victim.split(":")[0]), signal.SIGKILL)
        code = demo.wait(timeout=120)
    finally:
        if demo.process.poll() is None:
            demo.process.kill()

    # Assert
    assert code == 1, demo.output
    assert "FAILED: agent text-1" in demo.output and "exited with code -9" in demo.output
    assert str(run_dir / "logs" / "text-1.log") in demo.output
    assert processes_naming(str(run_dir)) == []


def test_a_wrong_admin_token_for_a_running_coordinator_is_a_clear_failure(tmp_path: Path) -> None:
    # Prepare
    token = "admin-token-of-this-test-0123456789"
    with CoordinatorProcess(data_dir=tmp_path / "server", settings={"admin_token": token}, inherit_creamfl=False) as c:
        # Execute
        wrong = subprocess.run(
            [
                *(str(BIN / "creamfl-coordinator"), "demo", "--preset", "tiny", "--run-dir", str(tmp_path / "run")),
                *("--coordinator", c.url, "--admin-token", "not-the-token-at-all-0123456789"),
            ],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        missing = subprocess.run(
            [str(BIN / "creamfl-coordinator"), "demo", "--coordinator", c.url, "--run-dir", str(tmp_path / "run")],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    # Assert
    assert wrong.returncode == 1, wrong.stderr
    assert "refused the admin token" in wrong.stderr
    assert missing.returncode == 2
    assert "--admin-token" in missing.stderr
    assert processes_naming(str(tmp_path / "run")) == []
