"""One client's local round and the server's passes (DESIGN.md section 2, steps 1, 2, 4, 5, 7).

Device-agnostic: inputs stay on the CPU as uint8 images / int64 token ids and move to ``device``
one batch at a time. Representations are always extracted in eval mode, without augmentation and
without gradients (the reference extracted them in train mode, with random erasing).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from creamfl.data.types import ImageSource, SubsetSource
from creamfl.losses import (
    inter_modal_contrast,
    intra_modal_contrast,
    representation_distillation,
    retrieval_loss,
)
from creamfl.models.client_base import ClientModel
from creamfl.models.common import Modality, other_modality
from creamfl.models.server import ServerModel


@dataclass(frozen=True)
class TaskData:
    """Items with either a label each or one or more captions each.

    ``inputs``: N items (uint8 images, or token ids ``[N, L]``). ``targets``: labels ``[N]``, or
    caption token ids ``[M, L]`` with ``caption_image`` ``[M]`` naming each caption's item. For
    captions, every epoch draws one caption per item, so a batch never holds two captions of the
    same image (which a contrastive loss would count as negatives).
    """

    inputs: ImageSource
    targets: Tensor
    caption_image: Tensor | None = None

    def __len__(self) -> int:
        return len(self.inputs)

    def epoch_targets(self, generator: torch.Generator) -> Tensor:
        """``[N]`` row of ``targets`` to pair with each item this epoch."""
        if self.caption_image is None:
            return torch.arange(len(self))
        noise = torch.rand(self.caption_image.shape[0], generator=generator)  # [M]
        # Highest noise within each item wins: a uniform random caption per item.
        order = torch.argsort(noise)
        chosen = torch.full((len(self),), -1, dtype=torch.long)
        chosen[self.caption_image[order]] = order
        if bool((chosen < 0).any()):
            raise ValueError("some items have no caption")
        return chosen

    def subset(self, rows: Tensor) -> TaskData:
        """Items ``rows`` (in that order) with their captions or labels."""
        inputs = SubsetSource(self.inputs, rows)
        if self.caption_image is None:
            return TaskData(inputs, self.targets[rows])
        position = torch.full((len(self),), -1, dtype=torch.long)
        position[rows] = torch.arange(rows.shape[0])
        kept = position[self.caption_image] >= 0  # [M]
        return TaskData(inputs, self.targets[kept], position[self.caption_image[kept]])

    def batches(self, batch_size: int, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """Shuffled ``(item index, inputs, targets)`` batches covering every item once."""
        pick = self.epoch_targets(generator)
        order = torch.randperm(len(self), generator=generator)
        for start in range(0, len(self), batch_size):
            index = order[start : start + batch_size]
            yield index, self.inputs[index], self.targets[pick[index]]


@dataclass(frozen=True)
class PublicInputs:
    """The round's public subset as model inputs: row i of each is public item i of the subset."""

    images: ImageSource  # n x [3, H, W] uint8
    token_ids: Tensor  # [n, L], from the encoding model's own tokenizer

    def __len__(self) -> int:
        return len(self.images)

    def of(self, modality: Modality) -> ImageSource:
        return self.images if modality == "image" else self.token_ids


@dataclass(frozen=True)
class ClientTrainingConfig:
    local_epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 64
    gamma: float = 0.5  # weight of inter + intra
    tau: float = 0.5
    inter: bool = True
    intra: bool = True


@dataclass(frozen=True)
class ClientRoundStats:
    task_loss: float
    inter_loss: float
    intra_loss: float
    steps: int
    seconds: float


