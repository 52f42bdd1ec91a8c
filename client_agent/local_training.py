"""Local training of one train task, and its commit to the state dir.

The round engine's local round (:func:`creamfl.rounds.local_round`: train, then encode the round's
public subset in eval mode) runs on the model kept between rounds; its payloads go to the outbox
and the model to its file, and the commit record names both (with the round's metrics). The model
stays loaded between rounds; a half-trained one is dropped, so the next round reloads the committed
state.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from client_agent.checks import check_dim
from client_agent.data import ModelSpec, PrivateData
from client_agent.errors import AgentError, ConfigError
from client_agent.global_reps import GlobalReps
from client_agent.progress import Reporter
from client_agent.public_set import PublicSet
from client_agent.settings import AgentSettings
from client_agent.state import STATE, ModelRecord, Record, RoundRecord, StateDir, write_atomic
from client_agent.stopping import Stopper
from creamfl.checkpoint import load_training_state, save_training_state
from creamfl.data.types import SubsetSource
from creamfl.models import ClientModel
from creamfl.models.common import Modality
from creamfl.rounds import LocalRound, client_stream, local_round, new_client_model
from creamfl.text import Tokenizer
from creamfl.training import ClientTrainingConfig, PublicInputs
from shared_schemas.rounds import TrainTask


@dataclass
class _Loaded:
    built_as: tuple[str, int, int, int]
    file: str | None
    model: ClientModel
    optimizer: torch.optim.Optimizer


@dataclass
class LocalTrainer:
    """Trains this client's model on its private data, round after round."""

    settings: AgentSettings
    model_spec: ModelSpec
    device: torch.device
    state: StateDir
    data: PrivateData
    public: PublicSet
    client_id: str
    tokenizer: Tokenizer  # the federation's
    unk_share: float | None  # of the private text with that tokenizer (reported each round); None: no text
    global_reps: GlobalReps
    reporter: Reporter
    stopper: Stopper
    log: logging.Logger
    _loaded: _Loaded | None = field(default=None, init=False)

    def train(self, task: TrainTask, record: Record, key: str) -> Record:
        """Train on ``task`` (whose key is ``key``) and commit the result; returns the committed record."""
        check_dim(self.model_spec, task.embed_dim, self.settings.federation)
        subset = torch.tensor(task.subset, dtype=torch.long)
        if len(task.subset) == 0 or int(subset.max()) >= len(self.public) or int(subset.min()) < 0:
            raise AgentError(f"round {task.round} names public rows outside the {len(self.public)}-item public set")
        loaded = self._model(task, record.model)
        spec = task.training
        training = ClientTrainingConfig(
            **{**spec.model_dump(), "batch_size": self.settings.batch_size or spec.batch_size}
        )
        started = time.perf_counter()
        global_reps = self.global_reps.fetch(task, loaded.model.modalities) if (spec.inter or spec.intra) else None
        download_seconds = time.perf_counter() - started
        # The subset's images stay where they are (a dataset's shards): decoded batch by batch.
        public = PublicInputs(images=SubsetSource(self.public.images, subset), token_ids=self.public.token_ids[subset])
        local = self._local_round(task, loaded, public, subset, global_reps, training)
        committed = self._commit(
            task, key, record, loaded, local, download_seconds=download_seconds, public_rows=len(subset)
        )
        stats = local.stats
        self.log.info(
            "round=%d trained task_loss=%.4f inter_loss=%.4f intra_loss=%.4f steps=%d seconds=%.2f unk_share=%s",
            task.round,
            stats.task_loss,
            stats.inter_loss,
            stats.intra_loss,
            stats.steps,
            stats.seconds,
            "none" if self.unk_share is None else f"{self.unk_share:.4f}",
        )
        return committed

    def _commit(
        self,
        task: TrainTask,
        key: str,
        record: Record,
        loaded: _Loaded,
        local: LocalRound,
        *,
        download_seconds: float,
        public_rows: int,
    ) -> Record:
        """The payloads to the outbox and the model to its file, then the record that names them (the
        commit point: until it is saved, a restart trains the round again)."""
        outbox: dict[str, str] = {}
        for modality, body in local.upload.payloads.items():
            name = f"r{task.round}-{modality}-{hashlib.sha256(body).hexdigest()[:16]}.safetensors"
            write_atomic(self.state.outbox / name, body)
            outbox[modality] = name
        model_file = f"model-r{task.round}-{key[:12]}.safetensors"
        write_atomic(self.state.root / model_file, save_training_state(loaded.model, loaded.optimizer))
        previous = record.model.rounds_trained if record.model is not None else 0
        spec_name, embed_dim, vocab_size, num_classes = loaded.built_as
        model_record = ModelRecord(
            spec=spec_name,
            embed_dim=embed_dim,
            vocab_size=vocab_size,
            num_classes=num_classes,
            file=model_file,
            rounds_trained=previous + 1,
            last_round=task.round,
        )
        stats = local.stats
        metrics = {
            "task_loss": stats.task_loss,
            "inter_loss": stats.inter_loss,
            "intra_loss": stats.intra_loss,
            "steps": float(stats.steps),
            "train_seconds": stats.seconds,
            "encode_seconds": local.encode_seconds,
            "download_seconds": download_seconds,
            "samples": float(self.data.samples),
            "public_rows": float(public_rows),
            "rounds_trained": float(previous + 1),
        }
        if self.unk_share is not None:
            metrics["unk_share"] = self.unk_share
        committed = Record(
            model=model_record, round=RoundRecord(round=task.round, key=key, outbox=outbox, metrics=metrics)
        )
        self.state.save_record(committed)
        loaded.file = model_file
        return committed

    def _local_round(
        self,
        task: TrainTask,
        loaded: _Loaded,
        public: PublicInputs,
        subset: torch.Tensor,
        global_reps: dict[Modality, torch.Tensor] | None,
        training: ClientTrainingConfig,
    ) -> LocalRound:
        """The round engine's local round, reporting its progress step by step (and stoppable between steps)."""
        regularise = global_reps is not None and (training.inter or training.intra)
        per_epoch = math.ceil(len(self.data.task) / training.batch_size)
        per_epoch += math.ceil(len(public) / training.batch_size) if regularise else 0
        total = per_epoch * training.local_epochs
        steps = [0]
        with (
            self.stopper.abandonable(),
            self.reporter.step("train", total, "steps", round=task.round, epochs=training.local_epochs) as update,
        ):

            def after_step(*_: Any) -> None:
                steps[0] += 1
                update(steps[0], total)
                self.stopper.check()

            hook = loaded.optimizer.register_step_post_hook(after_step)
            try:
                return local_round(
                    loaded.model,
                    loaded.optimizer,
                    self.data.task,
                    public,
                    global_reps,
                    training,
                    seed=task.seed,
                    round_number=task.round,
                    stream=client_stream(init_seed=self.data.init_seed, client_id=self.client_id),
                    subset=subset,
                    payload_dtype=task.payload_dtype,
                    device=self.device,
                )
            except BaseException:
                self._loaded = None  # half-trained: the next round reloads the committed state
                raise
            finally:
                hook.remove()

    def _model(self, task: TrainTask, record: ModelRecord | None) -> _Loaded:
        """The model the record names (loaded once, then kept), or a fresh one seeded by this client."""
        built_as = (self.model_spec.name, task.embed_dim, self.tokenizer.vocab_size, self.data.num_classes)
        if record is not None and record.built_as() != built_as:
            raise ConfigError(
                f"the state dir {self.settings.state_dir} holds a model built as (model, dim, vocabulary, classes) "
                f"= {record.built_as()}, but this run needs {built_as}: keep the original --model and --data, or "
                f"move {self.state.root / STATE} away to train a fresh model"
            )
        file = record.file if record is not None else None
        if self._loaded is not None and (self._loaded.built_as, self._loaded.file) == (built_as, file):
            return self._loaded
        init_seed = self.data.init_seed
        if init_seed is None:
            init_seed = int.from_bytes(hashlib.sha256(self.client_id.encode()).digest()[:4], "little")
        model = new_client_model(
            self.model_spec.name,
            init_seed=init_seed,
            embed_dim=task.embed_dim,
            vocab_size=self.tokenizer.vocab_size,
            num_classes=max(self.data.num_classes, 1),
            device=self.device,
        )
        optimizer = torch.optim.Adam(model.parameters(), lr=task.training.lr)
        if file is not None:
            try:
                load_training_state(model, optimizer, (self.state.root / file).read_bytes())
            except (OSError, RuntimeError, ValueError, KeyError) as exc:
                raise ConfigError(
                    f"the model state {self.state.root / file} is unreadable ({exc}); move "
                    f"{self.state.root / STATE} away to train a fresh model"
                ) from exc
            self.log.info("model loaded file=%s rounds_trained=%d", file, record.rounds_trained if record else 0)
        self._loaded = _Loaded(built_as=built_as, file=file, model=model, optimizer=optimizer)
        return self._loaded
