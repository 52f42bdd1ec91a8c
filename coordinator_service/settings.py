"""Coordinator settings: environment variables with the prefix ``CREAMFL_``, CLI flags override."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CREAMFL_", extra="ignore")

    data_dir: Path = Field(Path("creamfl-data"), description="SQLite file, artifacts and the admin token live here")
    database_url: str | None = Field(None, description="default: SQLite in the data dir")
    artifact_dir: Path | None = Field(None, description="default: <data_dir>/artifacts")
    admin_token: str | None = Field(None, min_length=16, description="default: generated once into the data dir")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    max_upload_bytes: int = Field(256 * 1024 * 1024, ge=1024)
    max_json_bytes: int = Field(
        1024 * 1024, ge=1024, description="the largest JSON body (every route but the upload); more is a 413"
    )
    # Sockets (DESIGN.md section 4, "Transport"; docs/operating.md): none may hold the server.
    max_connections: int = Field(
        1000, ge=1, description="open connections at most: beyond, 503 and closed; needs ulimit -n well above it"
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="a request's headers must be complete this long after its connection opened or "
        "the previous answer on it ended, else the connection is closed",
    )
    keep_alive_s: int = Field(5, ge=1, description="an idle connection between requests is closed after this")
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="a request line and headers larger than this are refused (400) and closed"
    )
    in_process_worker: bool = True
    worker_poll_s: float = Field(0.5, gt=0, description="how often an idle worker looks for jobs and deadlines")
    lease_s: float = Field(30.0, gt=0, description="a job's lease; a killed worker's job is reclaimed after it")
    max_job_attempts: int = Field(
        3, ge=1, description="runs of a job that may end in its own error; a lost worker or a full disk does not count"
    )
    max_lease_losses: int = Field(
        20,
        ge=1,
        description="a job is re-run after this many lost workers (killed, or its commit kept failing), then fails: "
        "ends only a job that kills its worker every time",
    )
    retry_base_s: float = Field(5.0, gt=0, description="a job that raised runs again after this, doubled each time")
    retry_max_s: float = Field(
        300.0, gt=0, description="the longest wait before a retry, or before a job held by the environment runs again"
    )
    long_poll_max_s: float = Field(30.0, gt=0)
    watch_interval_s: float = Field(0.25, gt=0, description="how often long polls re-read round states")
    gc_interval_s: float = Field(3600.0, gt=0, description="how often a worker deletes orphan artifact files")
    gc_min_age_s: float = Field(3600.0, ge=0, description="an orphan is deleted only once it is this old")
    job_hold_s: float = Field(
        0.0, ge=0, description="fault injection for crash tests: hold each finished job this long before committing"
    )
    dataset_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="folders a dataset source may be read from (JSON list, or paths separated by the OS "
        "path separator); empty: registering datasets is refused",
    )
    threads: int | None = Field(None, ge=1, description="torch threads for jobs (default: torch's)")

    @field_validator("dataset_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [p for p in text.split(os.pathsep) if p]
        return value

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'coordinator.db').resolve()}"

    @property
    def resolved_artifact_dir(self) -> Path:
        return self.artifact_dir or self.data_dir / "artifacts"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")
