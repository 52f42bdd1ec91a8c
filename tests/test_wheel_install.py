"""The project as an operator installs it: a built wheel in a fresh virtual environment outside the
checkout (torch pinned first, as the Makefile does), never the editable source tree.

One environment per test session (torch, then ``creamfl-*.whl[coordinator,agent]``), then: the
installed ``creamfl-coordinator`` migrates and serves until ``/readyz`` on SQLite and PostgreSQL, and
one round of a tiny federation runs with one installed ``creamfl-agent``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from client_agent.command import AgentCommand
from coordinator_service.launcher import CoordinatorProcess
from tests.coordinator.databases import postgres_database
from tests.coordinator.helpers import ADMIN, ADMIN_TOKEN, API, tiny_config

ROOT = Path(__file__).resolve().parents[1]
TORCH_SPEC = os.environ.get("TORCH_SPEC", "torch==2.13.0")
COPY_IGNORE = (".git", ".venv", "runs", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "node_modules")
pytestmark = pytest.mark.timeout(900)


@dataclass(frozen=True)
class Installed:
    bin: Path  # the environment's bin directory
    env: dict[str, str]  # no PYTHONPATH, no CREAMFL_*: nothing of the checkout leaks in

    def run(
        self, *args: str, cwd: Path, extra_env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``args[0]`` from the environment's bin directory, with the rest as its arguments."""
        env = {**self.env, **(extra_env or {})}
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
        )


def _pip(python: Path, *args: str) -> None:
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", *args], check=True, capture_output=True, timeout=900
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"  # a copy: building in the checkout would write build/ and egg-info into it
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*COPY_IGNORE))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(work / "dist"), str(source)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = (work / "dist").glob("creamfl-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True, timeout=300)
    python = work / "venv" / "bin" / "python"
    _pip(python, TORCH_SPEC)
    _pip(python, f"{wheel}[coordinator,agent]")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("CREAMFL_")}
    yield Installed(work / "venv" / "bin", env)


def test_the_environment_holds_the_wheel_and_the_pinned_torch(installed: Installed, tmp_path: Path) -> None:
    # Execute
    probe = installed.run(
        "python",
        "-c",
        "import json, importlib.metadata as m, torch, coordinator_service; "
        "print(json.dumps({'torch': torch.__version__, 'module': coordinator_service.__file__, "
        "'requires': m.requires('creamfl')}))",
        cwd=tmp_path,
    )

    # Assert: torch is the pinned build (pip did not replace it), the code is the installed copy, and
    # transformers is asked for by the roles that build the server only, never by the agent
    assert probe.returncode == 0, probe.stderr
    found = json.loads(probe.stdout)
    assert found["torch"].startswith(TORCH_SPEC.split("==")[1])
    assert str(ROOT) not in found["module"] and "site-packages" in found["module"]
    transformers = [r for r in found["requires"] if r.startswith("transformers")]
    assert transformers and all("extra ==" in r for r in transformers)
    assert not any('extra == "agent"' in r for r in transformers)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_installed_coordinator_migrates_and_serves(installed: Installed, kind: str, tmp_path: Path) -> None:
    # Prepare: an empty database of either kind
    with _empty_database(kind, tmp_path) as url:
        # Execute
        migrated = installed.run(
            "creamfl-coordinator",
            "migrate",
            cwd=tmp_path,
            extra_env={"CREAMFL_DATABASE_URL": url, "CREAMFL_DATA_DIR": str(tmp_path / "data")},
        )
        server = CoordinatorProcess(
            tmp_path / "data",
            settings={"database_url": url, "admin_token": ADMIN_TOKEN},
            inherit_creamfl=False,
            program=[str(installed.bin / "creamfl-coordinator")],
            serve_args=("--no-migrate",),
        )

        # Assert: migrated, and serving (start returns once /readyz answers 200)
        assert migrated.returncode == 0, migrated.stderr
        with server, server.http() as http:
            assert http.get("/readyz").status_code == 200


def test_one_round_with_the_installed_coordinator_and_agent(installed: Installed, tmp_path: Path) -> None:
    # Prepare
    server = CoordinatorProcess(
        tmp_path / "data",
        settings={"admin_token": ADMIN_TOKEN, "worker_poll_s": 0.1, "threads": 1},
        inherit_creamfl=False,
        program=[str(installed.bin / "creamfl-coordinator")],
    )
    with server, server.http() as http:
        created = http.post(
            f"{API}/federations", json=tiny_config(rounds=1, clients_per_round=1, min_clients=1), headers=ADMIN
        )
        assert created.status_code == 201, created.text
        federation = created.json()
        agent = AgentCommand(
            coordinator=server.url,
            federation=federation["id"],
            join_token=federation["join_token"],
            modality="image",
            data="builtin:0:0/1?samples=40",
            state_dir=tmp_path / "agent",
            device="cpu",
            threads=1,
            progress="plain",
        )
        running = subprocess.Popen(agent.argv(str(installed.bin / "creamfl-agent")), cwd=tmp_path, env=installed.env)
        started = http.post(f"{API}/federations/{federation['id']}/start", headers=ADMIN)

        # Execute
        code = running.wait(timeout=600)

        # Assert
        assert started.status_code == 200, started.text
        assert code == 0
        summary = http.get(f"{API}/federations/{federation['id']}", headers=ADMIN).json()
        assert summary["state"] == "completed" and summary["rounds_completed"] == 1


def _empty_database(kind: str, directory: Path) -> contextlib.AbstractContextManager[str]:
    if kind == "postgresql":
        return postgres_database(migrated=False)
    return contextlib.nullcontext(f"sqlite:///{directory / 'fresh.sqlite3'}")
