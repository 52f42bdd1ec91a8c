"""Who takes part in a simulated federation: the server with its data, and the clients with their shares.

This module builds the federation on the built-in data (:func:`builtin_federation`);
:mod:`creamfl.scenario_federation` builds one on data from disk with the same pieces. The demo
starts one agent per :func:`client_layout` slot, and an agent holding the built-in share ``I``
builds its model under :func:`client_init_seed`, so a simulated client and that agent start from
the same weights and the same data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from creamfl.data.builtin import BuiltinSpec, builtin_split
from creamfl.data.partition import dirichlet_partition
from creamfl.data.scenes import CLASS_NAMES, Scenes
from creamfl.data.types import ImageSource
from creamfl.models import ClientModel
from creamfl.rounds import Server, ServerData, client_stream, client_tokenizer, new_client_model, new_server
from creamfl.rounds.server import server_data
from creamfl.sim_config import SimulationConfig
from creamfl.text import Tokenizer, WordTokenizer
from creamfl.training import TaskData


@dataclass
class SimulatedClient:
    name: str
    model_spec: str
    stream: str  # its local-training random stream (creamfl.rounds.seeds.client_stream)
    model: ClientModel
    optimizer: torch.optim.Optimizer
    private: TaskData
    public_token_ids: torch.Tensor  # [N_public, L] with this client's tokenizer


@dataclass
class Federation:
    """What a simulation runs: its config (sizes and client counts as the data has them), the server,
    the server's data (the upper bound's pooled pairs for ``centralized``) and the clients."""

    config: SimulationConfig
    server: Server
    data: ServerData
    clients: list[SimulatedClient]
    sources: dict[str, Any] = field(default_factory=lambda: {"kind": "builtin"})  # where the data came from


def builtin_federation(config: SimulationConfig) -> Federation:
    """The federation on the built-in scenes, with the built-in word tokenizer."""
    server = new_server(config.round_config(), device=config.device)
    public = public_scenes(config)  # generated once: the server's pairs and the clients' captions
    data = build_data(config, server.tokenizer, public)
    clients = build_clients(config, public) if config.federated else []
    if config.strategy == "centralized":
        data = ServerData(centralized_pairs(config, data, server.tokenizer), data.evaluation)
    return Federation(config, server, data, clients)


def build_data(config: SimulationConfig, server_tokenizer: Tokenizer, public: Scenes) -> ServerData:
    """The server's data: ``public`` (the clients hold the same split) and the test split."""
    return server_data(public, builtin_split(_spec(config), "test"), server_tokenizer)


@dataclass(frozen=True)
class ClientSlot:
    """One client of a simulated federation: its place in the client order, name, kind and model."""

    number: int  # 0-based, in the federation's client order
    name: str  # e.g. "image-0", "multimodal-1"
    kind: str  # image, text or multimodal
    model_spec: str  # e.g. "image-cnn-s"


def client_layout(config: SimulationConfig) -> list[ClientSlot]:
    """The built-in federation's clients: ``image_clients`` image, then text, then image+text clients.
    The demo starts one agent per slot."""
    kinds = ["image"] * config.image_clients + ["text"] * config.text_clients
    kinds += ["multimodal"] * config.multimodal_clients
    return layout_clients(config, [(kind, None) for kind in kinds])


def layout_clients(config: SimulationConfig, clients: Sequence[tuple[str, str | None]]) -> list[ClientSlot]:
    """Slots for ``(kind, model)`` clients in this order, each named ``KIND-POSITION``; a client
    without a model of its own takes its kind's next model size (``config.image_models``, ...)."""
    sizes = {"image": config.image_models, "text": config.text_models, "multimodal": config.multimodal_models}
    slots = []
    counters: dict[str, int] = {}
    for number, (kind, model) in enumerate(clients):
        position = counters[kind] = counters.get(kind, -1) + 1
        chosen = model or sizes[kind][position % len(sizes[kind])]
        slots.append(ClientSlot(number, f"{kind}-{position}", kind, chosen))
    return slots


def simulated_client(
    config: SimulationConfig,
    slot: ClientSlot,
    private: TaskData,
    *,
    vocab_size: int,
    num_classes: int,
    public_token_ids: Tensor,
) -> SimulatedClient:
    """The client in ``slot``, its model built under :func:`client_init_seed` and trained on ``private``."""
    init_seed = client_init_seed(config.seed, slot.number)
    model = new_client_model(
        slot.model_spec,
        init_seed=init_seed,
        embed_dim=config.embed_dim,
        vocab_size=vocab_size,
        num_classes=num_classes,
        device=config.device,
    )
    return SimulatedClient(
        name=slot.name,
        model_spec=slot.model_spec,
        stream=client_stream(init_seed=init_seed, client_id=slot.name),
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=config.client_lr),
        private=private,
        public_token_ids=public_token_ids,
    )


