"""A whole federation in one process, through the round engine (:mod:`creamfl.rounds`).

Each round (DESIGN.md section 2): publish (the server's retrieval pass and its global
representations of the round's public subset), local rounds on the selected clients, aggregation,
the server's distillation, evaluation. Everything crosses between steps as payloads in the wire
dtype, as it does between the coordinator and its agents.

The baselines run the same schedule without clients: ``server-only`` on the public pairs,
``centralized`` (the upper bound) on the public pairs plus every multimodal client's pairs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from creamfl import rounds
from creamfl.evaluation import RetrievalMetrics, retrieval_metrics
from creamfl.models.common import Modality, other_modality
from creamfl.participants import Federation, SimulatedClient, builtin_federation
from creamfl.rounds import AggregationResult, RoundConfig, WeightStats
from creamfl.sim_config import SimulationConfig
from creamfl.training import PublicInputs


@dataclass
class RoundResult:
    round: int
    test: RetrievalMetrics
    upload_bytes: int
    download_bytes: int
    participants: list[str]
    seconds: float
    # Where knowledge is lost: R@1 sums on the public subset of the server's own global
    # representations, of the aggregates, and of each client's representations.
    global_public_rsum: float
    aggregate_public_rsum: float | None
    client_public_rsum: dict[str, float] = field(default_factory=dict)
    weights: dict[Modality, WeightStats] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "rsum": self.test.rsum,
            **self.test.as_dict(),
            "upload_bytes": self.upload_bytes,
            "download_bytes": self.download_bytes,
            "participants": self.participants,
            "seconds": round(self.seconds, 3),
            "global_public_rsum": self.global_public_rsum,
            "aggregate_public_rsum": self.aggregate_public_rsum,
            "client_public_rsum": self.client_public_rsum,
            "ensemble_weights": {modality: stats.as_dict(digits=4) for modality, stats in self.weights.items()},
        }


@dataclass
class SimulationResult:
    config: SimulationConfig
    rounds: list[RoundResult]
    sources: dict[str, Any]  # where the data came from (Federation.sources)

    def as_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.config.strategy,
            "config": self.config.as_dict(),
            "data": self.sources,
            "rounds": [r.as_dict() for r in self.rounds],
            "final": {"rsum": self.rounds[-1].test.rsum, **self.rounds[-1].test.as_dict()},
        }


@dataclass(frozen=True)
class _LocalRounds:
    uploads: dict[Modality, list[tuple[str, Tensor]]]
    upload_bytes: int
    download_bytes: int
    client_rsum: dict[str, float]


Progress = Callable[[str, int, int], None]  # (stage, done, total)


def run_simulation(
    config: SimulationConfig,
    *,
    on_round: Callable[[RoundResult], None] | None = None,
    progress: Progress | None = None,
) -> SimulationResult:
    """Run ``config.rounds`` rounds on the built-in data and return every round's metrics.
    Deterministic in ``config.seed``."""
    return run_federation(builtin_federation(config), on_round=on_round, progress=progress)


def run_federation(
    federation: Federation,
    *,
    on_round: Callable[[RoundResult], None] | None = None,
    progress: Progress | None = None,
) -> SimulationResult:
    """Run ``federation.config.rounds`` rounds and return every round's metrics."""
    report = progress or (lambda stage, done, total: None)
    config, server, data, clients = federation.config, federation.server, federation.data, federation.clients
    device = torch.device(config.device)
    round_config = config.round_config()
    results = []
    for number in range(1, config.rounds + 1):
        started = time.perf_counter()
        subset = rounds.public_subset(round_config, number)  # [n]
        report("server retrieval pass", 0, 1)
        published = rounds.publish(server, data, round_config, number, subset, device=device)
        chosen = set(rounds.select_clients(round_config, number, [c.name for c in clients]))
        selected = [c for c in clients if c.name in chosen]
        public_images = data.public_pairs.inputs[subset]  # [n, 3, H, W]
        local = _local_rounds(
            selected, round_config, number, subset, public_images, published.global_reps, device, report
        )
        aggregated = (
            rounds.aggregate(local.uploads, published.global_reps.reps, round_config) if local.uploads else None
        )
        report("server distillation pass", 0, 1)
        targets = aggregated.targets if aggregated is not None else {}
        rounds.distil(server, data, round_config, number, subset, targets, device=device)
        report("evaluation", 0, 1)
        global_reps = published.global_reps.reps
        result = RoundResult(
            round=number,
            test=rounds.evaluate(server, data.evaluation, device=device),
            upload_bytes=local.upload_bytes,
            download_bytes=local.download_bytes,
            participants=[c.name for c in selected],
            seconds=time.perf_counter() - started,
            global_public_rsum=_pair_rsum(global_reps["image"], global_reps["text"]),
            aggregate_public_rsum=_aggregate_rsum(aggregated),
            client_public_rsum=local.client_rsum,
            weights=aggregated.weights if aggregated is not None else {},
        )
        results.append(result)
        if on_round is not None:
            on_round(result)
    return SimulationResult(config=config, rounds=results, sources=federation.sources)


def _local_rounds(
    selected: list[SimulatedClient],
    config: RoundConfig,
    number: int,
    subset: Tensor,
    public_images: Tensor,
    global_reps: rounds.Representations,
    device: torch.device,
    report: Progress,
) -> _LocalRounds:
    """Steps 4-5 for every selected client, each on its own random stream."""
    uploads: dict[Modality, list[tuple[str, Tensor]]] = {}
    up_bytes, down_bytes, client_rsum = 0, 0, {}
    for done, client in enumerate(selected):
        report(f"local training: {client.name}", done, len(selected))
        public = PublicInputs(images=public_images, token_ids=client.public_token_ids[subset])
        local = rounds.local_round(
            client.model,
            client.optimizer,
            client.private,
            public,
            global_reps.reps,
            config.client,
            seed=config.seed,
            round_number=number,
            stream=client.stream,
            subset=subset,
            payload_dtype=config.payload_dtype,
            device=device,
        )
        up_bytes, down_bytes = up_bytes + local.upload.size, down_bytes + global_reps.size
        for modality, rep in local.upload.reps.items():
            uploads.setdefault(modality, []).append((client.name, rep))
        client_rsum[client.name] = _client_rsum(local.upload.reps, global_reps.reps)
    report("local training", len(selected), len(selected))
    return _LocalRounds(uploads, up_bytes, down_bytes, client_rsum)


def _pair_rsum(image: Tensor, text: Tensor) -> float:
    """R@1 i2t + t2i of row-aligned image/text representations (one caption per item)."""
    return retrieval_metrics(image, text, torch.arange(image.shape[0])).rsum


def _client_rsum(reps: dict[Modality, Tensor], global_reps: dict[Modality, Tensor]) -> float:
    """A two-modality client against itself; a one-modality client against the server's other modality."""
    if "image" in reps and "text" in reps:
        return _pair_rsum(reps["image"], reps["text"])
    ((modality, rep),) = reps.items()
    partner = global_reps[other_modality(modality)]
    return _pair_rsum(rep, partner) if modality == "image" else _pair_rsum(partner, rep)


def _aggregate_rsum(aggregated: AggregationResult | None) -> float | None:
    if aggregated is None or not {"image", "text"} <= aggregated.targets.keys():
        return None
    return _pair_rsum(aggregated.targets["image"], aggregated.targets["text"])
