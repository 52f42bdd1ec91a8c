"""The agent's life: check its configuration, enroll once, obtain the federation's tokenizer and
public set, then work rounds.

Each train task (DESIGN.md section 2, steps 4-5): train locally and commit the payloads and the model
to the state dir (:mod:`client_agent.local_training`), then upload and report
(:mod:`client_agent.delivery`). A restarted agent resumes where it stopped: a committed round is
uploaded, not trained again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import httpx
import torch

from client_agent.checks import check_dim, check_identity, resolve_device
from client_agent.coordinator_client import CoordinatorClient, RetryPolicy
from client_agent.coordinator_errors import Rejected
from client_agent.data import DataSpec, ModelSpec, PrivateData, parse_data_spec, parse_model_spec
from client_agent.delivery import Delivery
from client_agent.errors import EXIT_OK, AgentStopped, ConfigError
from client_agent.global_reps import GlobalReps
from client_agent.local_training import LocalTrainer
from client_agent.progress import Reporter
from client_agent.public_files import PublicFiles
from client_agent.public_set import PublicSet, cached_names, federation_tokenizer, obtain_public_set
from client_agent.refusals import Refusals
from client_agent.settings import AgentSettings
from client_agent.state import Identity, StateDir
from client_agent.stopping import Stopper
from creamfl.text import Tokenizer
from creamfl.tokenizers import BUILTIN_WORDS, UNK_WARN_SHARE, load_tokenizer, unknown_share
from shared_schemas.client import ClientCreate
from shared_schemas.datasets import PublicSetManifest
from shared_schemas.rounds import DoneTask, TrainTask, WaitTask


@dataclass(frozen=True)
class AgentSetup:
    """What :meth:`Agent.prepare` checked without the coordinator."""

    model_spec: ModelSpec
    data_spec: DataSpec
    device: torch.device
    state: StateDir  # locked for this agent
    identity: Identity | None  # None: not enrolled yet (then a join token is given)
    data: PrivateData


@dataclass(frozen=True)
class Member:
    """This client, enrolled and holding the federation's tokenizer and public set: ready for rounds."""

    identity: Identity
    public: PublicSet
    data: PrivateData  # at the public set's image size (unless the data spec pins its own), tokenized by:
    tokenizer: Tokenizer  # the federation's client tokenizer
    unk_share: float | None  # the share of [UNK] among the private text's tokens; None: no text


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
        self.refusals = Refusals(settings)
        self.rounds_done = 0

    # --- the life of the agent -----------------------------------------------------------------

    def run(self) -> int:
        try:
            with self.prepare() as setup:
                member = self.join(setup, self.connect(setup))
                return self.work(setup, member)
        except AgentStopped:
            self.log.info("stopped state_dir=%s (run again to resume)", self.settings.state_dir)
            return EXIT_OK

    @contextlib.contextmanager
    def prepare(self) -> Iterator[AgentSetup]:
        """Everything that can be checked without the coordinator; a ConfigError says what is wrong.
        The state dir stays locked for this agent until the block ends."""
        s = self.settings
        model_spec = parse_model_spec(s.model, s.modality)
        data_spec = parse_data_spec(s.data)
        device = resolve_device(s.device)
        state = StateDir(s.state_dir)
        state.lock()
        try:
            identity = state.load_identity()
            if identity is not None:
                check_identity(identity, s, model_spec, self.log)
            elif s.join_token is None:
                raise ConfigError(
                    f"this agent has not enrolled yet (no identity in {s.state_dir}): pass --join-token "
                    "(CREAMFL_AGENT_JOIN_TOKEN), the federation's join token from its admin"
                )
            if s.threads:
                torch.set_num_threads(s.threads)
            # The built-in words until the coordinator names the federation's tokenizer (in join):
            # enough to check the data and count its samples for enrolling.
            data = data_spec.load(s.modality, load_tokenizer(BUILTIN_WORDS, None), image_size=32)
            self.log.info(
                "configured federation=%s modality=%s model=%s device=%s threads=%d data=%r",
                s.federation,
                s.modality,
                model_spec.name,
                device,
                torch.get_num_threads(),
                data.description,
            )
            yield AgentSetup(model_spec, data_spec, device, state, identity, data)
        finally:
            state.unlock()

    def connect(self, setup: AgentSetup) -> Identity:
        """Resume as the client in the state dir, or enroll (once) and persist the identity."""
        s = self.settings
        if setup.identity is not None:
            self.client.token = setup.identity.token
            self.log.info("resuming client=%s name=%s", setup.identity.client_id, setup.identity.name)
            return setup.identity
        assert s.join_token is not None
        request = ClientCreate(
            name=s.client_name, modalities=s.modalities, model=setup.model_spec.name, samples=setup.data.samples
        )
        try:
            with self.stopper.abandonable():
                enrolled = self.client.enroll(s.join_token.get_secret_value(), request)
        except Rejected as exc:
            raise self.refusals.enrollment(exc, request.name) from exc
        identity = Identity(
            coordinator=s.coordinator,
            federation_id=s.federation,
            client_id=enrolled.id,
            token=enrolled.token,
            name=enrolled.name,
            modalities=list(enrolled.modalities),
            model=enrolled.model,
        )
        setup.state.save_identity(identity)
        self.log.info("enrolled client=%s name=%s samples=%d", enrolled.id, enrolled.name, setup.data.samples)
        return identity

    def join(self, setup: AgentSetup, identity: Identity) -> Member:
        """The federation's dimension, tokenizer and public set (downloaded or generated, verified,
        cached), and the private data tokenized by that tokenizer."""
        with self.stopper.abandonable():
            manifest = self.refusals.call(self.client.public_set)
        check_dim(setup.model_spec, manifest.embed_dim, self.settings.federation)
        files = PublicFiles(self.client, self.refusals, setup.state.public, self.reporter, self.stopper)
        files.keep_only(cached_names(manifest))
        tokenizer = federation_tokenizer(manifest.tokenizer, files)
        public = obtain_public_set(manifest, files, tokenizer)
        data = self._federation_data(setup, manifest, tokenizer)
        share = self._unknown_share(data, tokenizer, manifest.tokenizer.choice)
        return Member(identity, public, data, tokenizer, share)

    def _federation_data(self, setup: AgentSetup, manifest: PublicSetManifest, tokenizer: Tokenizer) -> PrivateData:
        """The private data at the public set's image size and tokenized by the federation's
        tokenizer: read again only when its images must be resized."""
        data = setup.data
        pinned = "image_size" in setup.data_spec.options
        if data.image_size not in (None, manifest.image_size) and not pinned:
            return setup.data_spec.load(self.settings.modality, tokenizer, image_size=manifest.image_size)
        return data if manifest.tokenizer.choice == BUILTIN_WORDS else tokenized(data, tokenizer)

    def _unknown_share(self, data: PrivateData, tokenizer: Tokenizer, choice: str) -> float | None:
        """The share of [UNK] among the private text's tokens, logged (a warning above UNK_WARN_SHARE)."""
        if not data.texts:
            return None
        counted = unknown_share(tokenizer, data.texts)
        self.log.info(
            "private text tokenizer=%s unk_share=%.4f unknown=%d tokens=%d",
            choice,
            counted.share,
            counted.unknown,
            counted.tokens,
        )
        if counted.share > UNK_WARN_SHARE:
            self.log.warning(
                "%.1f%% of this client's text tokens are [UNK] with the federation's tokenizer %s (above %.0f%%): "
                "the model cannot read them; ask the federation's admin for the tokenizer wordpiece-minilm or "
                "trained:V (a vocabulary of V tokens trained on the public captions)",
                100 * counted.share,
                choice,
                100 * UNK_WARN_SHARE,
            )
        return counted.share

    def work(self, setup: AgentSetup, member: Member) -> int:
        """Poll for tasks and do them until the federation is done (or one, with ``once``)."""
        trainer = self._trainer(setup, member)
        delivery = Delivery(self.client, self.refusals, setup.state, self.reporter, self.log)
        while True:
            with self.stopper.abandonable():
                polled = time.monotonic()
                task = self.refusals.call(lambda: self.client.next_task(self.settings.poll_wait_s))
            if isinstance(task, DoneTask):
                self.log.info("federation done reason=%r rounds_worked=%d", task.reason, self.rounds_done)
                return EXIT_OK
            if isinstance(task, WaitTask):
                if time.monotonic() - polled < 0.5 and self.stopper.event.wait(min(task.retry_after, 30.0)):
                    raise AgentStopped("stop requested")
                continue
            self.do_round(task, setup.state, trainer, delivery)
            self.rounds_done += 1
            if self.settings.once:
                self.log.info("once: leaving after round=%d", task.round)
                return EXIT_OK

    # --- one round -----------------------------------------------------------------------------

    def do_round(self, task: TrainTask, state: StateDir, trainer: LocalTrainer, delivery: Delivery) -> None:
        key = task_key(task)
        record = state.load_record()
        current = record.round if record.round is not None and record.round.key == key else None
        if current is None:
            self.log.info("round=%d attempt=%d task rows=%d", task.round, task.attempt, len(task.subset))
            record = trainer.train(task, record, key)
            assert record.round is not None
            current = record.round
        else:
            self.log.info("round=%d resuming: already trained, delivering its payloads", task.round)
        delivery.deliver(task, record, current)
        state.forget_globals(keep=set(task.global_sha256.values()))

    def _trainer(self, setup: AgentSetup, member: Member) -> LocalTrainer:
        global_reps = GlobalReps(self.client, self.refusals, setup.state.globals, self.reporter, self.stopper)
        return LocalTrainer(
            settings=self.settings,
            model_spec=setup.model_spec,
            device=setup.device,
            state=setup.state,
            data=member.data,
            public=member.public,
            client_id=member.identity.client_id,
            tokenizer=member.tokenizer,
            unk_share=member.unk_share,
            global_reps=global_reps,
            reporter=self.reporter,
            stopper=self.stopper,
            log=self.log,
        )


def tokenized(data: PrivateData, tokenizer: Tokenizer) -> PrivateData:
    """``data`` with its texts (a text task's inputs, or a pair task's captions) tokenized by
    ``tokenizer``, without reading the data again."""
    if not data.texts:
        return data
    ids = tokenizer.encode(data.texts)  # [M, L]
    pairs = data.task.caption_image is not None
    return replace(data, task=replace(data.task, targets=ids) if pairs else replace(data.task, inputs=ids))


def task_key(task: TrainTask) -> str:
    """What makes a task's result reusable: its round, the global representations and the subset."""
    body = json.dumps({"round": task.round, "globals": dict(sorted(task.global_sha256.items())), "subset": task.subset})
    return hashlib.sha256(body.encode()).hexdigest()