def build_clients(config: SimulationConfig, public: Scenes) -> list[SimulatedClient]:
    """Image, text and image+text clients over disjoint, Dirichlet non-IID shares of the private pool."""
    if config.total_clients == 0:
        return []
    private, shares = _private_shares(config)
    tokenizer = client_tokenizer()
    public_ids = tokenizer.encode([c[0] for c in public.captions])
    return [
        simulated_client(
            config,
            slot,
            _private_task(slot.kind, private.subset(share), tokenizer, seed=config.seed + slot.number),
            vocab_size=tokenizer.vocab_size,
            num_classes=len(CLASS_NAMES),
            public_token_ids=public_ids,
        )
        for slot, share in zip(client_layout(config), shares, strict=True)
    ]


def client_init_seed(seed: int, number: int) -> int:
    """The torch seed client ``number`` (0-based, in the federation's client order) builds its model
    under; an agent with ``--data builtin:SEED:I/K`` uses it too, so it starts from the same weights."""
    return seed * 7919 + number + 1


def centralized_pairs(config: SimulationConfig, data: ServerData, tokenizer: Tokenizer) -> TaskData:
    """The upper bound's training set: the public pairs plus every multimodal client's pairs."""
    private, shares = _private_shares(config)
    paired = shares[config.image_clients + config.text_clients :]
    own = private.subset(torch.cat(paired) if paired else torch.zeros(0, dtype=torch.long))
    own_pairs = own.pairs()
    return pooled_pairs(
        data.public_pairs, [TaskData(own.images, tokenizer.encode(own_pairs.captions), own_pairs.caption_image)]
    )


def pooled_pairs(public: TaskData, paired: Sequence[TaskData]) -> TaskData:
    """The public pairs followed by every dataset of ``paired`` (caption ids in the server's tokenizer)."""
    parts = [public, *paired]
    starts = [0]
    for part in parts[:-1]:
        starts.append(starts[-1] + len(part))
    caption_image = []
    for part, start in zip(parts, starts, strict=True):
        assert part.caption_image is not None, "pooled pairs are image-caption pairs"
        caption_image.append(part.caption_image + start)
    return TaskData(
        inputs=ConcatenatedImages(tuple(part.inputs for part in parts)),
        targets=torch.cat([part.targets for part in parts]),
        caption_image=torch.cat(caption_image),
    )


@dataclass(frozen=True)
class ConcatenatedImages:
    """Image sources one after another, read through without copying."""

    parts: tuple[ImageSource, ...]

    def __len__(self) -> int:
        return sum(len(part) for part in self.parts)

    def __getitem__(self, index: Tensor) -> Tensor:
        index = index.reshape(-1)  # [B]
        ends = torch.tensor([len(part) for part in self.parts]).cumsum(0)  # [P]
        owner = torch.bucketize(index, ends, right=True)  # [B]: the part each row lies in
        batch: Tensor | None = None
        for number, part in enumerate(self.parts):
            mine = owner == number
            if not bool(mine.any()):
                continue
            rows = part[index[mine] - (ends[number] - len(part))]
            if batch is None:
                batch = torch.empty((index.shape[0], *rows.shape[1:]), dtype=rows.dtype)
            batch[mine] = rows
        return batch if batch is not None else self.parts[0][index]


def public_scenes(config: SimulationConfig) -> Scenes:
    """The public split itself (images and every caption), as clients regenerate it."""
    return builtin_split(_spec(config), "public")


def _private_shares(config: SimulationConfig) -> tuple[Scenes, list[torch.Tensor]]:
    """The private pool and each client's share of it, in client order (image, text, multimodal)."""
    private = builtin_split(_spec(config), "private")
    if config.total_clients == 0:
        return private, []
    shares = dirichlet_partition(
        private.labels, config.total_clients, alpha=config.dirichlet_alpha, seed=config.seed, min_size=8
    )
    return private, shares


def _private_task(kind: str, scenes: Scenes, tokenizer: WordTokenizer, *, seed: int) -> TaskData:
    if kind == "image":
        return TaskData(scenes.images, scenes.labels)
    if kind == "text":
        texts = scenes.labelled_texts(seed)
        return TaskData(tokenizer.encode(texts.texts), texts.labels)
    pairs = scenes.pairs()
    return TaskData(scenes.images, tokenizer.encode(pairs.captions), pairs.caption_image)


def _spec(config: SimulationConfig) -> BuiltinSpec:
    return BuiltinSpec(
        seed=config.seed,
        public_size=config.public_size,
        test_size=config.test_size,
        private_size=config.private_per_client * max(config.total_clients, 1),
        image_size=config.image_size,
    )
