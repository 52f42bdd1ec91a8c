"""Small pieces every model shares."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from shared_schemas.vocabulary import Modality

MODALITIES: tuple[Modality, ...] = ("image", "text")


def other_modality(modality: Modality) -> Modality:
    return "text" if modality == "image" else "image"


def image_to_float(images: Tensor) -> Tensor:
    """uint8 ``[B, 3, H, W]`` to float centred near zero (fixed statistics: no augmentation, no state)."""
    return (images.float() / 255.0 - 0.5) / 0.25


def masked_mean(hidden: Tensor, mask: Tensor) -> Tensor:
    """Mean over valid positions. ``hidden``: ``[B, L, H]``; ``mask``: ``[B, L]`` bool. Returns ``[B, H]``."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # [B, L, 1]
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def unit(x: Tensor) -> Tensor:
    return F.normalize(x, dim=-1)


def initial_logit_scale() -> torch.nn.Parameter:
    """CLIP's initial temperature 0.07, learnable."""
    return torch.nn.Parameter(torch.tensor(1 / 0.07).log())
