"""The built-in dataset: seeded scenes of coloured shapes with compositional English captions.

Each scene holds one object or two objects in a spatial relation, drawn on a noisy background:
"a large red circle to the left of a small blue square". Every scene has two captions (the
relation read from either object), so retrieval is many-to-one like COCO. Retrieval needs every
attribute: shape, colour, size, position (relation) and count (one or two objects).

The class label used by uni-modal clients is the unordered pair of shapes in the scene (15
classes), visible from the image and from either caption alike.

Same seed, same bytes: the generator draws from numpy's PCG64 only, so a coordinator and its
clients can each build the public set locally and compare hashes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from creamfl.data.types import ImageTextPairs, LabelledImages, LabelledTexts

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLOURS = {
    "red": (215, 45, 40),
    "green": (45, 170, 60),
    "blue": (50, 85, 225),
    "yellow": (225, 205, 45),
    "purple": (145, 65, 195),
    "cyan": (45, 195, 205),
}
SIZES = {"small": (2.5, 3.6), "large": (5.0, 6.5)}  # radius range in pixels at 32 px
RELATIONS = ("to the left of", "to the right of", "above", "below")
_INVERSE = {0: 1, 1: 0, 2: 3, 3: 2}
_SINGLE_FRACTION = 0.15
SHAPE_PAIRS = tuple((a, b) for a in range(len(SHAPES)) for b in range(a, len(SHAPES)))
CLASS_NAMES = tuple(f"{SHAPES[a]}+{SHAPES[b]}" for a, b in SHAPE_PAIRS)


@dataclass(frozen=True)
class Scenes:
    """N generated scenes: images, two captions each, and the shape-pair label."""

    images: Tensor  # [N, 3, H, W] uint8
    captions: tuple[tuple[str, str], ...]  # N x 2
    labels: Tensor  # [N] int64, index into CLASS_NAMES

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: Tensor) -> Scenes:
        return Scenes(
            images=self.images[index],
            captions=tuple(self.captions[int(i)] for i in index),
            labels=self.labels[index],
        )

    def pairs(self) -> ImageTextPairs:
        """All captions, two per image."""
        n = len(self)
        return ImageTextPairs(
            images=self.images,
            captions=tuple(c for both in self.captions for c in both),
            caption_image=torch.arange(n).repeat_interleave(2),
        )

    def labelled_images(self) -> LabelledImages:
        return LabelledImages(images=self.images, labels=self.labels, class_names=CLASS_NAMES)

    def labelled_texts(self, seed: int) -> LabelledTexts:
        """One caption per scene, which of the two chosen by ``seed``."""
        pick = np.random.default_rng(seed).integers(0, 2, size=len(self))
        texts = tuple(both[int(k)] for both, k in zip(self.captions, pick, strict=True))
        return LabelledTexts(texts=texts, labels=self.labels, class_names=CLASS_NAMES)


def generate_scenes(count: int, *, seed: int, image_size: int = 32) -> Scenes:
    """``count`` scenes, deterministic in ``seed`` (and independent of torch's global RNG)."""
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    if image_size < 24:
        raise ValueError(f"image_size must be at least 24 pixels, got {image_size}")
    rng = np.random.Generator(np.random.PCG64(seed))
    scale = image_size / 32.0
    shape = rng.integers(0, len(SHAPES), size=(count, 2))
    colour = rng.integers(0, len(COLOURS), size=(count, 2))
    size = rng.integers(0, len(SIZES), size=(count, 2))
    radius = _radii(rng, size) * scale  # [N, 2]
    single = rng.random(count) < _SINGLE_FRACTION
    relation = rng.integers(0, len(RELATIONS), size=count)
    centres = _place(rng, radius, relation, single, image_size)  # [N, 2, 2] as (x, y)
    images = _render(rng, shape, colour, radius, centres, single, image_size)
    captions = tuple(_captions(shape[i], colour[i], size[i], int(relation[i]), bool(single[i])) for i in range(count))
    second_shape = np.where(single, shape[:, 0], shape[:, 1])
    labels = _pair_label(shape[:, 0], second_shape)
    return Scenes(images=torch.from_numpy(images), captions=captions, labels=torch.from_numpy(labels))


def _radii(rng: np.random.Generator, size: np.ndarray) -> np.ndarray:
    bounds = np.array(list(SIZES.values()))  # [2, 2]: (low, high) per size
    low, high = bounds[size, 0], bounds[size, 1]
    return low + rng.random(size.shape) * (high - low)


def _place(
    rng: np.random.Generator, radius: np.ndarray, relation: np.ndarray, single: np.ndarray, width: int
) -> np.ndarray:
    """Centres such that object 0 stands in ``relation`` to object 1, with a clear gap."""
    n = radius.shape[0]
    r0, r1 = radius[:, 0], radius[:, 1]
    margin = 1.0
    # Along the relation's axis: the lower-coordinate object first, then a gap of at least 1 px.
    first_is_0 = (relation == 0) | (relation == 2)  # "left of" / "above": object 0 has the lower x / y
    r_low = np.where(first_is_0, r0, r1)
    r_high = np.where(first_is_0, r1, r0)
    span = r_low + r_high + margin
    room = (width - 1 - r_high) - (r_low + span)  # free play left for the low object's position
    p_low = r_low + rng.random(n) * np.maximum(room, 0.0)
    slack = (width - 1 - r_high) - (p_low + span)
    p_high = p_low + span + rng.random(n) * np.maximum(slack, 0.0)
    # Across the axis: a shared line with a little jitter, kept inside the canvas.
    r_max = np.maximum(r0, r1)
    line = r_max + rng.random(n) * (width - 1 - 2 * r_max)
    jitter = rng.uniform(-2.0, 2.0, size=(n, 2))
    across = np.clip(line[:, None] + jitter, radius, width - 1 - radius)  # [N, 2]
    along = np.stack([np.where(first_is_0, p_low, p_high), np.where(first_is_0, p_high, p_low)], axis=1)
    horizontal = (relation <= 1)[:, None]
    centres = np.stack([np.where(horizontal, along, across), np.where(horizontal, across, along)], axis=2)
    # A single object goes anywhere on the canvas.
    free = r0[:, None] + rng.random((n, 2)) * (width - 1 - 2 * r0)[:, None]
    centres[single, 0] = free[single]
    return centres  # [N, 2 objects, (x, y)]


def _render(
    rng: np.random.Generator,
    shape: np.ndarray,
    colour: np.ndarray,
    radius: np.ndarray,
    centres: np.ndarray,
    single: np.ndarray,
    width: int,
) -> np.ndarray:
    n = shape.shape[0]
    palette = np.array(list(COLOURS.values()), dtype=np.float32)  # [6, 3]
    background = rng.uniform(20, 90, size=(n, 1, 1, 1)) + rng.normal(0, 10, size=(n, width, width, 3))
    canvas = background.astype(np.float32)  # [N, H, W, 3]
    coords = np.arange(width, dtype=np.float32) + 0.5
    xs, ys = coords[None, None, :], coords[None, :, None]  # [1, 1, W], [1, H, 1]
    for obj in range(2):
        dx = xs - centres[:, obj, 0, None, None]  # [N, H, W] by broadcasting
        dy = ys - centres[:, obj, 1, None, None]
        mask = _shape_masks(shape[:, obj], dx, dy, radius[:, obj, None, None])
        if obj == 1:
            mask &= ~single[:, None, None]
        tint = palette[colour[:, obj]] + rng.normal(0, 12, size=(n, 3))  # [N, 3]
        canvas = np.where(mask[..., None], tint[:, None, None, :], canvas)
    pixels = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))  # [N, 3, H, W]


