"""One configuration of a round, whatever runs it: the simulator and a federation both convert to it."""

from __future__ import annotations

from dataclasses import dataclass, field

from creamfl.training import ClientTrainingConfig
from shared_schemas.vocabulary import AggregationStrategy, PayloadDtype, ServerSchedule, TextEncoder


@dataclass(frozen=True)
class ServerTrainingConfig:
    image_widths: tuple[int, ...] = (32, 64, 128)
    text_encoder: TextEncoder = "scratch"
    lr: float = 5e-4
    batch_size: int = 64
    schedule: ServerSchedule = "joint"


@dataclass(frozen=True)
class RoundConfig:
    """What a round needs to know. ``aggregation`` None: no clients (the server-only and centralized
    baselines), the server's second pass runs without targets."""

    seed: int = 0
    embed_dim: int = 128
    public_size: int = 300
    subset_size: int = 300  # public rows per round (the whole public set when equal to public_size)
    clients_per_round: int | None = None  # None: every client, every round
    aggregation: AggregationStrategy | None = "creamfl"
    exclude_self: bool = False
    normalize_aggregate: bool = True
    kd_weight: float = 0.3
    payload_dtype: PayloadDtype = "float16"
    client: ClientTrainingConfig = field(default_factory=ClientTrainingConfig)
    server: ServerTrainingConfig = field(default_factory=ServerTrainingConfig)

    def __post_init__(self) -> None:
        if not 1 <= self.subset_size <= self.public_size:
            raise ValueError(f"subset_size must lie in [1, public_size={self.public_size}], got {self.subset_size}")
