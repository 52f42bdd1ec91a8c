"""The docker/ files, checked without a Docker engine.

No image is built here. What can be checked is: the compose file parses and builds from Dockerfiles
that exist; each Dockerfile builds the package's wheel in a first stage and installs only that wheel,
with its role's extras, in the image (no source tree, no editable install); the wheel, built as that
stage builds it, holds the migrations and the dashboard's files, and its agent extra brings no server
stack (tests/test_wheel_install.py installs a wheel and runs it); every command the files run is a
console script of this package whose subcommand answers --help; every CREAMFL_* variable they set is
a real setting; and the commands themselves work when run directly: the compose's coordinator command
line migrates and serves (on SQLite and on a fresh PostgreSQL database) until /readyz answers and the
image's HEALTHCHECK passes, its worker command runs, and the demo's and the agents' command lines
parse into valid settings for the same clients.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from packaging.requirements import Requirement

import creamfl
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
# What each image installs the wheel with: the coordinator image also runs the demo driver, which needs httpx.
EXTRAS = {"coordinator.Dockerfile": {"coordinator", "agent"}, "agent.Dockerfile": {"agent"}}
# `pip install "$(ls DIR/creamfl-*.whl)[EXTRA,...]"`: the extras the wheel is installed with.
WHEEL_INSTALL = re.compile(r"creamfl-\*\.whl\)?\[([\w,]+)\]")


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


def stages(dockerfile: str) -> list[list[tuple[str, str]]]:
    """Each stage's instructions, from its FROM on (the ARGs before the first FROM belong to none)."""
    found: list[list[tuple[str, str]]] = []
    for instruction, arguments in instructions(dockerfile):
        if instruction == "FROM":
            found.append([])
        if found:
            found[-1].append((instruction, arguments))
    return found


def dockerignore(dockerfile: str) -> list[str]:
    lines = (DOCKER / f"{dockerfile}.dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


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


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_builds_a_wheel_and_the_image_installs_only_it(dockerfile: str) -> None:
    # Prepare
    build, runtime = stages(dockerfile)

    # Execute
    build_sources = [
        source for instruction, arguments in build if instruction == "COPY" for source in arguments.split()[:-1]
    ]
    build_runs = [arguments for instruction, arguments in build if instruction == "RUN"]
    runtime_copies = [arguments for instruction, arguments in runtime if instruction in ("COPY", "ADD")]
    installs = [arguments for instruction, arguments in runtime if instruction == "RUN" and "pip install" in arguments]
    extras = [set(found.split(",")) for line in installs for found in WHEEL_INSTALL.findall(line)]

    # Assert: the build stage copies what exists and builds the wheel; the image gets the wheel, not the source
    assert build[0][1].endswith(" AS build")
    for source in build_sources:
        assert (ROOT / source).exists(), f"{dockerfile} copies {source}, which is not in the repository"
    assert build_runs == ["pip wheel --no-deps -w /dist ."]
    assert runtime_copies and all(copy.startswith("--from=build /dist ") for copy in runtime_copies)
    assert extras == [EXTRAS[dockerfile]]
    assert not any(" -e " in line or "--editable" in line for line in installs)
    # BuildKit's per-Dockerfile ignore file keeps the virtualenv and local build outputs out of the context
    assert {".venv", ".git", "**/__pycache__", "build", "dist", "*.egg-info"} <= set(dockerignore(dockerfile))


def test_dockerfiles_bases_and_torch() -> None:
    # Prepare
    coordinator = stages("coordinator.Dockerfile")[-1]
    agent = stages("agent.Dockerfile")[-1]

    # Execute
    coordinator_base = next(a for i, a in instructions("coordinator.Dockerfile") if i == "ARG" and "BASE_IMAGE=" in a)
    coordinator_pip = [a for i, a in coordinator if i == "RUN" and "pip install" in a]
    agent_base = next(a for i, a in instructions("agent.Dockerfile") if i == "ARG" and a.startswith("PYTHON_IMAGE="))
    agent_pip = [a for i, a in agent if i == "RUN" and "pip install" in a]

    # Assert: a CUDA torch base whose torch is kept; a slim Python with CPU torch installed before the wheel,
    # so the wheel's torch requirement is met and no CUDA build is pulled; the agent's installs take wheels only
    assert "pytorch/pytorch" in coordinator_base and "cuda" in coordinator_base
    assert coordinator[0] == ("FROM", "${BASE_IMAGE}")
    assert len(coordinator_pip) == 1 and "torch" not in coordinator_pip[0]
    assert agent_base.endswith("-slim")
    assert agent[0] == ("FROM", "${PYTHON_IMAGE}")
    assert "download.pytorch.org/whl/cpu" in agent_pip[0] and "torch==" in agent_pip[0]
    assert WHEEL_INSTALL.search(agent_pip[1])
    assert all("--only-binary=:all:" in line for line in agent_pip)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel as the images' build stage builds it: a context holding only what the stage copies (less
    what the ignore file drops), then the stage's RUN line, with this interpreter's pip."""
    build = stages("coordinator.Dockerfile")[0]
    assert stages("agent.Dockerfile")[0][1:] == build[1:], "both images must install the same wheel"
    root = tmp_path_factory.mktemp("image-build")
    context, dist = root / "src", root / "dist"
    context.mkdir()
    ignore = shutil.ignore_patterns(
        *(p.removeprefix("**/") for p in dockerignore("coordinator.Dockerfile") if p.startswith("**/"))
    )
    for instruction, arguments in build:
        if instruction == "COPY":
            *sources, target = arguments.split()
            for source in sources:
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, context / target, ignore=ignore)
                else:
                    shutil.copy2(ROOT / source, context / target)
        elif instruction == "RUN":
            argv = [str(dist) if arg == "/dist" else arg for arg in shlex.split(arguments)]
            assert argv[0] == "pip"
            built = subprocess.run([sys.executable, "-m", *argv], cwd=context, capture_output=True, text=True)
            assert built.returncode == 0, built.stdout + built.stderr
    (found,) = dist.glob("*.whl")
    return found


def test_the_wheel_holds_the_migrations_and_the_dashboard_and_no_tests(wheel: Path) -> None:
    # Prepare: every file the coordinator reads from its package at run time
    folders = ("migrations", "dashboard/templates", "dashboard/static")
    needed = {
        path.relative_to(ROOT).as_posix()
        for folder in folders
        for path in (ROOT / "coordinator_service" / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }

    # Execute
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())

    # Assert
    assert wheel.name.startswith(f"creamfl-{creamfl.__version__}-")
    assert "coordinator_service/migrations/env.py" in needed
    assert any(name.startswith("coordinator_service/migrations/versions/") for name in needed)
    assert sorted(needed - names) == []
    assert not any(name.startswith(("tests/", "migrations/", "bench/", "docker/")) for name in names)


def test_the_agent_image_installs_no_server_stack(wheel: Path) -> None:
    # Prepare
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
        lines = archive.read(metadata).decode().splitlines()
    requirements = [Requirement(line.split(":", 1)[1]) for line in lines if line.startswith("Requires-Dist:")]

    # Execute: what `pip install creamfl-*.whl[agent]` brings in
    installed = {r.name.lower() for r in requirements if r.marker is None or r.marker.evaluate({"extra": "agent"})}

    # Assert
    assert {"torch", "httpx", "pydantic-settings"} <= installed
    assert installed.isdisjoint({"transformers", "fastapi", "uvicorn", "sqlalchemy", "alembic", "psycopg"})


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
