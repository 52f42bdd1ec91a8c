"""What every client model offers the training loop, whatever its architecture and modalities."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn

from creamfl.models.common import Modality


class ClientModel(nn.Module, ABC):
    """A client's model: a task loss on its private data and d-dim unit representations per modality.

    ``task_loss`` takes the two tensors of one private batch: ``(inputs, labels)`` for classifiers,
    ``(images, token_ids)`` for image+text models.
    """

    modalities: tuple[Modality, ...]
    embed_dim: int

    @abstractmethod
    def encode(self, modality: Modality, inputs: Tensor) -> Tensor:
        """Unit representations ``[B, d]`` of uint8 images ``[B, 3, H, W]`` or token ids ``[B, L]``."""

    @abstractmethod
    def task_loss(self, first: Tensor, second: Tensor) -> Tensor: ...

    def parameter_bytes(self) -> int:
        """What FedAvg would send for this model each round (float32)."""
        return sum(p.numel() for p in self.parameters()) * 4
