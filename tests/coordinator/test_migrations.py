"""Alembic migrations on SQLite and PostgreSQL: head is the ORM schema, and the service refuses an
unmigrated database until ``creamfl-coordinator migrate`` has run."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.pool import NullPool

from coordinator_service.app import UnmigratedDatabase, create_app
from coordinator_service.db.migrate import alembic_config, upgrade
from coordinator_service.db.models import Base
from coordinator_service.settings import Settings
from tests.coordinator.databases import database
from tests.coordinator.helpers import ADMIN, ADMIN_TOKEN, API, tiny_config

KINDS = ["sqlite", "postgresql"]
TABLES = {table.name for table in Base.metadata.sorted_tables}


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.contextmanager
def engine_for(url: str) -> Iterator[Engine]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


def schema_diffs(engine: Engine) -> list[Any]:
    """What alembic's autogenerate would change to make the database match the ORM (types included)."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))


def revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def head(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def test_head_is_exactly_the_orm_schema(kind: str, tmp_path: Path) -> None:
    # Prepare
    with database(kind, tmp_path) as url, engine_for(url) as engine:
        # Execute
        diffs = schema_diffs(engine)
        with engine.begin() as connection:  # the comparison must see a real difference
            connection.execute(text("DROP INDEX ix_jobs_state"))
        after_drop = schema_diffs(engine)

        # Assert
        assert diffs == []
        assert revision(engine) == head(url)
        assert set(inspect(engine).get_table_names()) == TABLES | {"alembic_version"}
        assert [(d[0], d[1].name) for d in after_drop] == [("add_index", "ix_jobs_state")]


def test_the_app_refuses_an_unmigrated_database(kind: str, tmp_path: Path) -> None:
    # Prepare
    with database(kind, tmp_path, migrated=False) as url:
        settings = Settings(data_dir=tmp_path / "data", database_url=url, admin_token=ADMIN_TOKEN)

        # Execute
        with pytest.raises(UnmigratedDatabase) as refused, TestClient(create_app(settings)):
            pass

        # Assert: a message that says what to run, and nothing was created
        assert "creamfl-coordinator migrate" in str(refused.value)
        with engine_for(url) as engine:
            assert inspect(engine).get_table_names() == []


def test_migrating_twice_is_a_noop(kind: str, tmp_path: Path) -> None:
    # Prepare: a migrated database holding a federation
    with database(kind, tmp_path, migrated=False) as url, engine_for(url) as engine:
        upgrade(url)
        settings = Settings(data_dir=tmp_path / "data", database_url=url, admin_token=ADMIN_TOKEN)
        with TestClient(create_app(settings)) as http:
            created = http.post(f"{API}/federations", json=tiny_config(), headers=ADMIN)
            assert created.status_code == 201, created.text

        # Execute
        upgrade(url)

        # Assert
        assert revision(engine) == head(url)
        assert schema_diffs(engine) == []
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
            assert connection.execute(text("SELECT id FROM federations")).scalars().all() == [created.json()["id"]]


def test_downgrade_to_base_then_upgrade_again(kind: str, tmp_path: Path) -> None:
    # Prepare
    with database(kind, tmp_path) as url, engine_for(url) as engine:
        # Execute
        command.downgrade(alembic_config(url), "base")
        at_base = (set(inspect(engine).get_table_names()), revision(engine))
        upgrade(url)

        # Assert
        assert at_base == ({"alembic_version"}, None)
        assert revision(engine) == head(url)
        assert schema_diffs(engine) == []


# -- the command line ----------------------------------------------------------------------------


def cli(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("creamfl-coordinator")
    return [str(script), *args] if script.is_file() else [sys.executable, "-m", "coordinator_service.cli", *args]


def clean_env(**settings: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CREAMFL_")}
    env.update({f"CREAMFL_{key.upper()}": value for key, value in settings.items()})
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(data_dir: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            cli("serve", "--no-migrate", "--no-worker", "--port", str(port), "--data-dir", str(data_dir)),
            env=clean_env(admin_token=ADMIN_TOKEN),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_ready(process: subprocess.Popen[bytes], base_url: str, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base_url}/readyz", timeout=1.0).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"serve was not ready in {timeout}s:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)


def test_cli_serve_refuses_until_migrate_has_run(tmp_path: Path) -> None:
    # Prepare: the embedded SQLite in a fresh data dir
    data_dir, port, log = tmp_path / "data", free_port(), tmp_path / "serve.log"

    # Execute
    refused = subprocess.run(
        cli("serve", "--no-migrate", "--port", str(port), "--data-dir", str(data_dir)),
        env=clean_env(admin_token=ADMIN_TOKEN),
        capture_output=True,
        text=True,
        timeout=120,
    )
    migrated = subprocess.run(
        cli("migrate", "--data-dir", str(data_dir)), env=clean_env(), capture_output=True, text=True, timeout=120
    )
    server = serve(data_dir, port, log)
    try:
        wait_ready(server, f"http://127.0.0.1:{port}", log)
        created = httpx.post(f"http://127.0.0.1:{port}{API}/federations", json=tiny_config(), headers=ADMIN, timeout=30)
    finally:
        server.terminate()
        server.wait(timeout=30)

    # Assert
    assert refused.returncode == 2, refused.stderr
    assert "creamfl-coordinator migrate" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert migrated.returncode == 0, migrated.stderr
    assert created.status_code == 201, created.text
    url = f"sqlite:///{(data_dir / 'coordinator.db').resolve()}"
    with engine_for(url) as engine:
        assert revision(engine) == head(url)
        assert schema_diffs(engine) == []


def test_cli_migrate_brings_postgresql_to_head(tmp_path: Path) -> None:
    # Prepare
    with database("postgresql", tmp_path, migrated=False) as url:
        # Execute
        migrated = subprocess.run(
            cli("migrate", "--database-url", url), env=clean_env(), capture_output=True, text=True, timeout=120
        )

        # Assert
        assert migrated.returncode == 0, migrated.stderr
        with engine_for(url) as engine:
            assert revision(engine) == head(url)
            assert schema_diffs(engine) == []
