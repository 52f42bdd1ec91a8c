"""The simulator's configuration and its presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from creamfl.rounds.config import RoundConfig, ServerTrainingConfig
from creamfl.training import ClientTrainingConfig
from shared_schemas.vocabulary import AggregationStrategy, PayloadDtype, ServerSchedule, TextEncoder

# The federated strategies, and the two bounds every quality claim is measured against.
Strategy = AggregationStrategy | Literal["server-only", "centralized"]
STRATEGIES: tuple[Strategy, ...] = ("creamfl", "mean", "server-only", "centralized")
# The built-in data's sizes, client counts and partition; a simulation on data from disk takes
# them from its files (creamfl.scenario_federation).
BUILTIN_DATA_FIELDS = frozenset(
    {
        "public_size",
        "test_size",
        "private_per_client",
        "image_clients",
        "text_clients",
        "multimodal_clients",
        "dirichlet_alpha",
    }
)


@dataclass(frozen=True)
class SimulationConfig:
    strategy: Strategy = "creamfl"
    rounds: int = 2
    seed: int = 0
    # Federation
    image_clients: int = 2
    text_clients: int = 2
    multimodal_clients: int = 2
    clients_per_round: int | None = None  # None: every client, every round
    image_models: tuple[str, ...] = ("image-cnn-s", "image-cnn-m")  # cycled over the image clients
    text_models: tuple[str, ...] = ("text-gru-s", "text-gru-m")
    multimodal_models: tuple[str, ...] = ("dual-s", "dual-m")
    embed_dim: int = 128
    # Data (the built-in scenes dataset)
    public_size: int = 300
    public_subset: int | None = None  # per-round subset of the public set; None: all of it
    test_size: int = 300
    private_per_client: int = 400
    dirichlet_alpha: float = 0.5
    image_size: int = 32
    # Local training
    local_epochs: int = 1
    client_batch_size: int = 64
    client_lr: float = 1e-3
    gamma: float = 0.5
    tau: float = 0.5
    inter: bool = True
    intra: bool = True
    # Aggregation and server
    exclude_self: bool = False
    normalize_aggregate: bool = True
    kd_weight: float = 0.3
    server_schedule: ServerSchedule = "joint"
    server_image_widths: tuple[int, ...] = (32, 64, 128)
    server_lr: float = 5e-4
    server_batch_size: int = 64
    text_encoder: TextEncoder = "scratch"
    payload_dtype: PayloadDtype = "float16"
    device: str = "cpu"

    def __post_init__(self) -> None:
        problems = []
        if self.strategy not in STRATEGIES:
            problems.append(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        for name in ("rounds", "public_size", "test_size", "private_per_client", "embed_dim", "local_epochs"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if min(self.image_clients, self.text_clients, self.multimodal_clients) < 0:
            problems.append("client counts cannot be negative")
        if self.strategy in ("creamfl", "mean") and self.total_clients == 0:
            problems.append(f"strategy {self.strategy} needs at least one client")
        if self.public_subset is not None and not 1 <= self.public_subset <= self.public_size:
            problems.append(f"public_subset must lie in [1, public_size={self.public_size}]")
        if self.clients_per_round is not None and not 1 <= self.clients_per_round <= max(self.total_clients, 1):
            problems.append(f"clients_per_round must lie in [1, {self.total_clients}]")
        if self.dirichlet_alpha <= 0 or self.tau <= 0:
            problems.append("dirichlet_alpha and tau must be positive")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def total_clients(self) -> int:
        return self.image_clients + self.text_clients + self.multimodal_clients

    @property
    def subset_size(self) -> int:
        return self.public_subset or self.public_size

    @property
    def federated(self) -> bool:
        return self.strategy in ("creamfl", "mean")

    def round_config(self) -> RoundConfig:
        """What every round of this simulation runs (the same type a federation's config converts to)."""
        return RoundConfig(
            seed=self.seed,
            embed_dim=self.embed_dim,
            public_size=self.public_size,
            subset_size=self.subset_size,
            clients_per_round=self.clients_per_round,
            aggregation=self.strategy if self.strategy in ("creamfl", "mean") else None,
            exclude_self=self.exclude_self,
            normalize_aggregate=self.normalize_aggregate,
            kd_weight=self.kd_weight,
            payload_dtype=self.payload_dtype,
            client=ClientTrainingConfig(
                local_epochs=self.local_epochs,
                lr=self.client_lr,
                batch_size=self.client_batch_size,
                gamma=self.gamma,
                tau=self.tau,
                inter=self.inter,
                intra=self.intra,
            ),
            server=ServerTrainingConfig(
                image_widths=self.server_image_widths,
                text_encoder=self.text_encoder,
                lr=self.server_lr,
                batch_size=self.server_batch_size,
                schedule=self.server_schedule,
            ),
        )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    # Under ~2 minutes on 2 CPU cores: a smoke run of the whole pipeline.
    "tiny": {},
    # The quality setting: a small public set, clients holding several times more data.
    "demo": {
        "rounds": 6,
        "public_size": 500,
        "test_size": 500,
        "private_per_client": 2500,
        "embed_dim": 128,
    },
}


def preset_config(name: str, **overrides: Any) -> SimulationConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return SimulationConfig(**{**PRESETS[name], **overrides})
