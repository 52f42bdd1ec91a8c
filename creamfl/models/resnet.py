"""A configurable ResNet-style CNN image encoder, sized for small images (32-64 px)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from creamfl.models.common import image_to_float


@dataclass(frozen=True)
class ResNetConfig:
    widths: tuple[int, ...] = (32, 64, 128)  # channels per stage; every stage after the first halves H, W
    blocks_per_stage: int = 1

    @property
    def out_features(self) -> int:
        return self.widths[-1]


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNetEncoder(nn.Module):
    """uint8 images ``[B, 3, H, W]`` to pooled features ``[B, widths[-1]]``."""

    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        if not config.widths or config.blocks_per_stage < 1:
            raise ValueError("a ResNet needs at least one stage and one block per stage")
        self.stem = nn.Sequential(
            nn.Conv2d(3, config.widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(config.widths[0]),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        in_ch = config.widths[0]
        for stage, width in enumerate(config.widths):
            for block in range(config.blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(BasicBlock(in_ch, width, stride))
                in_ch = width
        self.blocks = nn.Sequential(*blocks)

    def forward(self, images: Tensor) -> Tensor:
        x = self.blocks(self.stem(image_to_float(images)))  # [B, C, h, w]
        return x.mean(dim=(2, 3))  # [B, C]
