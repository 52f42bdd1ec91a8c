"""A whole federation in one process, with the same functions the services call.

Each round (DESIGN.md section 2): the server's retrieval pass; global representations of the
round's public subset; local training on the selected clients; uploads through the wire format
(so float16 rounding is part of the math); aggregation; the server's distillation; evaluation.

Server schedules: ``separate`` is a retrieval pass, then a distillation-only pass (the reference);
``joint`` is a retrieval pass, then a pass of retrieval + kd_weight * distillation. The baselines
run the same schedule: ``server-only`` without targets, ``centralized`` (the upper bound) without
targets but with every multimodal client's pairs added to the public pairs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from creamfl.aggregation import AggregationResult, aggregate_uploads
from creamfl.evaluation import RetrievalMetrics, retrieval_metrics
from creamfl.models.common import Modality, other_modality
from creamfl.participants import (
    SimClient,
    SimData,
    SimServer,
    build_clients,
    build_data,
    build_server,
    centralized_pairs,
    public_inputs,
)
from creamfl.payload import decode_payload, encode_payload
from creamfl.sim_config import SimulationConfig
from creamfl.training import (
    ClientTrainingConfig,
    Distillation,
    TaskData,
    encode_all,
    encode_public,
    server_pass,
    train_client_round,
)


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
    weights: dict[str, Any] = field(default_factory=dict)

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
            "ensemble_weights": self.weights,
        }


@dataclass
class SimulationResult:
    config: SimulationConfig
    rounds: list[RoundResult]

    def as_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.config.strategy,
            "config": self.config.as_dict(),
            "rounds": [r.as_dict() for r in self.rounds],
            "final": {"rsum": self.rounds[-1].test.rsum, **self.rounds[-1].test.as_dict()},
        }


Progress = Callable[[str, int, int], None]  # (stage, done, total)


def run_simulation(
    config: SimulationConfig,
    *,
    on_round: Callable[[RoundResult], None] | None = None,
    progress: Progress | None = None,
) -> SimulationResult:
    """Run ``config.rounds`` rounds and return every round's metrics. Deterministic in ``config.seed``."""
    report = progress or (lambda stage, done, total: None)
    device = torch.device(config.device)
    server = build_server(config)
    data = build_data(config, server.tokenizer)
    federated = config.strategy in ("creamfl", "mean")
    clients = build_clients(config, data.public) if federated else []
    server_pairs = (
        centralized_pairs(config, data, server.tokenizer) if config.strategy == "centralized" else data.public_pairs
    )
    rng = torch.Generator().manual_seed(config.seed)
    results = []
    for round_number in range(1, config.rounds + 1):
        started = time.perf_counter()
        report("server retrieval pass", 0, 1)
        server_pass(
            server.model,
            server.optimizer,
            server_pairs,
            retrieval=True,
            distillation=None,
            batch_size=config.server_batch_size,
            generator=rng,
            device=device,
        )
        subset = torch.randperm(config.public_size, generator=rng)[: config.subset_size].sort().values  # [n]
        server_public = public_inputs(data.public.images, data.public_pairs.targets, subset)
        global_reps = encode_public(server.model, server_public, device=device)
        selected = _select(clients, config, rng)
        uploads, up_bytes, down_bytes, client_rsum = _local_round(
            selected, config, data.public.images, subset, global_reps, rng, report
        )
        aggregated = None
        if federated and uploads:
            aggregated = aggregate_uploads(
                uploads,
                global_reps,
                strategy="creamfl" if config.strategy == "creamfl" else "mean",
                exclude_self=config.exclude_self,
                normalize=config.normalize_aggregate,
            )
        report("server distillation pass", 0, 1)
        _second_server_pass(server, server_pairs, config, subset, aggregated, rng, device)
        report("evaluation", 0, 1)
        result = RoundResult(
            round=round_number,
            test=evaluate_server(server, data, device=device),
            upload_bytes=up_bytes,
            download_bytes=down_bytes,
            participants=[c.name for c in selected],
            seconds=time.perf_counter() - started,
            global_public_rsum=_pair_rsum(global_reps["image"], global_reps["text"]),
            aggregate_public_rsum=_aggregate_rsum(aggregated),
            client_public_rsum=client_rsum,
            weights=_weights_summary(aggregated),
        )
        results.append(result)
        if on_round is not None:
            on_round(result)
    return SimulationResult(config=config, rounds=results)


