"""Agent settings: environment variables with the prefix ``CREAMFL_AGENT_``; CLI flags override them."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from client_agent.command import FLAGS
from client_agent.errors import ConfigError

AgentModality = Literal["image", "text", "multimodal"]
Device = Literal["auto", "cpu", "cuda"]
MODALITY_CHOICES: tuple[AgentModality, ...] = ("image", "text", "multimodal")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CREAMFL_AGENT_", extra="ignore")

    coordinator: str = Field(description="the coordinator's base URL, e.g. http://coordinator:8080")
    federation: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$", description="federation id")
    join_token: SecretStr | None = Field(None, description="the federation's join token (first start only)")
    modality: AgentModality = Field(description="what this client's data holds: image, text or multimodal")
    data: str = Field(min_length=1, description="the private data spec (see client_agent.data)")
    model: str | None = Field(None, description="client model spec, e.g. image-cnn-s (default by modality)")
    name: str | None = Field(None, min_length=1, max_length=100, description="client name (default: host-modality)")
    state_dir: Path = Field(Path("creamfl-agent-state"), description="identity, model state and caches")
    device: Device = "auto"
    threads: int | None = Field(None, ge=1, le=1024, description="torch CPU threads (default: torch's)")
    batch_size: int | None = Field(None, ge=1, le=65536, description="local batch size (default: the federation's)")
    poll_wait_s: float = Field(30.0, gt=0, le=300, description="long-poll wait for the next task")
    retry_for_s: float = Field(600.0, ge=0, description="give up on an unreachable coordinator after this; 0: never")
    backoff_max_s: float = Field(30.0, gt=0, le=3600, description="the longest wait between two retries")
    request_timeout_s: float = Field(60.0, gt=0, le=3600, description="connect/read timeout of one request")
    once: bool = Field(False, description="exit after one round's work")
    progress: Literal["auto", "bar", "plain"] = Field("auto", description="progress bars on a terminal, else log lines")

    @field_validator("coordinator")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip()
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError("use letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value

    @property
    def modalities(self) -> list[Literal["image", "text"]]:
        return ["image", "text"] if self.modality == "multimodal" else [self.modality]

    @property
    def client_name(self) -> str:
        if self.name:
            return self.name
        host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip(".-_") or "gateway"
        return f"{host[:80]}-{self.modality}"


def load_settings(overrides: dict[str, Any]) -> AgentSettings:
    """Settings from the environment with ``overrides`` (CLI flags, None = not given) on top.

    Raises :class:`ConfigError` with one line naming the flag (and its environment variable)."""
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return AgentSettings(**given)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from exc


def describe_validation_error(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        where = f"{FLAGS.get(field, field)} (CREAMFL_AGENT_{field.upper()})" if field else "settings"
        if error["type"] == "missing":
            problems.append(f"{where} is required")
            continue
        message = str(error["msg"]).removeprefix("Value error, ")
        given = error.get("input")
        shown = "" if field == "join_token" or isinstance(given, dict) else f" (got {given!r})"
        problems.append(f"{where}: {message}{shown}")
    return "bad settings: " + "; ".join(problems) + "; see creamfl-agent run --help"
