"""Rounds, tasks, reports and jobs on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat

from shared_schemas.client import Modality
from shared_schemas.federation import ClientTrainingSpec, PayloadDtype

RoundState = Literal["pending", "open", "aggregating", "training", "evaluating", "completed", "failed"]
JobState = Literal["queued", "running", "done", "failed"]


class TrainTask(BaseModel):
    kind: Literal["train"] = "train"
    round: int
    attempt: int
    subset: list[int] = Field(description="rows of the public set used this round, in payload row order")
    embed_dim: int
    seed: int = Field(
        description="the federation's seed: a client's local-training stream derives from it and the round"
    )
    payload_dtype: PayloadDtype
    training: ClientTrainingSpec
    global_urls: dict[Modality, str]
    global_sha256: dict[Modality, str]
    upload_urls: dict[Modality, str]
    deadline: datetime


class WaitTask(BaseModel):
    kind: Literal["wait"] = "wait"
    retry_after: float


class DoneTask(BaseModel):
    kind: Literal["done"] = "done"
    reason: str


Task = TrainTask | WaitTask | DoneTask


class ReportCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Finite only: JSON has no NaN or Infinity (PostgreSQL refuses them; a response could not carry them).
    metrics: dict[str, FiniteFloat] = Field(max_length=64, description="local metrics: losses, seconds, ...")


class ReportPublic(BaseModel):
    round: int
    client_id: str
    metrics: dict[str, float]
    created_at: datetime


class UploadPublic(BaseModel):
    round: int
    client_id: str
    modality: Modality
    sha256: str
    size: int
    rows: int
    dim: int
    dtype: str
    created_at: datetime


class RoundTransition(BaseModel):
    state: RoundState
    at: datetime
    reason: str | None


class ClientTraffic(BaseModel):
    up: int = Field(description="bytes of its stored uploads")
    down: int = Field(description="bytes of global representations it downloaded (full downloads)")


class RoundPublic(BaseModel):
    number: int
    state: RoundState
    attempt: int
    deadline: datetime | None
    failure_reason: str | None
    subset_size: int
    selected: list[str] = Field(description="client ids selected for the current attempt")
    uploaded: dict[str, list[Modality]] = Field(description="client id -> modalities uploaded")
    transitions: list[RoundTransition]
    weights: dict[str, Any] | None = Field(description="ensemble weight statistics per modality")
    metrics: dict[str, float] | None = Field(description="retrieval R@1/5/10 both ways and rsum")
    server: dict[str, float] | None = Field(description="server training losses of this round")
    bytes_up: int
    bytes_down: int
    traffic: dict[str, ClientTraffic] = Field(
        default_factory=dict, description="client id -> bytes it uploaded and downloaded this round (all attempts)"
    )


class JobPublic(BaseModel):
    id: int
    federation_id: str
    round: int
    kind: str
    state: JobState
    attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None
    error: str | None
    created_at: datetime
    finished_at: datetime | None
