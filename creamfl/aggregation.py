"""A round's aggregation step: every modality's uploads to one target, plus the weight statistics.

The simulator and the coordinator's aggregate job both call :func:`aggregate_uploads`, so a
federation over HTTP does the same math as one in a single process.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from creamfl.ensemble import ensemble_weights, mean_ensemble, weighted_aggregate
from creamfl.models.common import Modality, other_modality

Aggregation = Literal["creamfl", "mean"]


@dataclass(frozen=True)
class WeightStats:
    """How the ensemble spread its weight over clients for one modality."""

    clients: tuple[str, ...]
    mean_weight: tuple[float, ...]  # per client, averaged over samples; 1/K for the mean strategy
    max_weight: float  # the largest weight any client got on any sample
    entropy: float  # mean over samples of the weight entropy, in nats (log K = uniform)


@dataclass(frozen=True)
class AggregationResult:
    targets: dict[Modality, Tensor]  # {modality: [n, d]} for every modality with an upload
    weights: dict[Modality, WeightStats]


def aggregate_uploads(
    uploads: Mapping[Modality, Sequence[tuple[str, Tensor]]],
    global_reps: Mapping[Modality, Tensor],
    *,
    strategy: Aggregation,
    exclude_self: bool = False,
    normalize: bool = True,
    block_size: int | None = None,
) -> AggregationResult:
    """``uploads``: per modality, ``(client name, [n, d])``; ``global_reps``: the round's ``{modality: [n, d]}``.

    Image uploads are scored against the global *text* representations and vice versa.
    """
    targets: dict[Modality, Tensor] = {}
    weights: dict[Modality, WeightStats] = {}
    for modality, named in uploads.items():
        if not named:
            continue
        names = tuple(name for name, _ in named)
        reps = [rep.float() for _, rep in named]
        if strategy == "mean":
            targets[modality] = mean_ensemble(reps, normalize=normalize)
            uniform = 1.0 / len(reps)
            weights[modality] = WeightStats(names, (uniform,) * len(reps), uniform, math.log(len(reps)))
            continue
        alpha = ensemble_weights(
            reps,
            global_reps[other_modality(modality)].float(),
            exclude_self=exclude_self,
            block_size=block_size,
        )  # [K, n]
        targets[modality] = weighted_aggregate(reps, alpha, normalize=normalize)
        weights[modality] = WeightStats(
            clients=names,
            mean_weight=tuple(float(w) for w in alpha.mean(dim=1)),
            max_weight=float(alpha.max()),
            entropy=float(-(alpha * alpha.clamp_min(1e-30).log()).sum(0).mean()),
        )
    return AggregationResult(targets=targets, weights=weights)
