"""Rounds, tasks, reports and jobs on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared_schemas.client import Modality
from shared_schemas.federation import ClientTrainingSpec, PayloadDtype

RoundState = Literal["pending", "open", "aggregating", "training", "evaluating", "completed", "failed"]
JobState = Literal["queued", "running", "done", "failed"]
# A report's metric: a short plain name and a JSON number (not a string or a boolean that happens to
# convert), finite: JSON has no NaN or Infinity (PostgreSQL refuses them; a response could not carry them).
MetricName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
MetricValue = Annotated[float, Field(strict=True, allow_inf_nan=False)]


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

    metrics: dict[MetricName, MetricValue] = Field(
        max_length=64, description="local metrics: losses, seconds, ... (names of 1-64 characters)"
    )


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


class ExcludedUpload(BaseModel):
    client: str = Field(description="client id")
    modality: Modality
    reason: str = Field(description="why the aggregate left this upload out")


class RoundPublic(BaseModel):
    number: int
    state: RoundState
    attempt: int
    deadline: datetime | None
    failure_reason: str | None
    held_reason: str | None = Field(
        None,
        description="why the round's current step waits for the environment (disk full, too many open files, "
        "database unreachable); it goes on by itself once that clears",
    )
    subset_size: int
    selected: list[str] = Field(description="client ids selected for the current attempt")
    uploaded: dict[str, list[Modality]] = Field(description="client id -> modalities uploaded")
    transitions: list[RoundTransition]
    weights: dict[str, Any] | None = Field(description="ensemble weight statistics per modality")
    excluded: list[ExcludedUpload] = Field(
        default_factory=list, description="uploads the aggregate left out (unusable), with the reason"
    )
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
    attempts: int = Field(description="runs that ended in the job's own error (or are running)")
    lease_losses: int = Field(0, description="runs cut short by their worker's death: re-run, not counted as attempts")
    holds: int = Field(0, description="runs stopped by the environment (disk full, ...): put back, not counted")
    lease_owner: str | None
    lease_expires_at: datetime | None
    not_before: datetime | None = Field(None, description="not run again before this (a retry's or a hold's backoff)")
    held_reason: str | None = Field(None, description="why the environment holds it back, while it does")
    error: str | None = Field(description="the last error, one line")
    created_at: datetime
    finished_at: datetime | None
