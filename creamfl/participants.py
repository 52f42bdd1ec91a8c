"""Who takes part in a simulated federation: the server's data, and the clients with their shares.

The demo starts one agent per :func:`client_layout` slot, and an agent holding the built-in share
``I`` builds its model under :func:`client_init_seed`, so a simulated client and that agent start
from the same weights and the same data.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from creamfl.data.builtin import BuiltinSpec, builtin_split
from creamfl.data.partition import dirichlet_partition
from creamfl.data.scenes import CLASS_NAMES, Scenes
from creamfl.models import ClientModel
from creamfl.rounds import ServerData, client_stream, client_tokenizer, new_client_model
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


def build_data(config: SimulationConfig, server_tokenizer: Tokenizer, public: Scenes) -> ServerData:
    """The server's data: ``public`` (the clients hold the same split) and the test split."""
    return server_data(public, builtin_split(_spec(config), "test"), server_tokenizer)


@dataclass(frozen=True)
class ClientSlot:
    """One client of a simulated federation: its place in the client order, name, kind and model."""

    number: int  # 0-based, image clients first, then text, then image+text
    name: str  # e.g. "image-0", "multimodal-1"
    kind: str  # image, text or multimodal
    model_spec: str  # e.g. "image-cnn-s"


def client_layout(config: SimulationConfig) -> list[ClientSlot]:
    """Who the clients are: ``image_clients`` image, then text, then image+text clients, each kind
    cycling through its model sizes. The demo starts one agent per slot."""
    kinds = (
        [("image", config.image_models)] * config.image_clients
        + [("text", config.text_models)] * config.text_clients
        + [("multimodal", config.multimodal_models)] * config.multimodal_clients
    )
    slots = []
    counters: dict[str, int] = {}
    for number, (kind, models) in enumerate(kinds):
        position = counters[kind] = counters.get(kind, -1) + 1
        slots.append(ClientSlot(number, f"{kind}-{position}", kind, models[position % len(models)]))
    return slots


def build_clients(config: SimulationConfig, public: Scenes) -> list[SimulatedClient]:
    """Image, text and image+text clients over disjoint, Dirichlet non-IID shares of the private pool."""
    if config.total_clients == 0:
        return []
    private, shares = _private_shares(config)
    tokenizer = client_tokenizer()
    public_ids = tokenizer.encode([c[0] for c in public.captions])
    clients = []
    for slot, share in zip(client_layout(config), shares, strict=True):
        init_seed = client_init_seed(config.seed, slot.number)
        model = new_client_model(
            slot.model_spec,
            init_seed=init_seed,
            embed_dim=config.embed_dim,
            vocab_size=tokenizer.vocab_size,
            num_classes=len(CLASS_NAMES),
            device=config.device,
        )
        clients.append(
            SimulatedClient(
                name=slot.name,
                model_spec=slot.model_spec,
                stream=client_stream(init_seed=init_seed, client_id=slot.name),
                model=model,
                optimizer=torch.optim.Adam(model.parameters(), lr=config.client_lr),
                private=_private_task(slot.kind, private.subset(share), tokenizer, seed=config.seed + slot.number),
                public_token_ids=public_ids,
            )
        )
    return clients


def client_init_seed(seed: int, number: int) -> int:
    """The torch seed client ``number`` (0-based, image, text, then image+text clients) builds its
    model under; an agent with ``--data builtin:SEED:I/K`` uses it too, so it starts from the same weights."""
    return seed * 7919 + number + 1


def centralized_pairs(config: SimulationConfig, data: ServerData, tokenizer: Tokenizer) -> TaskData:
    """The upper bound's training set: the public pairs plus every multimodal client's pairs."""
    private, shares = _private_shares(config)
    paired = shares[config.image_clients + config.text_clients :]
    own = private.subset(torch.cat(paired) if paired else torch.zeros(0, dtype=torch.long))
    own_pairs = own.pairs()
    public = data.public_pairs
    return TaskData(
        inputs=torch.cat([public.inputs[torch.arange(len(public))], own.images]),
        targets=torch.cat([public.targets, tokenizer.encode(own_pairs.captions)]),
        caption_image=torch.cat([torch.arange(len(public)), own_pairs.caption_image + len(public)]),
    )


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
