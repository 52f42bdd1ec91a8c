"""The docker/ files, checked without a Docker engine.

No image is built here. What can be checked is: the compose file parses and builds from Dockerfiles
that exist; every file the Dockerfiles copy exists; every command they run is a console script of
this package whose subcommand answers --help; every CREAMFL_* variable they set is a real setting;
and the commands themselves work when run directly: the compose's coordinator command line migrates
and serves (on SQLite and on a fresh PostgreSQL database) until /readyz answers and the image's
HEALTHCHECK passes, its worker command runs, and the demo's and the agents' command lines parse into
valid settings for the same clients.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from client_agent.cli import build_parser as agent_parser
from client_agent.data import parse_data_spec, parse_model_spec
from client_agent.settings import AgentSettings, load_settings
from coordinator_service import demo
from coordinator_service.launcher import free_port
from coordinator_service.settings import Settings
from tests.coordinator.databases import postgres_database

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
BIN = Path(sys.executable).parent
DOCKERFILES = ("coordinator.Dockerfile", "agent.Dockerfile")
SERVICES = {"postgres", "coordinator", "worker", "demo", "agent-image", "agent-text", "agent-multimodal"}


# --- reading the files ----------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in (DOCKER / dockerfile).read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def expand(value: str) -> str:
    """Compose's ``${NAME:-default}`` interpolation, with NAME unset (what a plain ``up`` gets)."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m.group(1), m.group(2)), value)


def service_env(name: str) -> dict[str, str]:
    environment = services()[name].get("environment") or {}
    return {key: expand(str(value)) for key, value in environment.items()}


def command_lines(argv: list[str]) -> list[list[str]]:
    """The command lines inside a command: itself, or each ``;``/``&&`` part of an ``sh -c`` script."""
    if argv[:2] != ["sh", "-c"]:
        return [argv]
    parts = re.split(r";|&&", argv[2])
    lines = [shlex.split(part) for part in parts if part.strip()]
    return [line[1:] if line[:1] == ["exec"] else line for line in lines]


def service_argv(service: dict[str, Any]) -> list[str]:
    entrypoint = service.get("entrypoint") or []
    command = service.get("command") or []
    return [*entrypoint, *command]


def all_command_lines() -> list[list[str]]:
    """Every command line the compose services and the Dockerfiles' CMD/ENTRYPOINT run."""
    found = [line for service in services().values() for line in command_lines(service_argv(service))]
    for dockerfile in DOCKERFILES:
        entrypoint: list[str] = []
        for instruction, arguments in instructions(dockerfile):
            if instruction == "ENTRYPOINT":
                entrypoint = json.loads(arguments)
            elif instruction == "CMD":
                found.append([*entrypoint, *json.loads(arguments)])
    return found


