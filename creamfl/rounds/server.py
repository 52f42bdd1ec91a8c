"""The server a round trains: its model, optimizer and tokenizer, and the data it trains and is scored on."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from creamfl.data.builtin import BuiltinSpec, builtin_split
from creamfl.data.scenes import Scenes, vocabulary
from creamfl.data.types import ImageSource, ImageTextPairs
from creamfl.models import BertTextConfig, ClientModel, ResNetConfig, ServerConfig, ServerModel, build_client_model
from creamfl.rounds.config import RoundConfig
from creamfl.rounds.seeds import seeded_global_rng
from creamfl.text import PretrainedTokenizer, Tokenizer, WordTokenizer, minilm_path
from creamfl.training import PublicInputs, TaskData
from shared_schemas.vocabulary import TextEncoder


@dataclass
class Server:
    model: ServerModel
    optimizer: torch.optim.Optimizer
    tokenizer: Tokenizer


@dataclass(frozen=True)
class EvaluationSet:
    """Held-out pairs, several captions per image: ``caption_ids`` ``[M, L]`` (server token ids),
    ``caption_image`` ``[M]`` the image of each caption."""

    images: ImageSource  # N x [3, H, W] uint8
    caption_ids: torch.Tensor
    caption_image: torch.Tensor


@dataclass(frozen=True)
class ServerData:
    """What the server sees: the public pairs (one caption per public item, server token ids) and the
    evaluation set."""

    public_pairs: TaskData
    evaluation: EvaluationSet

    def public_inputs(self, subset: torch.Tensor) -> PublicInputs:
        """The round's public subset as the server's inputs."""
        return PublicInputs(images=self.public_pairs.inputs[subset], token_ids=self.public_pairs.targets[subset])


def client_tokenizer() -> WordTokenizer:
    """The built-in scenes' word vocabulary (the ``builtin-words`` choice of :mod:`creamfl.tokenizers`)."""
    return WordTokenizer(vocabulary())


def server_tokenizer(text_encoder: TextEncoder, clients: Tokenizer | None = None) -> Tokenizer:
    """all-MiniLM-L6-v2's own tokenizer for ``minilm``; else the federation's client tokenizer
    ``clients`` (default: the built-in words), so the server's and the clients' texts read alike."""
    if text_encoder == "minilm":
        return PretrainedTokenizer(minilm_path())
    return clients if clients is not None else client_tokenizer()


def new_server(config: RoundConfig, *, device: str | torch.device, tokenizer: Tokenizer | None = None) -> Server:
    """A freshly initialised server model (deterministic in the config's seed), its optimizer and
    tokenizer; ``tokenizer`` is the federation's client tokenizer (default: the built-in words)."""
    tokenizer = server_tokenizer(config.server.text_encoder, tokenizer)
    if isinstance(tokenizer, PretrainedTokenizer):
        text = BertTextConfig(pretrained_path=minilm_path(), pad_id=tokenizer.pad_id)
    else:
        text = BertTextConfig(vocab_size=tokenizer.vocab_size, pad_id=tokenizer.pad_id)
    architecture = ServerConfig(
        embed_dim=config.embed_dim, image=ResNetConfig(widths=config.server.image_widths), text=text
    )
    with seeded_global_rng(config.seed):
        model = ServerModel(architecture).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.server.lr, weight_decay=1e-4)
    return Server(model=model, optimizer=optimizer, tokenizer=tokenizer)


def new_client_model(
    name: str, *, init_seed: int, embed_dim: int, vocab_size: int, num_classes: int, device: str | torch.device
) -> ClientModel:
    """A client model from the registry, initialised from ``init_seed`` alone (whatever else runs)."""
    with seeded_global_rng(init_seed):
        model = build_client_model(name, embed_dim=embed_dim, vocab_size=vocab_size, num_classes=num_classes)
    return model.to(device)


def builtin_server_data(spec: BuiltinSpec, tokenizer: Tokenizer) -> ServerData:
    """The public pairs and the test split of the built-in dataset, tokenised for the server."""
    return server_data(builtin_split(spec, "public"), builtin_split(spec, "test"), tokenizer)


def server_data(public: Scenes, test: Scenes, tokenizer: Tokenizer) -> ServerData:
    """The public pairs and the evaluation set from their scenes, tokenised for the server."""
    return pairs_server_data(public.pairs(), test.pairs(), tokenizer)


def pairs_server_data(public: ImageTextPairs, evaluation: ImageTextPairs, tokenizer: Tokenizer) -> ServerData:
    """The public pairs and the evaluation set from image-caption pairs, tokenised for the server."""
    # Each public item is one (image, caption) pair: its first caption. Distinct images, so no item
    # is a false negative of another in the contrastive terms.
    first = public.first_caption_per_image()  # [N]
    return ServerData(
        public_pairs=TaskData(
            public.images,
            tokenizer.encode([public.captions[int(i)] for i in first]),
            torch.arange(public.num_images),
        ),
        evaluation=EvaluationSet(
            images=evaluation.images,
            caption_ids=tokenizer.encode(evaluation.captions),
            caption_image=evaluation.caption_image,
        ),
    )
