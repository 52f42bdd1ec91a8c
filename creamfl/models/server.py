"""The server model: a ResNet image encoder and a BERT text encoder projected to a shared d-space."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from creamfl.models.bert_text import BertTextConfig, BertTextEncoder
from creamfl.models.common import Modality, initial_logit_scale, unit
from creamfl.models.resnet import ResNetConfig, ResNetEncoder


@dataclass(frozen=True)
class ServerConfig:
    embed_dim: int = 256
    image: ResNetConfig = field(default_factory=lambda: ResNetConfig(widths=(48, 96, 192), blocks_per_stage=1))
    text: BertTextConfig = field(default_factory=BertTextConfig)


class ServerModel(nn.Module):
    """Both encoders end in a linear projection to ``embed_dim`` and an L2 normalisation."""

    def __init__(self, config: ServerConfig) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = ResNetEncoder(config.image)
        self.text_encoder = BertTextEncoder(config.text)
        self.image_projection = nn.Linear(config.image.out_features, config.embed_dim)
        self.text_projection = nn.Linear(self.text_encoder.out_features, config.embed_dim)
        self.logit_scale = initial_logit_scale()

    def encode_image(self, images: Tensor) -> Tensor:
        """uint8 ``[B, 3, H, W]`` to unit vectors ``[B, d]``."""
        return unit(self.image_projection(self.image_encoder(images)))

    def encode_text(self, token_ids: Tensor) -> Tensor:
        """Token ids ``[B, L]`` to unit vectors ``[B, d]``."""
        return unit(self.text_projection(self.text_encoder(token_ids)))

    def encode(self, modality: Modality, inputs: Tensor) -> Tensor:
        return self.encode_image(inputs) if modality == "image" else self.encode_text(inputs)
