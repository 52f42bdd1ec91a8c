"""Named client model sizes, so a federation (or a CLI flag) can say "image-cnn-m" and mean one thing."""

from __future__ import annotations

from collections.abc import Callable

from creamfl.models.client_base import ClientModel
from creamfl.models.common import Modality
from creamfl.models.dual_encoder import DualEncoder, DualEncoderConfig
from creamfl.models.gru_text import GRUTextConfig
from creamfl.models.image_classifier import ImageClassifier, ImageClassifierConfig
from creamfl.models.resnet import ResNetConfig
from creamfl.models.text_classifier import TextClassifier, TextClassifierConfig

_SMALL_CNN = ResNetConfig(widths=(16, 32, 64))
_MEDIUM_CNN = ResNetConfig(widths=(32, 64, 128))


def _gru(vocab_size: int, hidden: int) -> GRUTextConfig:
    return GRUTextConfig(vocab_size=vocab_size, embedding_dim=hidden, hidden_size=hidden)


Factory = Callable[[int, int, int], ClientModel]  # (embed_dim, vocab_size, num_classes) -> model

CLIENT_MODELS: dict[str, tuple[tuple[Modality, ...], Factory]] = {
    "image-cnn-s": (("image",), lambda d, v, c: ImageClassifier(ImageClassifierConfig(c, d, _SMALL_CNN))),
    "image-cnn-m": (("image",), lambda d, v, c: ImageClassifier(ImageClassifierConfig(c, d, _MEDIUM_CNN))),
    "text-gru-s": (("text",), lambda d, v, c: TextClassifier(TextClassifierConfig(c, d, _gru(v, 48)))),
    "text-gru-m": (("text",), lambda d, v, c: TextClassifier(TextClassifierConfig(c, d, _gru(v, 96)))),
    "dual-s": (("image", "text"), lambda d, v, c: DualEncoder(DualEncoderConfig(d, _SMALL_CNN, _gru(v, 48)))),
    "dual-m": (
        ("image", "text"),
        lambda d, v, c: DualEncoder(DualEncoderConfig(d, _MEDIUM_CNN, _gru(v, 96))),
    ),
}


def client_model_modalities(spec: str) -> tuple[Modality, ...]:
    """What a named model can represent, without building it (an agent checks its data against this)."""
    return _entry(spec)[0]


def build_client_model(spec: str, *, embed_dim: int, vocab_size: int, num_classes: int) -> ClientModel:
    """A fresh client model of a named size; ``num_classes`` is ignored by image+text models."""
    return _entry(spec)[1](embed_dim, vocab_size, num_classes)


def _entry(spec: str) -> tuple[tuple[Modality, ...], Factory]:
    if spec not in CLIENT_MODELS:
        raise ValueError(f"unknown client model {spec!r}; choose one of {', '.join(CLIENT_MODELS)}")
    return CLIENT_MODELS[spec]
