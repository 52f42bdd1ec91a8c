"""A federation's configuration and status on the wire (DESIGN.md section 4)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared_schemas.datasets import SHA256_PATTERN
from shared_schemas.vocabulary import (
    TOKENIZER_PATTERN,
    AggregationStrategy,
    PayloadDtype,
    ServerSchedule,
    TextEncoder,
    check_tokenizer_choice,
)

FederationState = Literal["created", "running", "paused", "stopped", "completed", "failed"]


class _Strict(BaseModel):
    # Unknown fields are a typo in an admin's config, not something to ignore silently.
    model_config = ConfigDict(extra="forbid")


class PublicSetSpec(_Strict):
    """The built-in scenes dataset: every party regenerates the same bytes from the seed."""

    kind: Literal["builtin"] = "builtin"
    seed: int = Field(0, ge=0, le=2**31 - 1)
    size: int = Field(300, ge=2, le=1_000_000, description="public image-caption pairs")
    test_size: int = Field(300, ge=2, le=100_000, description="held-out pairs for evaluation")
    image_size: int = Field(32, ge=16, le=256)


DATASET_ID_PATTERN = r"^[A-Za-z0-9_-]{1,32}$"


class DatasetPublicSet(_Strict):
    """A registered dataset as the public set. ``size`` and ``sha256`` are filled in by the
    coordinator at creation; given, they pin the dataset's content (a mismatch is refused)."""

    kind: Literal["dataset"] = "dataset"
    dataset: str = Field(pattern=DATASET_ID_PATTERN)
    image_size: int = Field(32, ge=16, le=256, description="images are resized to this side")
    size: int | None = Field(None, ge=2, description="items; filled in by the coordinator")
    sha256: str | None = Field(None, pattern=SHA256_PATTERN, description="filled in by the coordinator")


class EvaluationSetSpec(_Strict):
    """A registered dataset the server is scored on every round; it never leaves the coordinator."""

    dataset: str = Field(pattern=DATASET_ID_PATTERN)
    size: int | None = Field(None, ge=2, description="items; filled in by the coordinator")
    sha256: str | None = Field(None, pattern=SHA256_PATTERN, description="filled in by the coordinator")


class ServerSpec(_Strict):
    image_widths: tuple[int, ...] = Field((32, 64, 128), min_length=1, max_length=6)
    text_encoder: TextEncoder = "scratch"
    lr: float = Field(5e-4, gt=0, le=1.0)
    batch_size: int = Field(64, ge=2, le=4096)
    schedule: ServerSchedule = "joint"

    @model_validator(mode="after")
    def _positive_widths(self) -> ServerSpec:
        if any(w < 1 or w > 2048 for w in self.image_widths):
            raise ValueError("image_widths must lie in [1, 2048]")
        return self


class ClientTrainingSpec(_Strict):
    """What every selected client runs locally (DESIGN.md section 2, step 4)."""

    local_epochs: int = Field(1, ge=1, le=100)
    batch_size: int = Field(64, ge=1, le=4096)
    lr: float = Field(1e-3, gt=0, le=1.0)
    gamma: float = Field(0.5, ge=0, le=100)
    tau: float = Field(0.5, gt=0, le=100)
    inter: bool = True
    intra: bool = True


class FederationCreate(_Strict):
    # No control characters (PostgreSQL refuses NUL in text; the others only garble listings).
    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    embed_dim: int = Field(128, ge=8, le=4096)
    public_set: PublicSetSpec | DatasetPublicSet = PublicSetSpec()
    evaluation_set: EvaluationSetSpec | None = Field(
        None, description="a registered dataset; default: the built-in public set's test split"
    )
    tokenizer: str = Field(
        "builtin-words",
        pattern=TOKENIZER_PATTERN,
        description="client tokenizer: builtin-words (built-in data only), wordpiece-minilm, or trained:V",
    )
    public_subset_size: int | None = Field(None, ge=2, description="public pairs per round; default: all")
    rounds: int = Field(3, ge=1, le=10_000)
    clients_per_round: int = Field(6, ge=1, le=10_000)
    min_clients: int = Field(1, ge=1, le=10_000, description="quorum to close a round at its deadline")
    round_deadline_s: float = Field(600.0, gt=0, le=7 * 86_400)
    max_reopen: int = Field(3, ge=0, le=100, description="re-openings of a round that missed its quorum")
    strategy: AggregationStrategy = "creamfl"
    kd_weight: float = Field(0.3, ge=0, le=100)
    exclude_self: bool = False
    normalize_aggregate: bool = True
    payload_dtype: PayloadDtype = "float16"
    client: ClientTrainingSpec = ClientTrainingSpec()
    server: ServerSpec = ServerSpec()

    @field_validator("tokenizer")
    @classmethod
    def _known_tokenizer(cls, choice: str) -> str:
        return check_tokenizer_choice(choice)

    @model_validator(mode="after")
    def _consistent(self) -> FederationCreate:
        if self.min_clients > self.clients_per_round:
            raise ValueError("min_clients cannot exceed clients_per_round")
        size = self.public_set.size
        if self.public_subset_size is not None and size is not None and self.public_subset_size > size:
            raise ValueError("public_subset_size cannot exceed public_set.size")
        if isinstance(self.public_set, DatasetPublicSet):
            if self.evaluation_set is None:
                raise ValueError("a federation on a registered public set names its evaluation_set (a dataset)")
            if self.tokenizer == "builtin-words":
                raise ValueError(
                    "the builtin-words tokenizer knows only the built-in captions: choose wordpiece-minilm or trained:V"
                )
        return self

    @property
    def public_size(self) -> int:
        """The public set's item count (a registered dataset's once the coordinator resolved it)."""
        if self.public_set.size is None:
            raise ValueError("the public set's size is not resolved yet")
        return self.public_set.size

    @property
    def image_size(self) -> int:
        return self.public_set.image_size

    @property
    def subset_size(self) -> int:
        return self.public_subset_size or self.public_size


class FederationPublic(BaseModel):
    id: str
    name: str
    state: FederationState
    config: FederationCreate
    current_round: int
    rounds_completed: int
    clients_enrolled: int
    last_rsum: float | None
    best_rsum: float | None
    latest_checkpoint: str | None = Field(description="sha256 of the newest server checkpoint")
    best_checkpoint: str | None = Field(description="sha256 of the server checkpoint with the best rsum")
    failure_reason: str | None = Field(None, description="why the federation failed (state failed)")
    created_at: datetime


class FederationCreated(FederationPublic):
    join_token: str = Field(description="shown once: clients enroll with it")