def _select(clients: list[SimClient], config: SimulationConfig, rng: torch.Generator) -> list[SimClient]:
    if config.clients_per_round is None or config.clients_per_round >= len(clients):
        return clients
    chosen = torch.randperm(len(clients), generator=rng)[: config.clients_per_round].sort().values
    return [clients[int(i)] for i in chosen]


def _local_round(
    selected: list[SimClient],
    config: SimulationConfig,
    public_images: Tensor,
    subset: Tensor,
    global_reps: dict[Modality, Tensor],
    rng: torch.Generator,
    report: Progress,
) -> tuple[dict[Modality, list[tuple[str, Tensor]]], int, int, dict[str, float]]:
    """Steps 4-5 for every selected client: train, encode the subset, send it through the wire format."""
    device = torch.device(config.device)
    download = encode_payload(global_reps, dtype=config.payload_dtype)
    received: dict[Modality, Tensor] = {m: t for m, t in decode_payload(download).items()}  # type: ignore[misc]
    training = ClientTrainingConfig(
        local_epochs=config.local_epochs,
        batch_size=config.client_batch_size,
        gamma=config.gamma,
        tau=config.tau,
        inter=config.inter,
        intra=config.intra,
    )
    uploads: dict[Modality, list[tuple[str, Tensor]]] = {"image": [], "text": []}
    up_bytes, down_bytes, client_rsum = 0, 0, {}
    for done, client in enumerate(selected):
        report(f"local training: {client.name}", done, len(selected))
        public = public_inputs(public_images, client.public_token_ids, subset)
        train_client_round(
            client.model,
            client.optimizer,
            client.private,
            public,
            received,
            training,
            generator=rng,
            device=device,
        )
        reps = encode_public(client.model, public, device=device)
        payload = encode_payload(reps, dtype=config.payload_dtype)
        up_bytes, down_bytes = up_bytes + len(payload), down_bytes + len(download)
        for modality, rep in decode_payload(payload).items():
            uploads[modality].append((client.name, rep))  # type: ignore[index]
        client_rsum[client.name] = _client_rsum(reps, received)
    report("local training", len(selected), len(selected))
    return {m: u for m, u in uploads.items() if u}, up_bytes, down_bytes, client_rsum


def _second_server_pass(
    server: SimServer,
    pairs: TaskData,
    config: SimulationConfig,
    subset: Tensor,
    aggregated: AggregationResult | None,
    rng: torch.Generator,
    device: torch.device,
) -> None:
    distillation = (
        Distillation(subset_rows=subset, targets=aggregated.targets, kd_weight=config.kd_weight)
        if aggregated is not None and aggregated.targets
        else None
    )
    retrieval = config.server_schedule == "joint"
    if not retrieval and distillation is None:
        return  # the separate schedule with nothing to distil: no second pass
    server_pass(
        server.model,
        server.optimizer,
        pairs,
        retrieval=retrieval,
        distillation=distillation,
        batch_size=config.server_batch_size,
        generator=rng,
        device=device,
    )


def evaluate_server(server: SimServer, data: SimData, *, device: torch.device) -> RetrievalMetrics:
    """Step 8: retrieval on the held-out test split, two captions per image."""
    model = server.model
    images = encode_all(model, model.encode_image, data.test.images, device=device)  # [N, d]
    texts = encode_all(model, model.encode_text, data.test_caption_ids, device=device)  # [2N, d]
    return retrieval_metrics(images, texts, data.test_caption_image)


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


def _weights_summary(aggregated: AggregationResult | None) -> dict[str, Any]:
    if aggregated is None:
        return {}
    return {
        modality: {
            "clients": list(stats.clients),
            "mean_weight": [round(w, 4) for w in stats.mean_weight],
            "max_weight": round(stats.max_weight, 4),
            "entropy": round(stats.entropy, 4),
        }
        for modality, stats in aggregated.weights.items()
    }
