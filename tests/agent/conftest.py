"""Fixtures: a coordinator on a real SQLite file, in-process (ASGI) or behind a real uvicorn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from coordinator_service.app import create_app
from coordinator_service.settings import Settings
from tests.agent.helpers import coordinator_settings, uvicorn_in_thread
from tests.coordinator.databases import database


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    with database("sqlite", tmp_path) as url:
        yield url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return coordinator_settings(tmp_path / "data", database_url)


@pytest.fixture
def app_client(settings: Settings) -> Iterator[TestClient]:
    """The coordinator's ASGI app in-process; a TestClient is an httpx.Client, so agents take it as is."""
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def live_url(settings: Settings) -> Iterator[str]:
    """The same app behind a real uvicorn HTTP server (in a thread of this process)."""
    with uvicorn_in_thread(settings) as url:
        yield url
