"""Registered datasets and the public set's manifest on the wire (DESIGN.md sections 3 and 4)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared_schemas.vocabulary import DatasetState

SHA256_PATTERN = r"^[0-9a-f]{64}$"


class DatasetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
    source: str = Field(
        min_length=1,
        max_length=2000,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="karpathy:FILE.json?images=DIR&split=S or captions:FILE.jsonl|FILE.csv?images=DIR, "
        "read where the coordinator runs, under CREAMFL_DATASET_ROOTS",
    )


class ShardRef(BaseModel):
    """One shard of a registered dataset: ``items`` items in a file of ``size`` bytes."""

    sha256: str = Field(pattern=SHA256_PATTERN)
    size: int = Field(ge=1)
    items: int = Field(ge=1)


class DatasetPublic(BaseModel):
    id: str
    name: str
    source: str
    state: DatasetState
    failure_reason: str | None = None
    items: int = Field(description="items validated and written so far (all of them once ready)")
    bytes: int = Field(description="size of the shards written so far")
    sha256: str | None = Field(None, description="the dataset's identity (hash of its shards' hashes), once ready")
    shards: list[ShardRef] = Field(default_factory=list, description="once ready")
    created_at: datetime
    updated_at: datetime


class TokenizerRef(BaseModel):
    """The federation's client tokenizer; a WordPiece one is downloaded from
    ``/public-set/tokenizer`` (``sha256`` and ``size`` of its JSON)."""

    choice: str
    sha256: str | None = None
    size: int | None = None


class PublicSetManifest(BaseModel):
    """What an enrolled client needs to hold the public set: the built-in spec to regenerate, or the
    shards to download (``/public-set/shards/{sha256}``), and the tokenizer."""

    kind: Literal["builtin", "dataset"]
    embed_dim: int
    image_size: int
    size: int
    sha256: str
    tokenizer: TokenizerRef
    spec: dict[str, object] | None = Field(None, description="built-in: the generator's spec")
    items: list[dict[str, object]] = Field(default_factory=list, description="built-in: per-item hashes")
    shards: list[ShardRef] = Field(default_factory=list, description="dataset: its shards, in order")
