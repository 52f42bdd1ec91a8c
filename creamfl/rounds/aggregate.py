"""Step 6 of a round: every modality's uploads to one target, plus how the ensemble weighed the clients.

Uploads are summed in client-name order, whatever order they arrived in: the ensemble sums in
float, so another order would give other bits (and another run, other numbers).

One client's bad upload never fails the round (DESIGN.md section 4): an upload that is not finite
``[n, d]`` rows of bounded norm is left out, with the reason, and the others are aggregated. Every
usable row is L2-normalised before it is scored and summed (DESIGN.md section 2, step 6), so a
client can buy neither weight nor pull with large norms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from creamfl.ensemble import ensemble_weights, mean_ensemble, unit_rows, weighted_aggregate
from creamfl.models.common import other_modality
from creamfl.payload import representation_problem
from creamfl.rounds.config import RoundConfig
from shared_schemas.vocabulary import AggregationStrategy, Modality


@dataclass(frozen=True)
class WeightStats:
    """How the ensemble spread its weight over clients for one modality."""

    clients: tuple[str, ...]
    mean_weight: tuple[float, ...]  # per client, averaged over samples; 1/K for the mean strategy
    max_weight: float  # the largest weight any client got on any sample
    entropy: float  # mean over samples of the weight entropy, in nats (log K = uniform)

    def as_dict(self, digits: int | None = None) -> dict[str, Any]:
        def number(value: float) -> float:
            return value if digits is None else round(value, digits)

        return {
            "clients": list(self.clients),
            "mean_weight": [number(w) for w in self.mean_weight],
            "max_weight": number(self.max_weight),
            "entropy": number(self.entropy),
        }


@dataclass(frozen=True)
class Exclusion:
    """An upload left out of the aggregate, and why."""

    client: str
    modality: Modality
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"client": self.client, "modality": self.modality, "reason": self.reason}


@dataclass(frozen=True)
class AggregationResult:
    targets: dict[Modality, Tensor]  # {modality: [n, d]} for every modality with a usable upload
    weights: dict[Modality, WeightStats]
    excluded: tuple[Exclusion, ...] = ()  # per modality, in client-name order


def aggregate_uploads(
    uploads: Mapping[Modality, Sequence[tuple[str, Tensor]]],
    global_reps: Mapping[Modality, Tensor],
    *,
    strategy: AggregationStrategy,
    exclude_self: bool = False,
    normalize: bool = True,
    block_size: int | None = None,
) -> AggregationResult:
    """``uploads``: per modality, ``(client name, [n, d])``; ``global_reps``: the round's ``{modality: [n, d]}``.

    Image uploads are scored against the global *text* representations and vice versa. A modality
    whose uploads are all left out has no target.
    """
    targets: dict[Modality, Tensor] = {}
    weights: dict[Modality, WeightStats] = {}
    excluded: list[Exclusion] = []
    for modality, named in uploads.items():
        global_other = global_reps[other_modality(modality)].float()  # [n, d]
        usable, left_out = _usable_uploads(modality, named, global_other)
        excluded.extend(left_out)
        if not usable:
            continue
        names = tuple(name for name, _ in usable)
        reps = [rep for _, rep in usable]
        if strategy == "mean":
            targets[modality] = mean_ensemble(reps, normalize=normalize)
            uniform = 1.0 / len(reps)
            weights[modality] = WeightStats(names, (uniform,) * len(reps), uniform, math.log(len(reps)))
            continue
        alpha = ensemble_weights(reps, global_other, exclude_self=exclude_self, block_size=block_size)  # [K, n]
        targets[modality] = weighted_aggregate(reps, alpha, normalize=normalize)
        weights[modality] = WeightStats(
            clients=names,
            mean_weight=tuple(float(w) for w in alpha.mean(dim=1)),
            max_weight=float(alpha.max()),
            entropy=float(-(alpha * alpha.clamp_min(1e-30).log()).sum(0).mean()),
        )
    return AggregationResult(targets=targets, weights=weights, excluded=tuple(excluded))


def _usable_uploads(
    modality: Modality, named: Sequence[tuple[str, Tensor]], global_other: Tensor
) -> tuple[list[tuple[str, Tensor]], list[Exclusion]]:
    """The uploads that can be aggregated, in client-name order, as float32 unit rows ``[n, d]``; the rest, with why."""
    rows, dim = global_other.shape
    usable: list[tuple[str, Tensor]] = []
    left_out: list[Exclusion] = []
    for name, rep in sorted(named, key=lambda upload: upload[0]):
        problem = representation_problem(rep, shape=(rows, dim))
        if problem is None:
            usable.append((name, unit_rows(rep.float())))
        else:
            left_out.append(Exclusion(name, modality, problem))
    return usable, left_out


def aggregate(
    uploads: Mapping[Modality, Sequence[tuple[str, Tensor]]],
    global_reps: Mapping[Modality, Tensor],
    config: RoundConfig,
) -> AggregationResult:
    """Step 6 as the round's config asks: ``uploads`` per modality as ``(client name, [n, d])``."""
    if config.aggregation is None:
        raise ValueError("this round has no aggregation strategy (a baseline without clients)")
    return aggregate_uploads(
        uploads,
        global_reps,
        strategy=config.aggregation,
        exclude_self=config.exclude_self,
        normalize=config.normalize_aggregate,
    )
