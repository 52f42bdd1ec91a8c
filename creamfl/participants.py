"""Build a simulated federation from a config: the data splits, the server, and the clients."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from creamfl.data.builtin import BuiltinSpec, builtin_split
from creamfl.data.partition import dirichlet_partition
from creamfl.data.scenes import CLASS_NAMES, Scenes, vocabulary
from creamfl.models import (
    BertTextConfig,
    ClientModel,
    ResNetConfig,
    ServerConfig,
    ServerModel,
    build_client_model,
)
from creamfl.sim_config import SimulationConfig
from creamfl.text import PretrainedTokenizer, Tokenizer, WordTokenizer, minilm_path
from creamfl.training import PublicInputs, TaskData


@dataclass
class SimClient:
    name: str
    model_spec: str
    model: ClientModel
    optimizer: torch.optim.Optimizer
    private: TaskData
    public_token_ids: torch.Tensor  # [N_public, L] with this client's tokenizer


@dataclass
class SimServer:
    model: ServerModel
    optimizer: torch.optim.Optimizer
    tokenizer: Tokenizer


@dataclass
class SimData:
    public: Scenes
    test: Scenes
    public_pairs: TaskData  # server token ids, one caption per public item (the item's first)
    test_caption_ids: torch.Tensor  # [2 N_test, L] server token ids
    test_caption_image: torch.Tensor  # [2 N_test]


def client_tokenizer() -> WordTokenizer:
    return WordTokenizer(vocabulary())


def server_tokenizer(text_encoder: str) -> Tokenizer:
    """all-MiniLM-L6-v2's WordPiece tokenizer for ``minilm``; else the scenes vocabulary."""
    return PretrainedTokenizer(minilm_path()) if text_encoder == "minilm" else client_tokenizer()


def build_server(config: SimulationConfig) -> SimServer:
    return new_server(
        embed_dim=config.embed_dim,
        image_widths=config.server_image_widths,
        text_encoder=config.text_encoder,
        lr=config.server_lr,
        seed=config.seed,
        device=config.device,
    )


def new_server(
    *, embed_dim: int, image_widths: tuple[int, ...], text_encoder: str, lr: float, seed: int, device: str
) -> SimServer:
    """A freshly initialised server model (deterministic in ``seed``), its optimizer and tokenizer."""
    torch.manual_seed(seed)
    tokenizer = server_tokenizer(text_encoder)
    if isinstance(tokenizer, PretrainedTokenizer):
        text = BertTextConfig(pretrained_path=minilm_path(), pad_id=tokenizer.pad_id)
    else:
        text = BertTextConfig(vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id)
    model = ServerModel(ServerConfig(embed_dim=embed_dim, image=ResNetConfig(widths=image_widths), text=text)).to(
        device
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    return SimServer(model=model, optimizer=optimizer, tokenizer=tokenizer)


def build_data(config: SimulationConfig, server_tokenizer: Tokenizer) -> SimData:
    return split_data(_spec(config), server_tokenizer)


def split_data(spec: BuiltinSpec, server_tokenizer: Tokenizer) -> SimData:
    """The public pairs and the test split of the built-in dataset, tokenised for the server."""
    public, test = builtin_split(spec, "public"), builtin_split(spec, "test")
    # Each public item is one (image, caption) pair: its first caption. Distinct images, so no item
    # is a false negative of another in the contrastive terms.
    public_caption_ids = server_tokenizer.encode([c[0] for c in public.captions])
    test_pairs = test.pairs()
    return SimData(
        public=public,
        test=test,
        public_pairs=TaskData(public.images, public_caption_ids, torch.arange(len(public))),
        test_caption_ids=server_tokenizer.encode(test_pairs.captions),
        test_caption_image=test_pairs.caption_image,
    )


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


def build_clients(config: SimulationConfig, public: Scenes) -> list[SimClient]:
    """Image, text and image+text clients over disjoint, Dirichlet non-IID shares of the private pool."""
    if config.total_clients == 0:
        return []
    private, shares = _private_shares(config)
    tokenizer = client_tokenizer()
    public_ids = tokenizer.encode([c[0] for c in public.captions])
    clients = []
    for slot, share in zip(client_layout(config), shares, strict=True):
        torch.manual_seed(client_init_seed(config.seed, slot.number))  # each model's init independent of build order
        model = build_client_model(
            slot.model_spec, embed_dim=config.embed_dim, vocab_size=tokenizer.vocab_size, num_classes=len(CLASS_NAMES)
        ).to(config.device)
        clients.append(
            SimClient(
                name=slot.name,
                model_spec=slot.model_spec,
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


def centralized_pairs(config: SimulationConfig, data: SimData, tokenizer: Tokenizer) -> TaskData:
    """The upper bound's training set: the public pairs plus every multimodal client's pairs."""
    private, shares = _private_shares(config)
    paired = shares[config.image_clients + config.text_clients :]
    own = private.subset(torch.cat(paired) if paired else torch.zeros(0, dtype=torch.long))
    own_pairs = own.pairs()
    public = data.public_pairs
    return TaskData(
        inputs=torch.cat([data.public.images, own.images]),
        targets=torch.cat([public.targets, tokenizer.encode(own_pairs.captions)]),
        caption_image=torch.cat([torch.arange(len(data.public)), own_pairs.caption_image + len(data.public)]),
    )


def public_inputs(images: torch.Tensor, token_ids: torch.Tensor, subset: torch.Tensor) -> PublicInputs:
    return PublicInputs(images=images[subset], token_ids=token_ids[subset])


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