def _shape_masks(shape: np.ndarray, dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    ax, ay = np.abs(dx), np.abs(dy)
    arm = np.maximum(r / 3.0, 1.0)
    masks = np.stack(
        [
            dx**2 + dy**2 <= r**2,  # circle
            (ax <= r * 0.85) & (ay <= r * 0.85),  # square, shrunk to a similar area
            (dy <= r * 0.8) & (ax <= (dy + r) * 0.6),  # triangle, apex up
            ax + ay <= r * 1.15,  # diamond
            ((ax <= arm) & (ay <= r)) | ((ay <= arm) & (ax <= r)),  # cross
        ]
    )  # [5, N, H, W]
    return np.take_along_axis(masks, shape[None, :, None, None], axis=0)[0]


def _captions(shape: np.ndarray, colour: np.ndarray, size: np.ndarray, relation: int, single: bool) -> tuple[str, str]:
    colour_names, size_names = list(COLOURS), list(SIZES)
    phrase = [f"a {size_names[size[k]]} {colour_names[colour[k]]} {SHAPES[shape[k]]}" for k in range(2)]
    if single:
        return phrase[0], f"there is only {phrase[0]}"
    return (
        f"{phrase[0]} {RELATIONS[relation]} {phrase[1]}",
        f"{phrase[1]} {RELATIONS[_INVERSE[relation]]} {phrase[0]}",
    )


def _pair_label(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    low, high = np.minimum(first, second), np.maximum(first, second)
    lookup = {pair: k for k, pair in enumerate(SHAPE_PAIRS)}
    table = np.array([[lookup.get((a, b), -1) for b in range(len(SHAPES))] for a in range(len(SHAPES))])
    return table[low, high].astype(np.int64)


def vocabulary() -> tuple[str, ...]:
    """Every word a built-in caption can contain, sorted."""
    words = {"a", "there", "is", "only"} | set(SHAPES) | set(COLOURS) | set(SIZES)
    words |= {w for rel in RELATIONS for w in rel.split()}
    return tuple(sorted(words))