def console_scripts() -> set[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(pyproject["project"]["scripts"])


# --- the files and what they name ---------------------------------------------------------------


def test_compose_services_build_from_dockerfiles_that_exist() -> None:
    # Prepare
    found = services()

    # Execute
    builds = {name: service.get("build") for name, service in found.items()}

    # Assert
    assert set(found) == SERVICES
    for name, build in builds.items():
        image = found[name].get("image", "")
        if name == "postgres":
            assert build is None and image.startswith("postgres:")
            continue
        assert build is not None, f"{name} builds nothing: `up --build` would try to pull {image}"
        dockerfile = (DOCKER / build["context"] / build["dockerfile"]).resolve()
        assert dockerfile.is_file() and dockerfile.parent == DOCKER, f"{name}: {dockerfile} does not exist"
        expected = "agent.Dockerfile" if name.startswith("agent-") else "coordinator.Dockerfile"
        assert dockerfile.name == expected, f"{name} builds {dockerfile.name}"


def test_dockerfiles_copy_only_what_exists() -> None:
    # Prepare
    copies = [
        (f, arguments) for f in DOCKERFILES for instruction, arguments in instructions(f) if instruction == "COPY"
    ]

    # Execute
    sources = [(f, source) for f, arguments in copies for source in arguments.split()[:-1]]

    # Assert
    assert len(sources) >= 8
    for dockerfile, source in sources:
        assert (ROOT / source).exists(), f"{dockerfile} copies {source}, which is not in the repository"
    coordinator = {source for f, source in sources if f == "coordinator.Dockerfile"}
    agent = {source for f, source in sources if f == "agent.Dockerfile"}
    assert "migrations" in coordinator, "`creamfl-coordinator migrate` needs migrations/"
    assert "coordinator_service" not in agent, "the agent image holds the agent, not the coordinator"
    for dockerfile in DOCKERFILES:  # BuildKit's per-Dockerfile ignore file keeps the virtualenv out of the context
        ignored = (DOCKER / f"{dockerfile}.dockerignore").read_text().split()
        assert {".venv", ".git", "**/__pycache__"} <= set(ignored)


def test_dockerfiles_bases_and_installs() -> None:
    # Prepare
    coordinator = instructions("coordinator.Dockerfile")
    agent = instructions("agent.Dockerfile")

    # Execute
    coordinator_base = next(a for i, a in coordinator if i == "ARG" and a.startswith("BASE_IMAGE="))
    coordinator_pip = " ".join(a for i, a in coordinator if i == "RUN" and "pip install" in a)
    agent_base = next(a for i, a in agent if i == "ARG" and a.startswith("PYTHON_IMAGE="))
    agent_pip = [a for i, a in agent if i == "RUN" and "pip install" in a]

    # Assert: a CUDA torch base; a slim Python with CPU torch, the agent extra only, wheels only
    assert "pytorch/pytorch" in coordinator_base and "cuda" in coordinator_base
    assert '".[coordinator,agent]"' in coordinator_pip
    assert agent_base.endswith("-slim")
    assert "download.pytorch.org/whl/cpu" in agent_pip[0] and "torch==" in agent_pip[0]
    assert '".[agent]"' in agent_pip[1]
    assert all("--only-binary=:all:" in line for line in agent_pip)


def test_every_command_is_a_console_script_whose_subcommand_answers_help() -> None:
    # Prepare
    scripts = console_scripts()
    ours = sorted({(line[0], line[1]) for line in all_command_lines() if line and line[0].startswith("creamfl")})

    # Execute
    answers = {pair: subprocess.run([str(BIN / pair[0]), pair[1], "--help"], capture_output=True) for pair in ours}

    # Assert
    assert {pair[0] for pair in ours} == {"creamfl-coordinator", "creamfl-agent"}
    assert {pair[1] for pair in ours} >= {"serve", "migrate", "worker", "demo", "run"}
    for (script, subcommand), answer in answers.items():
        assert script in scripts, f"{script} is not a console script in pyproject.toml"
        assert answer.returncode == 0, f"{script} {subcommand} --help: {answer.stderr.decode()}"
        assert b"usage:" in answer.stdout


def test_every_creamfl_variable_is_a_setting() -> None:
    # Prepare
    names: set[str] = set()
    document = compose()
    for key, block in document.items():
        if key.startswith("x-") and isinstance(block, dict) and "environment" not in block:
            names |= {k for k in block if k.startswith("CREAMFL_")}
    for service in services().values():
        names |= {k for k in service.get("environment") or {} if k.startswith("CREAMFL_")}
    for dockerfile in DOCKERFILES:
        for instruction, arguments in instructions(dockerfile):
            if instruction == "ENV":
                names |= {pair.split("=", 1)[0] for pair in shlex.split(arguments) if pair.startswith("CREAMFL_")}

    # Execute
    unknown = sorted(
        name
        for name in names
        if not (
            name.removeprefix("CREAMFL_AGENT_").lower() in AgentSettings.model_fields
            if name.startswith("CREAMFL_AGENT_")
            else name.removeprefix("CREAMFL_").lower() in Settings.model_fields
        )
    )

    # Assert
    assert len(names) >= 8
    assert unknown == []


def test_the_handoff_file_exports_agent_settings_to_a_shell(tmp_path: Path) -> None:
    # Prepare
    handoff = tmp_path / "handoff" / "federation.env"

    # Execute
    demo._write_handoff(handoff, "fed-0123abcd", "join_secret-token_value")
    shell = subprocess.run(["sh", "-c", f". {handoff}; env"], capture_output=True, text=True, check=True)

    # Assert
    exported = dict(line.split("=", 1) for line in shell.stdout.splitlines() if line.startswith("CREAMFL_AGENT_"))
    assert exported == {
        "CREAMFL_AGENT_FEDERATION": "fed-0123abcd",
        "CREAMFL_AGENT_JOIN_TOKEN": "join_secret-token_value",
    }
    assert all(name.removeprefix("CREAMFL_AGENT_").lower() in AgentSettings.model_fields for name in exported)
    assert handoff.stat().st_mode & 0o777 == 0o600


# --- the commands, run directly -----------------------------------------------------------------


@contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[str | None]:
    """None: the embedded SQLite in the data dir; else an empty PostgreSQL database (unmigrated)."""
    if kind == "sqlite":
        yield None
        return
    with postgres_database(migrated=False) as url:
        yield url


def run_env(service: str, tmp_path: Path, database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREAMFL_")}
    env.update(service_env(service))
    env["CREAMFL_DATA_DIR"] = str(tmp_path / "data")
    env["CREAMFL_ARTIFACT_DIR"] = str(tmp_path / "artifacts")  # the volume shared by coordinator and worker
    env["CREAMFL_DEVICE"] = "cpu"
    env.pop("CREAMFL_DATABASE_URL")
    if database_url is not None:
        env["CREAMFL_DATABASE_URL"] = database_url
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    return process.returncode


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_compose_coordinator_and_worker_commands_run(kind: str, tmp_path: Path) -> None:
    # Prepare
    port = free_port()
    coordinator_argv = service_argv(services()["coordinator"])
    assert "--port 8080" in coordinator_argv[-1]
    coordinator_argv[-1] = coordinator_argv[-1].replace("--port 8080", f"--port {port}")
    worker_argv = service_argv(services()["worker"])
    healthcheck_line = next(a for i, a in instructions("coordinator.Dockerfile") if i == "HEALTHCHECK")
    healthcheck = json.loads(healthcheck_line.split(" CMD ", 1)[1].replace("8080", str(port)))
    healthcheck[0] = sys.executable if healthcheck[0] == "python" else healthcheck[0]

    with database(kind, tmp_path) as url:
        env = run_env("coordinator", tmp_path, url)
        log = (tmp_path / "coordinator.log").open("wb")
        coordinator = subprocess.Popen(coordinator_argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            # Execute
            ready = wait_ready(f"http://127.0.0.1:{port}", coordinator, tmp_path / "coordinator.log")
            health = subprocess.run(healthcheck, capture_output=True, timeout=30)
            token = env["CREAMFL_ADMIN_TOKEN"]
            listed = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/federations", headers={"Authorization": f"Bearer {token}"}
            )
            worker_log = tmp_path / "worker.log"
            with worker_log.open("wb") as log_file:
                worker = subprocess.Popen(
                    worker_argv, env=run_env("worker", tmp_path, url), stdout=log_file, stderr=subprocess.STDOUT
                )
                worker_started = wait_for_line(worker_log, " started on cpu", worker)
                worker_code = stop(worker)
        finally:
            coordinator_code = stop(coordinator)
            log.close()

    # Assert
    assert ready, (tmp_path / "coordinator.log").read_text()
    assert health.returncode == 0, health.stderr.decode()
    assert listed.status_code == 200 and listed.json() == []
    assert worker_started, worker_log.read_text()
    assert worker_code == 0, worker_log.read_text()
    # uvicorn shuts down gracefully, then re-raises the SIGTERM so the exit status says what stopped it
    assert coordinator_code in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in (tmp_path / "coordinator.log").read_text()
    assert (tmp_path / "artifacts").is_dir()
    if kind == "sqlite":
        assert (tmp_path / "data" / "coordinator.db").is_file()


def wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 90.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            if httpx.get(f"{url}/readyz", timeout=1.0).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return False


def wait_for_line(log: Path, text: str, process: subprocess.Popen[bytes], timeout: float = 90.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if text in log.read_text(errors="replace"):
            return True
        time.sleep(0.2)
    return False


def agent_services() -> dict[str, list[str]]:
    """Each agent service's ``creamfl-agent run ...`` arguments (after the script name)."""
    found = {}
    for name, service in services().items():
        for line in command_lines(service_argv(service)):
            if line[:1] == ["creamfl-agent"]:
                found[name] = line[1:]
    return found


def test_compose_demo_and_agent_command_lines_are_the_same_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    demo_line = next(
        line for line in command_lines(service_argv(services()["demo"])) if line[:1] == ["creamfl-coordinator"]
    )
    assert demo_line[1] == "demo"
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    agents = agent_services()
    for key in [k for k in os.environ if k.startswith("CREAMFL_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CREAMFL_ADMIN_TOKEN", service_env("demo")["CREAMFL_ADMIN_TOKEN"])

    # Execute
    args = parser.parse_args(demo_line[2:])
    config = demo.scenario_config(args.preset, **{k: getattr(args, k) for k in demo.SCENARIO_FLAGS})
    options = demo.Options(
        run_dir=args.run_dir, coordinator=args.coordinator, admin_token=os.environ["CREAMFL_ADMIN_TOKEN"]
    )
    demo.check_options(config, options)
    plans = {plan.name: plan for plan in demo.agent_plans(config)}
    settings = {}
    for name, argv in agents.items():
        with monkeypatch.context() as env:
            for key, value in {**service_env(name), "CREAMFL_AGENT_FEDERATION": "fed-0123abcd"}.items():
                env.setenv(key, value)
            env.setenv("CREAMFL_AGENT_JOIN_TOKEN", "join_token")
            parsed = agent_parser().parse_args(argv)
            overrides = {k: v for k, v in vars(parsed).items() if k not in ("command", "log_level")}
            settings[name] = load_settings(overrides)

    # Assert: the demo waits for exactly these three agents, and each is the demo's client of that name
    assert not args.start_agents and args.handoff is not None
    assert args.coordinator == service_env("agent-image")["CREAMFL_AGENT_COORDINATOR"]
    assert sorted(agents) == ["agent-image", "agent-multimodal", "agent-text"]
    assert len(plans) == len(agents)
    for name, agent in settings.items():
        plan = plans[agent.client_name]
        assert agent.modality == plan.slot.kind == name.removeprefix("agent-")
        assert agent.model == plan.slot.model_spec
        assert parse_data_spec(agent.data).where == parse_data_spec(plan.data).where
        assert parse_data_spec(agent.data).options == {}  # the agent's defaults: 400 samples, alpha 0.5
        assert parse_data_spec(plan.data).options == {"samples": "400", "alpha": "0.5"}
        assert parse_model_spec(agent.model, agent.modality).name == plan.slot.model_spec
        assert agent.coordinator == "http://coordinator:8080"
