"""The heavy work of each job, outside any transaction: reads artifacts, writes new ones, returns
a JSON result that the worker commits together with the round transition.

Every job is a pure function of its inputs (the round's checkpoint, uploads, subset and a seed
derived from the round), so a job re-run after a crash produces the same artifacts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from coordinator_service.artifacts import ArtifactStore
from creamfl.aggregation import aggregate_uploads
from creamfl.checkpoint import load_training_state, save_training_state
from creamfl.data.builtin import BuiltinSpec
from creamfl.models.common import Modality
from creamfl.participants import SimData, SimServer, new_server, public_inputs, server_tokenizer, split_data
from creamfl.payload import decode_payload, encode_payload
from creamfl.simulation import evaluate_server
from creamfl.training import Distillation, encode_public, server_pass
from shared_schemas.federation import FederationCreate


@dataclass(frozen=True)
class UploadRef:
    client_id: str
    modality: Modality
    sha256: str


@dataclass(frozen=True)
class JobInput:
    """A snapshot of what a job needs, read in a short transaction before it runs."""

    kind: str
    federation_id: str
    config: FederationCreate
    round_number: int
    subset: list[int]
    start_checkpoint: str | None  # publish: the previous round's trained model (None: fresh)
    checkpoint_published: str | None
    checkpoint_trained: str | None
    global_reps: dict[str, str] | None
    aggregates: dict[str, str] | None
    uploads: list[UploadRef]


@dataclass(frozen=True)
class Artifacts:
    """Files a job wrote: sha256 -> kind, recorded in the same transaction as the result."""

    written: dict[str, str]


JobOutput = tuple[dict[str, Any], Artifacts]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@functools.lru_cache(maxsize=4)
def _server_data(spec: BuiltinSpec, text_encoder: str) -> SimData:
    """The public pairs and the test split, generated once per process (deterministic in the spec)."""
    return split_data(spec, server_tokenizer(text_encoder))


def _spec(config: FederationCreate) -> BuiltinSpec:
    public = config.public_set
    return BuiltinSpec(
        seed=public.seed, public_size=public.size, test_size=public.test_size, image_size=public.image_size
    )


class JobRunner:
    def __init__(self, store: ArtifactStore, device: torch.device) -> None:
        self.store = store
        self.device = device
        self._handlers: dict[str, Callable[[JobInput], JobOutput]] = {
            "publish": self.publish,
            "aggregate": self.aggregate,
            "train": self.train,
            "evaluate": self.evaluate,
        }

    def run(self, job: JobInput) -> JobOutput:
        return self._handlers[job.kind](job)

    # -- helpers ---------------------------------------------------------------------------------

    def _server(self, config: FederationCreate, checkpoint: str | None) -> SimServer:
        server = new_server(
            embed_dim=config.embed_dim,
            image_widths=config.server.image_widths,
            text_encoder=config.server.text_encoder,
            lr=config.server.lr,
            seed=config.seed,
            device=str(self.device),
        )
        if checkpoint is not None:
            load_training_state(server.model, server.optimizer, self.store.read(checkpoint))
        return server

    def _data(self, config: FederationCreate) -> SimData:
        return _server_data(_spec(config), config.server.text_encoder)

    def _generator(self, job: JobInput, salt: int) -> torch.Generator:
        return torch.Generator().manual_seed(job.config.seed * 1_000_003 + job.round_number * 7_919 + salt)

    def _read_reps(self, shas: dict[str, str]) -> dict[Modality, torch.Tensor]:
        """``{modality: [n, d]}`` from per-modality payload artifacts."""
        return {m: decode_payload(self.store.read(sha))[m] for m, sha in shas.items()}  # type: ignore[misc]

    def _save(self, server: SimServer, written: dict[str, str]) -> str:
        sha = self.store.put_bytes(save_training_state(server.model, server.optimizer))
        written[sha] = "checkpoint"
        return sha

    # -- the four jobs ---------------------------------------------------------------------------

    def publish(self, job: JobInput) -> JobOutput:
        """Step 1 and 2: the server's retrieval pass, then its representations of the round's subset."""
        config, written = job.config, dict[str, str]()
        server, data = self._server(config, job.start_checkpoint), self._data(config)
        stats = server_pass(
            server.model,
            server.optimizer,
            data.public_pairs,
            retrieval=True,
            distillation=None,
            batch_size=config.server.batch_size,
            generator=self._generator(job, salt=1),
            device=self.device,
        )
        subset = torch.tensor(job.subset, dtype=torch.long)  # [n]
        reps = encode_public(
            server.model, public_inputs(data.public.images, data.public_pairs.targets, subset), device=self.device
        )  # {modality: [n, d]}
        global_reps = {}
        for modality, rep in reps.items():
            sha = self.store.put_bytes(encode_payload({modality: rep}, dtype=config.payload_dtype, indices=subset))
            written[sha] = "global"
            global_reps[modality] = sha
        result = {
            "checkpoint": self._save(server, written),
            "global_reps": global_reps,
            "server": {"retrieval_loss": stats.retrieval_loss, "retrieval_seconds": stats.seconds},
        }
        return result, Artifacts(written)

    def aggregate(self, job: JobInput) -> JobOutput:
        """Step 6: the global-local cross-modal ensemble (or the mean) per modality."""
        assert job.global_reps is not None
        config = job.config
        global_reps = self._read_reps(job.global_reps)
        uploads: dict[Modality, list[tuple[str, torch.Tensor]]] = {}
        for ref in job.uploads:
            rep = decode_payload(self.store.read(ref.sha256))[ref.modality]  # [n, d]
            uploads.setdefault(ref.modality, []).append((ref.client_id, rep))
        aggregated = aggregate_uploads(
            uploads,
            global_reps,
            strategy=config.strategy,
            exclude_self=config.exclude_self,
            normalize=config.normalize_aggregate,
        )
        written: dict[str, str] = {}
        targets = {}
        for modality, target in aggregated.targets.items():
            sha = self.store.put_bytes(encode_payload({modality: target}, dtype="float32"))
            written[sha] = "aggregate"
            targets[modality] = sha
        weights = {
            m: {
                "clients": list(s.clients),
                "mean_weight": list(s.mean_weight),
                "max_weight": s.max_weight,
                "entropy": s.entropy,
            }
            for m, s in aggregated.weights.items()
        }
        return {"aggregates": targets, "weights": weights}, Artifacts(written)

    def train(self, job: JobInput) -> JobOutput:
        """Step 7: distil the aggregates into the server (joint: with the retrieval loss; separate: alone)."""
        config, written = job.config, dict[str, str]()
        server, data = self._server(config, job.checkpoint_published), self._data(config)
        targets = self._read_reps(job.aggregates or {})
        distillation = (
            Distillation(torch.tensor(job.subset, dtype=torch.long), targets, config.kd_weight) if targets else None
        )
        retrieval = config.server.schedule == "joint"
        stats: dict[str, float] = {}
        if retrieval or distillation is not None:
            done = server_pass(
                server.model,
                server.optimizer,
                data.public_pairs,
                retrieval=retrieval,
                distillation=distillation,
                batch_size=config.server.batch_size,
                generator=self._generator(job, salt=2),
                device=self.device,
            )
            stats = {"distillation_loss": done.distillation_loss, "distillation_seconds": done.seconds}
        return {"checkpoint": self._save(server, written), "server": stats}, Artifacts(written)

    def evaluate(self, job: JobInput) -> JobOutput:
        """Step 8: retrieval on the held-out test split."""
        server = self._server(job.config, job.checkpoint_trained)
        metrics = evaluate_server(server, self._data(job.config), device=self.device)
        return {"metrics": {"rsum": metrics.rsum, **metrics.as_dict()}}, Artifacts({})
