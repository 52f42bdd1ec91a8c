"""An image+text client: a small ResNet and a small BiGRU trained for retrieval on its own pairs."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from creamfl.losses import retrieval_loss
from creamfl.models.client_base import ClientModel
from creamfl.models.common import Modality, initial_logit_scale, unit
from creamfl.models.gru_text import GRUTextConfig, GRUTextEncoder
from creamfl.models.resnet import ResNetConfig, ResNetEncoder


@dataclass(frozen=True)
class DualEncoderConfig:
    embed_dim: int = 256
    image: ResNetConfig = field(default_factory=lambda: ResNetConfig(widths=(16, 32, 64)))
    text: GRUTextConfig = field(default_factory=GRUTextConfig)


class DualEncoder(ClientModel):
    modalities: tuple[Modality, ...] = ("image", "text")

    def __init__(self, config: DualEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_dim = config.embed_dim
        self.image_encoder = ResNetEncoder(config.image)
        self.text_encoder = GRUTextEncoder(config.text)
        self.image_projection = nn.Linear(config.image.out_features, config.embed_dim)
        self.text_projection = nn.Linear(config.text.out_features, config.embed_dim)
        self.logit_scale = initial_logit_scale()

    def encode(self, modality: Modality, inputs: Tensor) -> Tensor:
        if modality == "image":
            return unit(self.image_projection(self.image_encoder(inputs)))
        return unit(self.text_projection(self.text_encoder(inputs)))

    def task_loss(self, first: Tensor, second: Tensor) -> Tensor:
        return retrieval_loss(self.encode("image", first), self.encode("text", second), self.logit_scale)
