"""The heavy work of each job, outside any transaction: reads artifacts, runs one step of the round
engine (:mod:`creamfl.rounds`), writes new artifacts, returns a typed result that the worker commits
together with the round transition.

Every job is a pure function of its inputs (the round's checkpoint, uploads, subset and the
federation's seed), so a job re-run after a crash produces the same artifacts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from coordinator_service.artifacts import ArtifactStore
from coordinator_service.jobs.results import AggregateResult, EvaluateResult, JobOutput, PublishResult, TrainResult
from coordinator_service.jobs.server_data import DataSpec, ServerDataSource, data_spec
from coordinator_service.round_config import round_config
from creamfl import rounds
from creamfl.checkpoint import load_training_state, save_training_state
from creamfl.payload import decode_payload, encode_payload
from creamfl.rounds import Exclusion, RoundConfig, Server, ServerData
from shared_schemas.federation import FederationCreate
from shared_schemas.vocabulary import Modality


@dataclass(frozen=True)
class UploadRef:
    client_id: str
    client_name: str
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
    global_reps: dict[Modality, str] | None
    aggregates: dict[Modality, str] | None
    uploads: list[UploadRef] = field(default_factory=list)
    # A registered public or evaluation set's shards (sha256, in order), and the client tokenizer's JSON.
    public_shards: tuple[str, ...] = ()
    evaluation_shards: tuple[str, ...] = ()
    tokenizer_sha256: str | None = None

    @property
    def engine_config(self) -> RoundConfig:
        return round_config(self.config)

    @property
    def data_spec(self) -> DataSpec:
        return data_spec(self.config, self.public_shards, self.evaluation_shards, self.tokenizer_sha256)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class JobRunner:
    def __init__(self, store: ArtifactStore, device: torch.device) -> None:
        self.store = store
        self.device = device
        self.sources = ServerDataSource(store)
        self._handlers: dict[str, Callable[[JobInput], JobOutput]] = {
            "publish": self.publish,
            "aggregate": self.aggregate,
            "train": self.train,
            "evaluate": self.evaluate,
        }

    def run(self, job: JobInput) -> JobOutput:
        return self._handlers[job.kind](job)

    def publish(self, job: JobInput) -> JobOutput:
        """Steps 1-2: the server's retrieval pass, then its representations of the round's subset."""
        config, written = job.engine_config, dict[str, str]()
        server = self._server(job, job.start_checkpoint)
        subset = torch.tensor(job.subset, dtype=torch.long)  # [n]
        published = rounds.publish(server, self._data(job), config, job.round_number, subset, device=self.device)
        global_reps = {m: self._put(body, "global", written) for m, body in published.global_reps.payloads.items()}
        checkpoint = self._put(save_training_state(server.model, server.optimizer), "checkpoint", written)
        stats = published.stats
        return JobOutput(PublishResult(checkpoint, global_reps, stats.retrieval_loss, stats.seconds), written)

    def aggregate(self, job: JobInput) -> JobOutput:
        """Step 6: the global-local cross-modal ensemble (or the mean) per modality, clients by name.

        An upload whose stored bytes are not what was validated is left out with the reason, as the
        engine leaves out representations it cannot aggregate: one client's upload never fails the round."""
        assert job.global_reps is not None
        uploads: dict[Modality, list[tuple[str, torch.Tensor]]] = {}
        unreadable: list[Exclusion] = []
        for ref in job.uploads:
            try:
                rep = self._upload(ref)  # [n, d]
            except ValueError as exc:
                unreadable.append(Exclusion(ref.client_name, ref.modality, str(exc)))
                continue
            uploads.setdefault(ref.modality, []).append((ref.client_name, rep))
        aggregated = rounds.aggregate(uploads, self._reps(job.global_reps), job.engine_config)
        written: dict[str, str] = {}
        targets = {
            m: self._put(encode_payload({m: target}, dtype="float32"), "aggregate", written)
            for m, target in aggregated.targets.items()
        }
        ids = {ref.client_name: ref.client_id for ref in job.uploads}
        weights = {
            m: replace(stats, clients=tuple(ids[name] for name in stats.clients))
            for m, stats in aggregated.weights.items()
        }
        excluded = tuple(replace(e, client=ids[e.client]) for e in (*unreadable, *aggregated.excluded))
        return JobOutput(AggregateResult(targets, weights, excluded), written)

    def train(self, job: JobInput) -> JobOutput:
        """Step 7: distil the aggregates into the server (joint: with the retrieval loss; separate: alone)."""
        config, written = job.engine_config, dict[str, str]()
        server = self._server(job, job.checkpoint_published)
        subset = torch.tensor(job.subset, dtype=torch.long)  # [n]
        targets = self._reps(job.aggregates or {})
        stats = rounds.distil(server, self._data(job), config, job.round_number, subset, targets, device=self.device)
        checkpoint = self._put(save_training_state(server.model, server.optimizer), "checkpoint", written)
        if stats is None:
            return JobOutput(TrainResult(checkpoint), written)
        return JobOutput(TrainResult(checkpoint, stats.distillation_loss, stats.seconds), written)

    def evaluate(self, job: JobInput) -> JobOutput:
        """Step 8: retrieval on the held-out set."""
        server = self._server(job, job.checkpoint_trained)
        return JobOutput(EvaluateResult(rounds.evaluate(server, self._data(job).evaluation, device=self.device)))

    def _server(self, job: JobInput, checkpoint: str | None) -> Server:
        spec = job.data_spec
        tokenizer = self.sources.tokenizer(spec.tokenizer, spec.tokenizer_sha256)
        server = rounds.new_server(job.engine_config, device=self.device, tokenizer=tokenizer)
        if checkpoint is not None:
            load_training_state(server.model, server.optimizer, self.store.read(checkpoint))
        return server

    def _data(self, job: JobInput) -> ServerData:
        return self.sources.data(job.data_spec)

    def _upload(self, ref: UploadRef) -> torch.Tensor:
        """An upload's decoded ``[n, d]``; ValueError, saying why, when its stored bytes are corrupt."""
        body = self.store.read(ref.sha256)
        if hashlib.sha256(body).hexdigest() != ref.sha256:
            raise ValueError("the stored upload is corrupt: its bytes do not match their sha256")
        decoded = decode_payload(body)
        if ref.modality not in decoded:
            raise ValueError(f"the stored upload has no {ref.modality} tensor")
        return decoded[ref.modality]

    def _reps(self, shas: dict[Modality, str]) -> dict[Modality, torch.Tensor]:
        """``{modality: [n, d]}`` from per-modality payload artifacts."""
        return rounds.decode_wire({m: self.store.read(sha) for m, sha in shas.items()})

    def _put(self, body: bytes, kind: str, written: dict[str, str]) -> str:
        sha = self.store.put_bytes(body)
        written[sha] = kind
        return sha
