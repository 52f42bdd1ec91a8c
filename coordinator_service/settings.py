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
    in_process_worker: bool = True
    worker_poll_s: float = Field(0.5, gt=0, description="how often an idle worker looks for jobs and deadlines")
    lease_s: float = Field(30.0, gt=0, description="a job's lease; a killed worker's job is reclaimed after it")
    max_job_attempts: int = Field(3, ge=1)
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
