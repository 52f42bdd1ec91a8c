"""A text-only client: a small BiGRU classifier whose penultimate layer is the representation."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor, nn

from creamfl.models.client_base import ClientModel
from creamfl.models.common import Modality, unit
from creamfl.models.gru_text import GRUTextConfig, GRUTextEncoder


@dataclass(frozen=True)
class TextClassifierConfig:
    num_classes: int
    embed_dim: int = 256
    encoder: GRUTextConfig = field(default_factory=GRUTextConfig)
    logit_scale: float = 16.0


class TextClassifier(ClientModel):
    # No ReLU before the normalisation (the reference had one, which confined text to one orthant).
    modalities: tuple[Modality, ...] = ("text",)

    def __init__(self, config: TextClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_dim = config.embed_dim
        self.encoder = GRUTextEncoder(config.encoder)
        self.projection = nn.Linear(config.encoder.out_features, config.embed_dim)
        self.classifier = nn.Linear(config.embed_dim, config.num_classes, bias=False)

    def encode(self, modality: Modality, inputs: Tensor) -> Tensor:
        if modality != "text":
            raise ValueError(f"a text classifier has no {modality} representation")
        return unit(self.projection(self.encoder(inputs)))

    def task_loss(self, first: Tensor, second: Tensor) -> Tensor:
        z = self.encode("text", first)  # [B, d]
        logits = self.config.logit_scale * z @ unit(self.classifier.weight).T  # [B, C]
        return F.cross_entropy(logits, second)
