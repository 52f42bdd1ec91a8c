"""The three shapes of data a federation handles, whatever file format they came from.

Images are always uint8 ``[3, H, W]`` at one resolution per dataset; models convert to float
themselves. An image source is anything indexable by a 1-D index tensor that returns a
``[B, 3, H, W]`` uint8 batch: an in-memory tensor, or :class:`ImageFiles` for folders too large to
hold in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor


class ImageSource(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class ImageFiles:
    """Images read from disk on demand, RGB, resized (bilinear) to ``size x size``."""

    paths: tuple[Path, ...]
    size: int

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: Tensor) -> Tensor:
        return torch.stack([load_image(self.paths[int(i)], self.size) for i in index.reshape(-1)])


def load_image(path: Path, size: int) -> Tensor:
    """One image file as a ``[3, size, size]`` uint8 tensor; a clear error for unreadable files."""
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}") from exc
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)


@dataclass(frozen=True)
class ImageTextPairs:
    """N images and M >= N captions; ``caption_image[m]`` is the image caption m describes."""

    images: ImageSource  # N x [3, H, W] uint8
    captions: tuple[str, ...]  # M
    caption_image: Tensor  # [M] int64, values in [0, N)

    def __post_init__(self) -> None:
        if self.caption_image.shape != (len(self.captions),):
            raise ValueError(
                f"caption_image has shape {tuple(self.caption_image.shape)}, expected ({len(self.captions)},)"
            )
        if len(self.captions) and (
            int(self.caption_image.min()) < 0 or int(self.caption_image.max()) >= len(self.images)
        ):
            raise ValueError("caption_image refers to an image index outside the image source")

    @property
    def num_images(self) -> int:
        return len(self.images)

    def first_caption_per_image(self) -> Tensor:
        """``[N]`` index of each image's first caption (every image must have one)."""
        first = torch.full((self.num_images,), -1, dtype=torch.long)
        order = torch.arange(len(self.captions) - 1, -1, -1)
        first[self.caption_image[order]] = order  # later writes win: the lowest caption index
        if bool((first < 0).any()):
            raise ValueError("some images have no caption")
        return first


@dataclass(frozen=True)
class LabelledImages:
    images: ImageSource  # N x [3, H, W] uint8
    labels: Tensor  # [N] int64
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_labels(self.labels, len(self.images), len(self.class_names))


@dataclass(frozen=True)
class LabelledTexts:
    texts: tuple[str, ...]
    labels: Tensor  # [N] int64
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        _check_labels(self.labels, len(self.texts), len(self.class_names))


def _check_labels(labels: Tensor, count: int, num_classes: int) -> None:
    if labels.shape != (count,):
        raise ValueError(f"labels have shape {tuple(labels.shape)}, expected ({count},)")
    if count and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")


@dataclass(frozen=True)
class SubsetSource:
    """The rows ``rows`` of another image source (or tensor), without copying them."""

    source: ImageSource
    rows: Tensor  # [n] int64

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def __getitem__(self, index: Tensor) -> Tensor:
        return self.source[self.rows[index]]
