"""Alembic migrations on SQLite and PostgreSQL: head is the ORM schema, and the service refuses an
unmigrated database until ``creamfl-coordinator migrate`` has run."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
from coordinator_service.launcher import child_env, cli_command, free_port
from coordinator_service.settings import Settings
from tests.coordinator.databases import database
from tests.coordinator.helpers import ADMIN, ADMIN_TOKEN, API, tiny_config
from tests.coordinator.servers import coordinator_process

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


def run_cli(*args: str, **settings: object) -> subprocess.CompletedProcess[str]:
    """``creamfl-coordinator ARGS`` with only these ``CREAMFL_*`` settings; waits for it to exit."""
    env = child_env(settings, inherit_creamfl=False)
    return subprocess.run(cli_command(*args), env=env, capture_output=True, text=True, timeout=120)


def test_cli_serve_refuses_until_migrate_has_run(tmp_path: Path) -> None:
    # Prepare: the embedded SQLite in a fresh data dir
    data_dir = tmp_path / "data"

    # Execute
    port = str(free_port())
    refused = run_cli("serve", "--no-migrate", "--port", port, "--data-dir", str(data_dir), admin_token=ADMIN_TOKEN)
    migrated = run_cli("migrate", "--data-dir", str(data_dir))
    server = coordinator_process(data_dir)
    server.serve_args = ("--no-migrate", "--no-worker")
    with server, server.http() as http:
        created = http.post(f"{API}/federations", json=tiny_config(), headers=ADMIN)

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
        migrated = run_cli("migrate", "--database-url", url)

        # Assert
        assert migrated.returncode == 0, migrated.stderr
        with engine_for(url) as engine:
            assert revision(engine) == head(url)
            assert schema_diffs(engine) == []


def test_a_developer_migrates_with_alembic_ini_and_the_url_from_the_environment(tmp_path: Path) -> None:
    # Prepare: the repository's alembic.ini, a fresh SQLite file named only in the environment
    root = Path(__file__).resolve().parents[2]
    url = f"sqlite:///{tmp_path / 'dev.sqlite3'}"
    alembic = [str(Path(sys.executable).parent / "alembic"), "-c", str(root / "alembic.ini")]
    env = {**child_env(), "CREAMFL_DATABASE_URL": url}

    # Execute
    heads = subprocess.run([*alembic, "heads"], cwd=root, env=env, capture_output=True, text=True, check=True)
    subprocess.run([*alembic, "upgrade", "head"], cwd=root, env=env, capture_output=True, text=True, check=True)

    # Assert
    assert heads.stdout.split()[0] == "0005"
    with engine_for(url) as engine:
        assert set(inspect(engine).get_table_names()) >= TABLES
