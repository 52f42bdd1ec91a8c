"""Client enrollment and the client registry on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared_schemas.vocabulary import Modality

ClientStatus = Literal["active", "revoked"]


class ClientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    modalities: list[Modality] = Field(min_length=1, max_length=2)
    model: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[^\x00-\x1f\x7f]+$",  # no control characters (PostgreSQL refuses NUL in text)
        description="the client model, e.g. image-cnn-s",
    )
    samples: int = Field(ge=0, le=10**9, description="private training samples")

    @field_validator("modalities")
    @classmethod
    def _distinct(cls, value: list[Modality]) -> list[Modality]:
        if len(set(value)) != len(value):
            raise ValueError("modalities must be distinct")
        return sorted(value)


class ClientPublic(BaseModel):
    id: str
    federation_id: str
    name: str
    modalities: list[Modality]
    model: str
    samples: int
    status: ClientStatus
    enrolled_at: datetime
    last_seen_at: datetime | None
    uploads: int
    mean_weight: float | None = Field(description="mean ensemble weight received over its uploads")


class ClientEnrolled(ClientPublic):
    token: str = Field(description="shown once: the client's bearer token")
