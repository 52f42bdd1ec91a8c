"""An image-only client: a small ResNet classifier whose penultimate layer is the representation."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor, nn

from creamfl.models.client_base import ClientModel
from creamfl.models.common import Modality, unit
from creamfl.models.resnet import ResNetConfig, ResNetEncoder


@dataclass(frozen=True)
class ImageClassifierConfig:
    num_classes: int
    embed_dim: int = 256
    backbone: ResNetConfig = field(default_factory=lambda: ResNetConfig(widths=(16, 32, 64)))
    # Logits are a scaled cosine: the classifier sees the same unit vectors the federation sees.
    logit_scale: float = 16.0


class ImageClassifier(ClientModel):
    modalities: tuple[Modality, ...] = ("image",)

    def __init__(self, config: ImageClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_dim = config.embed_dim
        self.backbone = ResNetEncoder(config.backbone)
        self.projection = nn.Linear(config.backbone.out_features, config.embed_dim)
        self.classifier = nn.Linear(config.embed_dim, config.num_classes, bias=False)

    def encode(self, modality: Modality, inputs: Tensor) -> Tensor:
        if modality != "image":
            raise ValueError(f"an image classifier has no {modality} representation")
        return unit(self.projection(self.backbone(inputs)))

    def task_loss(self, first: Tensor, second: Tensor) -> Tensor:
        z = self.encode("image", first)  # [B, d]
        logits = self.config.logit_scale * z @ unit(self.classifier.weight).T  # [B, C]
        return F.cross_entropy(logits, second)
