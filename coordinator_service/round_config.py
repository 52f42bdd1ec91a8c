"""A federation's config as the round engine's :class:`~creamfl.rounds.RoundConfig`, and back.

The one bridge between the wire config and the engine: the jobs, the round state machine and the
demo (which turns the simulator's scenario into a federation) all go through it.
"""

from __future__ import annotations

from typing import Any

from creamfl.rounds import RoundConfig, ServerTrainingConfig
from creamfl.training import ClientTrainingConfig
from shared_schemas.federation import ClientTrainingSpec, FederationCreate, ServerSpec


def round_config(config: FederationCreate) -> RoundConfig:
    return RoundConfig(
        seed=config.seed,
        embed_dim=config.embed_dim,
        public_size=config.public_size,
        subset_size=config.subset_size,
        clients_per_round=config.clients_per_round,
        aggregation=config.strategy,
        exclude_self=config.exclude_self,
        normalize_aggregate=config.normalize_aggregate,
        kd_weight=config.kd_weight,
        payload_dtype=config.payload_dtype,
        client=ClientTrainingConfig(**config.client.model_dump()),
        server=ServerTrainingConfig(**config.server.model_dump()),
    )


def federation_fields(config: RoundConfig) -> dict[str, Any]:
    """The fields of a federation config that say what its rounds compute (the rest, such as its
    name, public set, rounds and deadlines, are the caller's). ``round_config`` inverts it."""
    if config.aggregation is None:
        raise ValueError("a federation aggregates its clients: a baseline without clients has no federation")
    return {
        "seed": config.seed,
        "embed_dim": config.embed_dim,
        "public_subset_size": config.subset_size if config.subset_size < config.public_size else None,
        "strategy": config.aggregation,
        "kd_weight": config.kd_weight,
        "exclude_self": config.exclude_self,
        "normalize_aggregate": config.normalize_aggregate,
        "payload_dtype": config.payload_dtype,
        "client": ClientTrainingSpec(**vars(config.client)).model_dump(),
        "server": ServerSpec(**vars(config.server)).model_dump(mode="json"),
    }