def train_client_round(
    model: ClientModel,
    optimizer: torch.optim.Optimizer,
    private: TaskData,
    public: PublicInputs,
    global_reps: Mapping[Modality, Tensor] | None,
    config: ClientTrainingConfig,
    *,
    generator: torch.Generator,
    device: torch.device,
) -> ClientRoundStats:
    """Each local epoch: a pass of the task loss on private data, then gamma * (inter + intra) on the
    public subset against the global representations ``{modality: [n, d]}`` (skipped when None or
    when both terms are switched off)."""
    started = time.perf_counter()
    regularise = global_reps is not None and (config.inter or config.intra)
    previous = _frozen_copy(model) if regularise and config.intra else None
    task_sum, inter_sum, intra_sum, steps = 0.0, 0.0, 0.0, 0
    for _ in range(config.local_epochs):
        model.train()
        for _, first, second in private.batches(config.batch_size, generator):
            loss = model.task_loss(first.to(device), second.to(device))
            _step(optimizer, loss)
            task_sum, steps = task_sum + loss.item(), steps + 1
        if regularise:
            assert global_reps is not None
            inter, intra = _public_pass(model, previous, optimizer, public, global_reps, config, generator, device)
            inter_sum, intra_sum = inter_sum + inter, intra_sum + intra
    epochs = max(config.local_epochs, 1)
    task_batches = max(1, -(-len(private) // config.batch_size)) * epochs
    return ClientRoundStats(
        task_loss=task_sum / task_batches,
        inter_loss=inter_sum / epochs,
        intra_loss=intra_sum / epochs,
        steps=steps,
        seconds=time.perf_counter() - started,
    )


def _public_pass(
    model: ClientModel,
    previous: ClientModel | None,
    optimizer: torch.optim.Optimizer,
    public: PublicInputs,
    global_reps: Mapping[Modality, Tensor],
    config: ClientTrainingConfig,
    generator: torch.Generator,
    device: torch.device,
) -> tuple[float, float]:
    """One pass of gamma * (inter + intra) over the public subset; returns the mean of each term."""
    model.train()
    on_device = {m: g.to(device, torch.float32) for m, g in global_reps.items()}  # {modality: [n, d]}
    inter_sum, intra_sum, batches = 0.0, 0.0, 0
    for index in torch.randperm(len(public), generator=generator).split(config.batch_size):
        target = index.to(device)
        inter, intra = torch.zeros((), device=device), torch.zeros((), device=device)
        for modality in model.modalities:
            inputs = public.of(modality)[index].to(device)
            z = model.encode(modality, inputs)  # [B, d]
            if config.inter:
                inter = inter + inter_modal_contrast(z, on_device[other_modality(modality)], target, tau=config.tau)
            if config.intra and previous is not None:
                with torch.no_grad():
                    z_prev = previous.encode(modality, inputs)  # [B, d]
                intra = intra + intra_modal_contrast(z, on_device[modality][target], z_prev, tau=config.tau)
        _step(optimizer, config.gamma * (inter + intra))
        inter_sum, intra_sum, batches = inter_sum + inter.item(), intra_sum + intra.item(), batches + 1
    return inter_sum / max(batches, 1), intra_sum / max(batches, 1)


def _frozen_copy(model: nn.Module) -> ClientModel:
    frozen = copy.deepcopy(model).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen  # type: ignore[return-value]


def _step(optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


@torch.no_grad()
def encode_all(
    model: nn.Module,
    encode: Callable[[Tensor], Tensor],
    inputs: ImageSource,
    *,
    batch_size: int = 256,
    device: torch.device,
) -> Tensor:
    """Representations ``[N, d]`` (float32, on the CPU) of every input, in eval mode, deterministically.

    The model's train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        chunks = [
            encode(inputs[torch.arange(start, min(start + batch_size, len(inputs)))].to(device)).float().cpu()
            for start in range(0, len(inputs), batch_size)
        ]
    finally:
        model.train(was_training)
    if not chunks:
        raise ValueError("nothing to encode")
    return torch.cat(chunks)


def encode_public(
    model: ClientModel | ServerModel, public: PublicInputs, *, batch_size: int = 256, device: torch.device
) -> dict[Modality, Tensor]:
    """Step 2 / step 5: ``{modality: [n, d]}`` for every modality the model has."""
    modalities: tuple[Modality, ...] = model.modalities if isinstance(model, ClientModel) else ("image", "text")
    return {
        m: encode_all(model, partial(model.encode, m), public.of(m), batch_size=batch_size, device=device)
        for m in modalities
    }


@dataclass(frozen=True)
class Distillation:
    """Aggregated targets for the public subset: ``subset_rows`` ``[n]`` are their rows in the full
    public set, ``targets`` ``{modality: [n, d]}`` (only modalities someone uploaded)."""

    subset_rows: Tensor
    targets: Mapping[Modality, Tensor]
    kd_weight: float


@dataclass(frozen=True)
class ServerPassStats:
    retrieval_loss: float
    distillation_loss: float
    steps: int
    seconds: float


def server_pass(
    server: ServerModel,
    optimizer: torch.optim.Optimizer,
    pairs: TaskData,
    *,
    retrieval: bool,
    distillation: Distillation | None,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    max_grad_norm: float = 2.0,
) -> ServerPassStats:
    """One shuffled pass over the public pairs (``pairs.inputs`` images, ``pairs.targets`` captions).

    ``retrieval``: the symmetric InfoNCE term. ``distillation``: kd_weight * MSE to the aggregates,
    once per modality, on the batch rows that belong to the round's subset. Both: the joint
    schedule; one of them: a step of the separate schedule.
    """
    if not retrieval and distillation is None:
        raise ValueError("a server pass needs the retrieval term, distillation, or both")
    started = time.perf_counter()
    server.train()
    if not retrieval:
        assert distillation is not None
        # Distillation alone only needs the subset's items.
        pairs = pairs.subset(distillation.subset_rows)
        subset_row = torch.arange(len(pairs))
    else:
        subset_row = _subset_lookup(distillation, len(pairs))  # [N_public] row in the targets, or -1
    retrieval_sum, kd_sum, steps = 0.0, 0.0, 0
    for index, images, captions in pairs.batches(batch_size, generator):
        image_z = server.encode_image(images.to(device))  # [B, d]
        text_z = server.encode_text(captions.to(device))  # [B, d]
        loss = torch.zeros((), device=device)
        if retrieval:
            term = retrieval_loss(image_z, text_z, server.logit_scale)
            loss, retrieval_sum = loss + term, retrieval_sum + term.item()
        if distillation is not None:
            kd = _distillation_term(distillation, subset_row[index], {"image": image_z, "text": text_z}, device)
            if kd is not None:
                loss, kd_sum = loss + kd, kd_sum + kd.item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(server.parameters(), max_grad_norm)
        optimizer.step()
        steps += 1
    return ServerPassStats(
        retrieval_loss=retrieval_sum / max(steps, 1),
        distillation_loss=kd_sum / max(steps, 1),
        steps=steps,
        seconds=time.perf_counter() - started,
    )


def _subset_lookup(distillation: Distillation | None, public_size: int) -> Tensor:
    lookup = torch.full((public_size,), -1, dtype=torch.long)
    if distillation is not None:
        lookup[distillation.subset_rows] = torch.arange(distillation.subset_rows.shape[0])
    return lookup


def _distillation_term(
    distillation: Distillation, rows: Tensor, outputs: Mapping[Modality, Tensor], device: torch.device
) -> Tensor | None:
    """kd_weight * sum over uploaded modalities of MSE on the batch rows inside the subset; None if none are."""
    inside = rows >= 0  # [B]
    if not bool(inside.any()):
        return None
    rows_inside = rows[inside]
    total = torch.zeros((), device=device)
    for modality, target in distillation.targets.items():
        predicted = outputs[modality][inside.to(device)]  # [b, d]
        total = total + representation_distillation(predicted, target[rows_inside].to(device, torch.float32))
    return distillation.kd_weight * total
