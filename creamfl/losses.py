"""The losses of CreamFL (DESIGN.md section 2) as pure functions. All representations are unit vectors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def inter_modal_contrast(local: Tensor, global_other: Tensor, targets: Tensor, *, tau: float) -> Tensor:
    """A client's representation of public sample i must pick out the other modality's global i.

    ``local``: ``[B, d]`` the client's representations of a batch of public samples.
    ``global_other``: ``[n, d]`` the server's representations of the whole public subset (the
    negatives are all n, as in the paper). ``targets``: ``[B]`` row of each sample in ``global_other``.
    """
    logits = local @ global_other.T / tau  # [B, n]
    return F.cross_entropy(logits, targets)


def intra_modal_contrast(local: Tensor, global_same: Tensor, previous: Tensor, *, tau: float) -> Tensor:
    """MOON-style: pull towards the global representation, away from the round-start local model.

    ``local``, ``global_same`` (the server's representation, same modality, same samples) and
    ``previous`` (a frozen copy of this client's model from the start of the round): ``[B, d]``.
    """
    positive = (local * global_same).sum(-1)  # [B]
    negative = (local * previous).sum(-1)  # [B]
    logits = torch.stack([positive, negative], dim=1) / tau  # [B, 2]
    return F.cross_entropy(logits, torch.zeros(local.shape[0], dtype=torch.long, device=local.device))


def representation_distillation(server: Tensor, target: Tensor) -> Tensor:
    """Mean squared error of the server's representations ``[B, d]`` to the aggregates ``[B, d]``.

    The caller multiplies by kd_weight, once per modality (the reference added it twice).
    """
    return F.mse_loss(server, target)


def retrieval_loss(image: Tensor, text: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE over a batch of matched pairs; row i of each is a positive pair.

    ``image``, ``text``: ``[B, d]``. ``logit_scale``: a scalar log-temperature, learnable; clamped
    so the temperature stays in [1/100, 1] as in CLIP. The batch must hold distinct images: a
    second caption of the same image would count as a negative.
    """
    scale = logit_scale.clamp(0.0, 4.6052).exp()
    logits = scale * image @ text.T  # [B, B]
    targets = torch.arange(image.shape[0], device=image.device)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))
