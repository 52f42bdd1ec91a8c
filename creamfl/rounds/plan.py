"""Who and what a round covers: the public subset and the selected clients, both seeded per round."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from creamfl.rounds.config import RoundConfig
from creamfl.rounds.seeds import PUBLIC_SUBSET, generator, selection_purpose


def public_subset(config: RoundConfig, round_number: int) -> Tensor:
    """``[n]`` public rows this round uses, sorted (the payloads' row order)."""
    rows = torch.randperm(config.public_size, generator=generator(config.seed, round_number, PUBLIC_SUBSET))
    return rows[: config.subset_size].sort().values


def select_clients(
    config: RoundConfig,
    round_number: int,
    candidates: Sequence[str],
    *,
    attempt: int = 0,
    keep: Sequence[str] = (),
) -> list[str]:
    """``keep`` (those still among the candidates) first, then a seeded draw of the others up to the
    round's seats. ``candidates`` in a stable order (enrollment order, or the simulator's layout)."""
    seats = len(candidates) if config.clients_per_round is None else config.clients_per_round
    kept = [c for c in candidates if c in keep]
    others = [c for c in candidates if c not in keep]
    order = torch.randperm(len(others), generator=generator(config.seed, round_number, selection_purpose(attempt)))
    return kept + [others[int(i)] for i in order][: max(seats - len(kept), 0)]
