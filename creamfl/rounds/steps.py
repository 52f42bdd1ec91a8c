"""The typed steps of one round (DESIGN.md section 2). The simulator, the coordinator's jobs and the
client agent call these, and nothing else, for the math of a round.

Representations cross between steps as payload bytes in the round's wire dtype (float16 by
default), so rounding is part of the math wherever a round runs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from creamfl.evaluation import RetrievalMetrics, heldout_metrics
from creamfl.models import ClientModel
from creamfl.payload import decode_payload, encode_payload
from creamfl.rounds.config import RoundConfig
from creamfl.rounds.seeds import (
    SERVER_DISTILLATION,
    SERVER_RETRIEVAL,
    client_purpose,
    derive_seed,
    seeded_global_rng,
)
from creamfl.rounds.server import EvaluationSet, Server, ServerData
from creamfl.training import (
    ClientRoundStats,
    ClientTrainingConfig,
    Distillation,
    PublicInputs,
    ServerPassStats,
    TaskData,
    encode_all,
    encode_public,
    server_pass,
    train_client_round,
)
from shared_schemas.vocabulary import Modality, PayloadDtype


@dataclass(frozen=True)
class Representations:
    """One party's representations of the round's subset: ``payloads`` as they travel (one safetensors
    per modality, with the subset's indices) and ``reps`` ``{modality: [n, d]}`` decoded from them."""

    payloads: dict[Modality, bytes]
    reps: dict[Modality, Tensor]

    @property
    def size(self) -> int:
        return sum(len(body) for body in self.payloads.values())


@dataclass(frozen=True)
class Published:
    """Steps 1-2: the server's retrieval pass and its global representations of the subset."""

    global_reps: Representations
    stats: ServerPassStats


@dataclass(frozen=True)
class LocalRound:
    """Steps 4-5 on one client: its training statistics and its upload."""

    upload: Representations
    stats: ClientRoundStats
    encode_seconds: float


def wire(reps: Mapping[Modality, Tensor], *, dtype: PayloadDtype, subset: Tensor) -> Representations:
    """Encode each modality as its own payload and decode it back: what the receiver will hold."""
    payloads = {m: encode_payload({m: rep}, dtype=dtype, indices=subset) for m, rep in reps.items()}
    return Representations(payloads, decode_wire(payloads))


def decode_wire(payloads: Mapping[Modality, bytes]) -> dict[Modality, Tensor]:
    """``{modality: [n, d]}`` from per-modality payloads."""
    return {m: decode_payload(body)[m] for m, body in payloads.items()}


def publish(
    server: Server, data: ServerData, config: RoundConfig, round_number: int, subset: Tensor, *, device: torch.device
) -> Published:
    """Steps 1-2: one retrieval pass over the public pairs, then the subset ``[n]`` encoded in eval mode."""
    stats = _server_pass(server, data.public_pairs, config, round_number, SERVER_RETRIEVAL, None, device)
    assert stats is not None
    reps = encode_public(server.model, data.public_inputs(subset), device=device)  # {modality: [n, d]}
    return Published(wire(reps, dtype=config.payload_dtype, subset=subset), stats)


def local_round(
    model: ClientModel,
    optimizer: torch.optim.Optimizer,
    private: TaskData,
    public: PublicInputs,
    global_reps: Mapping[Modality, Tensor] | None,
    training: ClientTrainingConfig,
    *,
    seed: int,
    round_number: int,
    stream: str,
    subset: Tensor,
    payload_dtype: PayloadDtype,
    device: torch.device,
) -> LocalRound:
    """Steps 4-5 on one client: local training on the client's own stream of the federation's ``seed``
    (see :func:`creamfl.rounds.seeds.client_stream`), then its representations of the subset ``[n]``,
    in eval mode, as payloads."""
    for group in optimizer.param_groups:
        group["lr"] = training.lr
    stream_seed = derive_seed(seed, round_number, client_purpose(stream))
    with seeded_global_rng(stream_seed, device):
        stats = train_client_round(
            model,
            optimizer,
            private,
            public,
            global_reps,
            training,
            generator=torch.Generator().manual_seed(stream_seed),
            device=device,
        )
    started = time.perf_counter()
    reps = encode_public(model, public, batch_size=min(training.batch_size, 256), device=device)
    return LocalRound(wire(reps, dtype=payload_dtype, subset=subset), stats, time.perf_counter() - started)


def distil(
    server: Server,
    data: ServerData,
    config: RoundConfig,
    round_number: int,
    subset: Tensor,
    targets: Mapping[Modality, Tensor],
    *,
    device: torch.device,
) -> ServerPassStats | None:
    """Step 7, the server's second pass: joint (retrieval + kd_weight * distillation toward ``targets``
    ``{modality: [n, d]}``) or separate (distillation alone; None without targets: no pass)."""
    distillation = Distillation(subset_rows=subset, targets=targets, kd_weight=config.kd_weight) if targets else None
    return _server_pass(server, data.public_pairs, config, round_number, SERVER_DISTILLATION, distillation, device)


def evaluate(server: Server, evaluation: EvaluationSet, *, device: torch.device) -> RetrievalMetrics:
    """Step 8: retrieval on the held-out set, every caption of every image (and COCO's 1K protocol on 5,000 images)."""
    model = server.model
    images = encode_all(model, model.encode_image, evaluation.images, device=device)  # [N, d]
    texts = encode_all(model, model.encode_text, evaluation.caption_ids, device=device)  # [M, d]
    return heldout_metrics(images, texts, evaluation.caption_image)


def _server_pass(
    server: Server,
    pairs: TaskData,
    config: RoundConfig,
    round_number: int,
    purpose: str,
    distillation: Distillation | None,
    device: torch.device,
) -> ServerPassStats | None:
    retrieval = purpose == SERVER_RETRIEVAL or config.server.schedule == "joint"
    if not retrieval and distillation is None:
        return None  # the separate schedule with nothing to distil
    seed = derive_seed(config.seed, round_number, purpose)
    with seeded_global_rng(seed, device):
        return server_pass(
            server.model,
            server.optimizer,
            pairs,
            retrieval=retrieval,
            distillation=distillation,
            batch_size=config.server.batch_size,
            generator=torch.Generator().manual_seed(seed),
            device=device,
        )
