"""The agent's life: check its configuration, enroll once, obtain the public set, then work rounds.

Each train task (DESIGN.md section 2, steps 4-5): download the global representations the
regularisers need, train locally (:func:`creamfl.training.train_client_round`), encode the round's
public subset in eval mode, commit the payloads and the model to the state dir, upload, report.
A restarted agent resumes where it stopped: a committed round is uploaded, not trained again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import httpx
import torch

from client_agent.coordinator_client import CoordinatorClient, Rejected, RetryPolicy
from client_agent.data import ModelSpec, PrivateData, parse_data_spec, parse_model_spec
from client_agent.errors import EXIT_OK, AgentError, AgentStopped, ConfigError
from client_agent.progress import Reporter
from client_agent.public_set import PublicSet, obtain_public_set
from client_agent.settings import AgentSettings
from client_agent.state import Identity, ModelRecord, Record, RoundRecord, StateDir, write_atomic
from client_agent.stopping import Stopper
from creamfl.checkpoint import load_training_state, save_training_state
from creamfl.models import ClientModel, build_client_model, other_modality
from creamfl.models.common import Modality
from creamfl.participants import client_tokenizer
from creamfl.payload import decode_payload, encode_payload, payload_indices
from creamfl.training import ClientTrainingConfig, PublicInputs, encode_public, train_client_round
from shared_schemas.client import ClientCreate
from shared_schemas.rounds import DoneTask, TrainTask, WaitTask

ENCODE_BATCH = 256


@dataclass
class _Loaded:
    built_as: tuple[str, int, int, int]
    file: str | None
    model: ClientModel
    optimizer: torch.optim.Optimizer


class Agent:
    """One client of one federation. ``run`` returns an exit code or raises :class:`AgentError`."""

    def __init__(
        self,
        settings: AgentSettings,
        http: httpx.Client,
        *,
        stopper: Stopper | None = None,
        reporter: Reporter | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.settings = settings
        self.stopper = stopper or Stopper()
        self.log = logger or logging.getLogger("client_agent")
        self.reporter = reporter or Reporter("plain", logger=self.log)
        retry = RetryPolicy(retry_for_s=settings.retry_for_s, max_backoff_s=settings.backoff_max_s)
        self.client = CoordinatorClient(
            http,
            settings.federation,
            retry=retry,
            request_timeout_s=settings.request_timeout_s,
            stop=self.stopper.event,
        )
        self.tokenizer = client_tokenizer()
        self.rounds_done = 0
        self._loaded: _Loaded | None = None

    # --- the life of the agent -----------------------------------------------------------------

    def run(self) -> int:
        try:
            self.prepare()
            self.connect()
            self.join()
            return self.work()
        except AgentStopped:
            self.log.info("stopped state_dir=%s (run again to resume)", self.settings.state_dir)
            return EXIT_OK
        finally:
            state: StateDir | None = getattr(self, "state", None)
            if state is not None:
                state.unlock()

    def prepare(self) -> None:
        """Everything that can be checked without the coordinator; a ConfigError says what is wrong."""
        s = self.settings
        self.model_spec: ModelSpec = parse_model_spec(s.model, s.modality)
        self.data_spec = parse_data_spec(s.data)
        self.device = resolve_device(s.device)
        self.state = StateDir(s.state_dir)
        self.state.lock()
        self.identity: Identity | None = self.state.load_identity()
        if self.identity is not None:
            self._check_identity(self.identity)
        elif s.join_token is None:
            raise ConfigError(
                f"this agent has not enrolled yet (no identity in {s.state_dir}): pass --join-token "
                "(CREAMFL_AGENT_JOIN_TOKEN), the federation's join token from its admin"
            )
        if s.threads:
            torch.set_num_threads(s.threads)
        self.data: PrivateData = self.data_spec.load(s.modality, self.tokenizer, image_size=32)
        self.log.info(
            "configured federation=%s modality=%s model=%s device=%s threads=%d data=%r",
            s.federation,
            s.modality,
            self.model_spec.name,
            self.device,
            torch.get_num_threads(),
            self.data.description,
        )

    def connect(self) -> None:
        """Resume as the client in the state dir, or enroll (once) and persist the identity."""
        s = self.settings
        if self.identity is not None:
            self.client.token = self.identity.token
            self.log.info("resuming client=%s name=%s", self.identity.client_id, self.identity.name)
            return
        assert s.join_token is not None
        request = ClientCreate(
            name=s.client_name, modalities=s.modalities, model=self.model_spec.name, samples=self.data.samples
        )
        try:
            with self.stopper.abandonable():
                enrolled = self.client.enroll(s.join_token.get_secret_value(), request)
        except Rejected as exc:
            raise self._enroll_error(exc, request.name) from exc
        self.identity = Identity(
            coordinator=s.coordinator,
            federation_id=s.federation,
            client_id=enrolled.id,
            token=enrolled.token,
            name=enrolled.name,
            modalities=list(enrolled.modalities),
            model=enrolled.model,
        )
        self.state.save_identity(self.identity)
        self.log.info("enrolled client=%s name=%s samples=%d", enrolled.id, enrolled.name, self.data.samples)

    def join(self) -> None:
        """The public set (generated, verified, cached) and the federation's dimension."""
        with self.stopper.abandonable():
            manifest = self._client_call(self.client.public_set)
        embed_dim = manifest.get("embed_dim")
        if isinstance(embed_dim, int):
            self._check_dim(embed_dim)
        with self.reporter.step("public set", manifest.get("size"), "items"):
            self.public: PublicSet = obtain_public_set(manifest, self.state.public, self.tokenizer)
        pinned = "image_size" in self.data_spec.options
        if self.data.image_size not in (None, self.public.image_size) and not pinned:
            self.data = self.data_spec.load(self.settings.modality, self.tokenizer, image_size=self.public.image_size)

    def work(self) -> int:
        """Poll for tasks and do them until the federation is done (or one, with ``once``)."""
        while True:
            with self.stopper.abandonable():
                polled = time.monotonic()
                task = self._client_call(lambda: self.client.next_task(self.settings.poll_wait_s))
            if isinstance(task, DoneTask):
                self.log.info("federation done reason=%r rounds_worked=%d", task.reason, self.rounds_done)
                return EXIT_OK
            if isinstance(task, WaitTask):
                if time.monotonic() - polled < 0.5 and self.stopper.event.wait(min(task.retry_after, 30.0)):
                    raise AgentStopped("stop requested")
                continue
            self.do_round(task)
            self.rounds_done += 1
            if self.settings.once:
                self.log.info("once: leaving after round=%d", task.round)
                return EXIT_OK

    # --- one round -----------------------------------------------------------------------------

    def do_round(self, task: TrainTask) -> None:
        key = task_key(task)
        record = self.state.load_record()
        current = record.round if record.round is not None and record.round.key == key else None
        if current is None:
            self.log.info("round=%d attempt=%d task rows=%d", task.round, task.attempt, len(task.subset))
            record = self._train(task, record, key)
            assert record.round is not None
            current = record.round
        else:
            self.log.info("round=%d resuming: already trained, delivering its payloads", task.round)
        self._deliver(task, record, current)
        self.state.forget_globals(keep=set(task.global_sha256.values()))

    def _train(self, task: TrainTask, record: Record, key: str) -> Record:
        self._check_dim(task.embed_dim)
        subset = torch.tensor(task.subset, dtype=torch.long)
        if len(task.subset) == 0 or int(subset.max()) >= len(self.public) or int(subset.min()) < 0:
            raise AgentError(f"round {task.round} names public rows outside the {len(self.public)}-item public set")
        loaded = self._model(task, record.model)
        spec = task.training
        config = ClientTrainingConfig(
            local_epochs=spec.local_epochs,
            batch_size=self.settings.batch_size or spec.batch_size,
            gamma=spec.gamma,
            tau=spec.tau,
            inter=spec.inter,
            intra=spec.intra,
        )
        for group in loaded.optimizer.param_groups:
            group["lr"] = spec.lr
        started = time.perf_counter()
        global_reps = self._globals(task, loaded.model) if (spec.inter or spec.intra) else None
        download_seconds = time.perf_counter() - started
        public = PublicInputs(images=self.public.images[subset], token_ids=self.public.token_ids[subset])
        stats = self._local_training(task, loaded, public, global_reps, config, key)
        started = time.perf_counter()
        with self.reporter.step("encode", len(subset), "items", round=task.round):
            batch = min(self.settings.batch_size or ENCODE_BATCH, ENCODE_BATCH)
            reps = encode_public(loaded.model, public, batch_size=batch, device=self.device)
        encode_seconds = time.perf_counter() - started
        outbox: dict[str, str] = {}
        for modality in loaded.model.modalities:
            body = encode_payload({modality: reps[modality]}, dtype=task.payload_dtype, indices=subset)
            name = f"r{task.round}-{modality}-{hashlib.sha256(body).hexdigest()[:16]}.safetensors"
            write_atomic(self.state.outbox / name, body)
            outbox[modality] = name
        model_file = f"model-r{task.round}-{key[:12]}.safetensors"
        write_atomic(self.state.root / model_file, save_training_state(loaded.model, loaded.optimizer))
        previous = record.model.rounds_trained if record.model is not None else 0
        built_as = loaded.built_as
        model_record = ModelRecord(
            spec=built_as[0],
            embed_dim=built_as[1],
            vocab_size=built_as[2],
            num_classes=built_as[3],
            file=model_file,
            rounds_trained=previous + 1,
            last_round=task.round,
        )
        metrics = {
            "task_loss": stats.task_loss,
            "inter_loss": stats.inter_loss,
            "intra_loss": stats.intra_loss,
            "steps": float(stats.steps),
            "train_seconds": stats.seconds,
            "encode_seconds": encode_seconds,
            "download_seconds": download_seconds,
            "samples": float(self.data.samples),
            "public_rows": float(len(subset)),
            "rounds_trained": float(previous + 1),
        }
        committed = Record(
            model=model_record, round=RoundRecord(round=task.round, key=key, outbox=outbox, metrics=metrics)
        )
        self.state.save_record(committed)
        loaded.file = model_file
        self.log.info(
            "round=%d trained task_loss=%.4f inter_loss=%.4f intra_loss=%.4f steps=%d seconds=%.2f",
            task.round,
            stats.task_loss,
            stats.inter_loss,
            stats.intra_loss,
            stats.steps,
            stats.seconds,
        )
        return committed

    def _local_training(
        self,
        task: TrainTask,
        loaded: _Loaded,
        public: PublicInputs,
        global_reps: dict[Modality, torch.Tensor] | None,
        config: ClientTrainingConfig,
        key: str,
    ) -> Any:
        regularise = global_reps is not None and (config.inter or config.intra)
        per_epoch = math.ceil(len(self.data.task) / config.batch_size)
        per_epoch += math.ceil(len(public) / config.batch_size) if regularise else 0
        total = per_epoch * config.local_epochs
        steps = [0]
        seed = int.from_bytes(hashlib.sha256(f"{self._seed_name}:{key}".encode()).digest()[:8], "little") >> 1
        with (
            self.stopper.abandonable(),
            self.reporter.step("train", total, "steps", round=task.round, epochs=config.local_epochs) as update,
        ):

            def after_step(*_: Any) -> None:
                steps[0] += 1
                update(steps[0], total)
                self.stopper.check()

            hook = loaded.optimizer.register_step_post_hook(after_step)
            try:
                return train_client_round(
                    loaded.model,
                    loaded.optimizer,
                    self.data.task,
                    public,
                    global_reps,
                    config,
                    generator=torch.Generator().manual_seed(seed),
                    device=self.device,
                )
            except BaseException:
                self._loaded = None  # half-trained: the next round reloads the committed state
                raise
            finally:
                hook.remove()

    def _globals(self, task: TrainTask, model: ClientModel) -> dict[Modality, torch.Tensor]:
        """The global representations the regularisers need, downloaded (or cached) and checked."""
        needed: set[Modality] = set()
        for modality in model.modalities:
            if task.training.intra:
                needed.add(modality)
            if task.training.inter:
                needed.add(other_modality(modality))
        reps: dict[Modality, torch.Tensor] = {}
        for modality in sorted(needed):
            if modality not in task.global_urls or modality not in task.global_sha256:
                raise AgentError(f"round {task.round} publishes no {modality} global representations")
            with (
                self.stopper.abandonable(),
                self.reporter.step("download", None, "bytes", round=task.round, modality=modality) as update,
            ):
                path = self._client_call(
                    lambda m=modality: self.client.download_global(
                        task.global_urls[m],
                        expected_sha256=task.global_sha256[m],
                        cache_dir=self.state.globals,
                        progress=update,
                    )
                )
            data = path.read_bytes()
            try:
                rep = decode_payload(data)[modality]
                indices = payload_indices(data)
            except (KeyError, ValueError) as exc:
                raise AgentError(
                    f"round {task.round}: the {modality} global representations are unreadable: {exc}"
                ) from exc
            if tuple(rep.shape) != (len(task.subset), task.embed_dim):
                raise AgentError(
                    f"round {task.round}: {modality} global representations have shape {list(rep.shape)}, "
                    f"expected [{len(task.subset)}, {task.embed_dim}]"
                )
            if indices is not None and indices.tolist() != task.subset:
                raise AgentError(f"round {task.round}: the {modality} global representations are of other rows")
            reps[modality] = rep
        return reps

    def _deliver(self, task: TrainTask, record: Record, current: RoundRecord) -> None:
        """Upload what is not uploaded yet (a repeat is harmless), then report the metrics once."""
        started = time.perf_counter()
        for modality, name in sorted(current.outbox.items()):
            if modality in current.uploaded or current.closed:
                continue
            body = (self.state.outbox / name).read_bytes()
            url = task.upload_urls.get(modality)  # type: ignore[call-overload]
            if url is None:
                raise AgentError(f"round {task.round} takes no {modality} upload from this client")
            with self.reporter.step("upload", len(body), "bytes", round=task.round, modality=modality) as update:
                try:
                    result = self._client_call(lambda u=url, b=body: self.client.upload(u, b, progress=update))
                    outcome = "created" if result.created else "already stored (repeat)"
                except Rejected as exc:
                    outcome = self._upload_refused(task, modality, exc, current)
            self.log.info("round=%d upload modality=%s outcome=%r", task.round, modality, outcome)
            if not current.closed:
                current.uploaded.append(modality)
            self.state.save_record(record)
        if current.reported or current.closed:
            return
        metrics = {**current.metrics, "upload_seconds": time.perf_counter() - started}
        dropped = sorted(name for name, value in metrics.items() if not math.isfinite(value))
        if dropped:  # JSON carries no NaN/Inf: a diverged loss is reported by its absence, and logged
            self.log.warning("round=%d non-finite metrics not reported: %s", task.round, ", ".join(dropped))
            metrics = {name: value for name, value in metrics.items() if name not in dropped}
        try:
            self._client_call(lambda: self.client.report(task.round, metrics))
        except Rejected as exc:
            self.log.warning("round=%d report refused: %s", task.round, exc)
        current.reported = True
        self.state.save_record(record)

    def _upload_refused(self, task: TrainTask, modality: str, exc: Rejected, current: RoundRecord) -> str:
        if exc.status == 410:
            current.closed = True
            self.log.warning("round=%d closed before this upload (deadline passed?): %s", task.round, exc.reason)
            return "round closed"
        if exc.status == 409:
            self.log.warning("round=%d a different %s upload is stored; the coordinator keeps it", task.round, modality)
            return "conflict: the first upload stands"
        raise AgentError(
            f"the coordinator refused this client's {modality} representations for round {task.round}: "
            f"HTTP {exc.status} ({exc.code}): {exc.reason}; check that agent and coordinator versions match"
        ) from exc

    # --- the model -----------------------------------------------------------------------------

    def _model(self, task: TrainTask, record: ModelRecord | None) -> _Loaded:
        built_as = (self.model_spec.name, task.embed_dim, self.tokenizer.vocab_size, self.data.num_classes)
        if record is not None and record.built_as() != built_as:
            raise ConfigError(
                f"the state dir {self.settings.state_dir} holds a model built as (model, dim, vocabulary, classes) "
                f"= {record.built_as()}, but this run needs {built_as}: keep the original --model and --data, or "
                f"move {self.state.root / 'state.json'} away to train a fresh model"
            )
        file = record.file if record is not None else None
        if self._loaded is not None and (self._loaded.built_as, self._loaded.file) == (built_as, file):
            return self._loaded
        init_seed = self.data.init_seed
        if init_seed is None:
            init_seed = int.from_bytes(hashlib.sha256(self.client_id.encode()).digest()[:4], "little")
        torch.manual_seed(init_seed)
        model = build_client_model(
            self.model_spec.name,
            embed_dim=task.embed_dim,
            vocab_size=self.tokenizer.vocab_size,
            num_classes=max(self.data.num_classes, 1),
        ).to(self.device)
        optimizer = torch.optim.Adam(model.parameters(), lr=task.training.lr)
        if file is not None:
            try:
                load_training_state(model, optimizer, (self.state.root / file).read_bytes())
            except (OSError, RuntimeError, ValueError, KeyError) as exc:
                raise ConfigError(
                    f"the model state {self.state.root / file} is unreadable ({exc}); move "
                    f"{self.state.root / 'state.json'} away to train a fresh model"
                ) from exc
            self.log.info("model loaded file=%s rounds_trained=%d", file, record.rounds_trained if record else 0)
        self._loaded = _Loaded(built_as=built_as, file=file, model=model, optimizer=optimizer)
        return self._loaded

    # --- checks and error mapping --------------------------------------------------------------

    @property
    def client_id(self) -> str:
        assert self.identity is not None
        return self.identity.client_id

    @property
    def _seed_name(self) -> str:
        """What seeds local training: the built-in share's init seed (the same numbers on every run of
        the same federation), else the client id."""
        init_seed = self.data.init_seed
        return self.client_id if init_seed is None else f"builtin-{init_seed}"

    def _check_identity(self, identity: Identity) -> None:
        s = self.settings
        where = self.state.root / "identity.json"
        if identity.federation_id != s.federation:
            raise ConfigError(
                f"the state dir {s.state_dir} belongs to client {identity.client_id} of federation "
                f"{identity.federation_id}, not {s.federation}: use another --state-dir for this federation"
            )
        if sorted(identity.modalities) != sorted(s.modalities) or identity.model != self.model_spec.name:
            raise ConfigError(
                f"client {identity.client_id} ({where}) enrolled with modalities {identity.modalities} and model "
                f"{identity.model}; it cannot change to {s.modalities} with {self.model_spec.name}: keep the "
                "original --modality/--model, or use another --state-dir to enroll a new client"
            )
        if identity.coordinator != s.coordinator:
            self.log.warning(
                "the coordinator URL changed from %s to %s; resuming client=%s",
                identity.coordinator,
                s.coordinator,
                identity.client_id,
            )

    def _check_dim(self, embed_dim: int) -> None:
        if self.model_spec.dim is not None and self.model_spec.dim != embed_dim:
            raise ConfigError(
                f"--model {self.model_spec.name}:{self.model_spec.dim} has dimension {self.model_spec.dim}, but "
                f"federation {self.settings.federation} uses {embed_dim}: use --model "
                f"{self.model_spec.name}:{embed_dim} (or leave the dimension out)"
            )

    def _client_call(self, call: Any) -> Any:
        """Run a call that needs the client token; map the refusals only the operator can fix."""
        try:
            return call()
        except Rejected as exc:
            where = self.state.root / "identity.json"
            if exc.status == 401:
                raise ConfigError(
                    f"the coordinator does not accept this agent's client token ({where}): {exc.reason}; if the "
                    "federation was recreated, move the state dir away to enroll afresh"
                ) from exc
            if exc.status == 403:
                raise ConfigError(
                    f"the coordinator refuses this client: {exc.reason}; ask the federation's admin"
                ) from exc
            if exc.status == 404 and exc.what in ("public set", "next task"):
                raise ConfigError(
                    f"{exc.what}: {exc.reason}; check --federation and --coordinator ({self.settings.coordinator})"
                ) from exc
            raise

    def _enroll_error(self, exc: Rejected, name: str) -> AgentError:
        s = self.settings
        if exc.status == 401:
            return ConfigError(
                f"the coordinator refused the join token for federation {s.federation}: {exc.reason}; "
                "check --join-token (CREAMFL_AGENT_JOIN_TOKEN)"
            )
        if exc.status == 404:
            return ConfigError(
                f"federation {s.federation} does not exist at {s.coordinator}: {exc.reason}; check --federation"
            )
        if exc.status == 409 and "name" in exc.details:
            return ConfigError(
                f"a client named {name!r} is already enrolled in federation {s.federation}, and the state dir "
                f"{s.state_dir} holds no identity for it: pass another --name, or the --state-dir that client used"
            )
        return ConfigError(
            f"the coordinator refused to enroll this client: HTTP {exc.status} ({exc.code}): {exc.reason}"
        )


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but no CUDA device is visible to torch: use --device cpu (or auto)")
    return torch.device(setting)


def task_key(task: TrainTask) -> str:
    """What makes a task's result reusable: its round, the global representations and the subset."""
    body = json.dumps({"round": task.round, "globals": dict(sorted(task.global_sha256.items())), "subset": task.subset})
    return hashlib.sha256(body.encode()).hexdigest()
