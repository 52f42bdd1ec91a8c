"""Dataset shards: a bounded run of image-caption items in one content-addressed safetensors file.

A registered dataset is a sequence of shards (DESIGN.md section 3). A shard holds each item's
original image bytes (never re-encoded), its captions and its id:

- tensor ``image_bytes`` uint8 ``[total]``: the items' encoded images, one after another;
- tensor ``offsets`` int64 ``[k + 1]``: item ``i``'s bytes are ``image_bytes[offsets[i]:offsets[i + 1]]``;
- metadata ``index``: one JSON string ``{"format", "ids", "captions"}`` (one key, so the bytes do
  not depend on how a map is ordered: the same items always make the same shard and the same hash).

A shard opened from a file is memory-mapped and reads one item's bytes at a time, so whoever walks a
dataset holds one shard's index and one image in memory, not the dataset; :class:`ShardFiles` reads
a dataset's rows in any order that way, with a couple of shards open at a time.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from creamfl.data.types import ImageTextPairs

SHARD_FORMAT = "creamfl-pairs/1"
MAX_SHARD_ITEMS = 1000
MAX_SHARD_BYTES = 64 * 2**20
# A shard's index is JSON in the safetensors header; its reader refuses headers above this.
MAX_INDEX_BYTES = 16 * 2**20
T = TypeVar("T")


@dataclass(frozen=True)
class PairItem:
    """One image-caption item as registered: its id, the image file's bytes, its captions."""

    id: str
    image: bytes
    captions: tuple[str, ...]


@dataclass(frozen=True)
class ShardIndex:
    ids: tuple[str, ...]
    captions: tuple[tuple[str, ...], ...]

    def __len__(self) -> int:
        return len(self.ids)


def encode_shard(items: Sequence[PairItem]) -> bytes:
    """The shard file of ``items``, in their order (deterministic: same items, same bytes)."""
    if not items:
        raise ValueError("a shard holds at least one item")
    sizes = [len(item.image) for item in items]
    offsets = torch.tensor([0, *np.cumsum(sizes).tolist()], dtype=torch.int64)  # [k + 1]
    image_bytes = torch.frombuffer(bytearray(b"".join(item.image for item in items)), dtype=torch.uint8)  # [total]
    index = {"format": SHARD_FORMAT, "ids": [i.id for i in items], "captions": [list(i.captions) for i in items]}
    return st_save(
        {"image_bytes": image_bytes, "offsets": offsets},
        metadata={"index": json.dumps(index, ensure_ascii=False, separators=(",", ":"))},
    )


def pack(
    items: Iterable[PairItem], *, max_items: int = MAX_SHARD_ITEMS, max_bytes: int = MAX_SHARD_BYTES
) -> Iterator[list[PairItem]]:
    """Consecutive groups of ``items``, each at most ``max_items`` long and ``max_bytes`` of images
    (an image larger than ``max_bytes`` alone makes a shard)."""
    group: list[PairItem] = []
    size = 0
    for item in items:
        if group and (len(group) >= max_items or size + len(item.image) > max_bytes):
            yield group
            group, size = [], 0
        group.append(item)
        size += len(item.image)
    if group:
        yield group


def dataset_sha256(shard_hashes: Sequence[str]) -> str:
    """A dataset's identity: the hash of its shards' hashes, in order."""
    overall = hashlib.sha256()
    for sha in shard_hashes:
        overall.update(bytes.fromhex(sha))
    return overall.hexdigest()


class Shard:
    """A shard's index and its items' image bytes, from a file (memory-mapped) or from bytes."""

    def __init__(self, index: ShardIndex, offsets: Tensor, image_bytes: Any) -> None:
        self.index = index
        self._offsets = offsets.tolist()
        self._image_bytes = image_bytes  # a uint8 tensor, or a lazily sliced safetensors view

    @classmethod
    def from_bytes(cls, data: bytes) -> Shard:
        try:
            tensors = st_load(data)
            metadata = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")]).get("__metadata__") or {}
        except Exception as exc:  # safetensors raises its own error types for a malformed header
            raise ValueError(f"not a dataset shard: {exc}") from exc
        return cls._checked(metadata, tensors.get("offsets"), tensors.get("image_bytes"))

    @classmethod
    def open(cls, path: Path) -> Shard:
        try:
            with path.open("rb") as f:
                header_length = int.from_bytes(f.read(8), "little")
            if header_length > MAX_INDEX_BYTES:
                raise ValueError(f"header of {header_length} bytes")
            handle = safe_open(str(path), framework="pt")
            metadata = handle.metadata() or {}
            offsets = handle.get_tensor("offsets")
            image_bytes = handle.get_slice("image_bytes")
        except Exception as exc:
            raise ValueError(f"{path}: not a dataset shard: {exc}") from exc
        return cls._checked(metadata, offsets, image_bytes)

    @classmethod
    def _checked(cls, metadata: dict[str, str], offsets: Tensor | None, image_bytes: Any) -> Shard:
        index = _parse_index(metadata)
        ids, captions = index.ids, index.captions
        if offsets is None or image_bytes is None or offsets.shape != (len(ids) + 1,) or len(captions) != len(ids):
            raise ValueError("not a dataset shard: its offsets, ids and captions disagree")
        return cls(ShardIndex(ids, captions), offsets, image_bytes)

    def __len__(self) -> int:
        return len(self.index)

    def image_bytes(self, item: int) -> bytes:
        start, end = self._offsets[item], self._offsets[item + 1]
        return bytes(self._image_bytes[start:end].numpy().tobytes())

    def image(self, item: int, size: int) -> Tensor:
        """Item ``item``'s image decoded: uint8 ``[3, size, size]``."""
        return decode_image(self.image_bytes(item), size, name=self.index.ids[item])


def read_index(read: Callable[[int, int], bytes]) -> ShardIndex:
    """A shard's ids and captions from its header alone: ``read(start, length)`` returns its bytes
    ``start .. start + length - 1`` (a range of a stored artifact), so no image is read."""
    header_length = int.from_bytes(read(0, 8), "little")
    if not 0 < header_length <= MAX_INDEX_BYTES:
        raise ValueError(f"not a dataset shard: header of {header_length} bytes")
    try:
        metadata = json.loads(read(8, header_length)).get("__metadata__") or {}
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise ValueError(f"not a dataset shard: {exc}") from exc
    return _parse_index(metadata)


def _parse_index(metadata: dict[str, str]) -> ShardIndex:
    try:
        index = json.loads(metadata["index"])
        if index.get("format") != SHARD_FORMAT:
            raise ValueError(f"format {index.get('format')!r}, expected {SHARD_FORMAT!r}")
        ids = tuple(str(i) for i in index["ids"])
        captions = tuple(tuple(str(c) for c in item) for item in index["captions"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not a dataset shard: bad index ({exc})") from exc
    return ShardIndex(ids, captions)


def decode_image(data: bytes, size: int, *, name: str) -> Tensor:
    """Encoded image bytes as RGB uint8 ``[3, size, size]`` (bilinear); ValueError names the item."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot decode the image of item {name!r}: {exc}") from exc
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)


class ShardFiles:
    """The items of a run of shard files, opened on demand: at most ``keep_open`` shards (their
    index and memory map) are held at a time, the least recently used closed first, so memory is
    bounded by a shard, not by the dataset. ``counts`` are the shards' item counts (from the
    dataset's manifest); a file that holds another count is refused when opened.

    As an image source, an index batch gives ``[B, 3, size, size]`` uint8."""

    def __init__(self, paths: Sequence[Path], counts: Sequence[int], size: int, *, keep_open: int = 2) -> None:
        if len(paths) != len(counts):
            raise ValueError(f"{len(paths)} shard files for {len(counts)} item counts")
        if keep_open < 1:
            raise ValueError(f"keep_open must be at least 1, got {keep_open}")
        self.paths = list(paths)
        self.counts = list(counts)
        self.size = size
        self.keep_open = keep_open
        self._rows = _ShardRows(self.counts)
        self._open: OrderedDict[int, Shard] = OrderedDict()

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: Tensor) -> Tensor:
        return torch.stack(self._rows.gather(index, lambda shard, item: self.shard(shard).image(item, self.size)))

    def captions(self, index: Tensor) -> list[tuple[str, ...]]:
        """The captions of the items ``index``, in its order."""
        return self._rows.gather(index, lambda shard, item: self.shard(shard).index.captions[item])

    @property
    def open_shards(self) -> tuple[int, ...]:
        """The numbers of the shards open now, the least recently used first."""
        return tuple(self._open)

    def shard(self, number: int) -> Shard:
        """Shard ``number``, opened (and the least recently used one closed) if it is not open."""
        shard = self._open.pop(number, None)
        if shard is None:
            shard = Shard.open(self.paths[number])
            if len(shard) != self.counts[number]:
                raise ValueError(f"{self.paths[number]}: {len(shard)} items, the manifest says {self.counts[number]}")
            while len(self._open) >= self.keep_open:
                self._open.popitem(last=False)
        self._open[number] = shard
        return shard


class _ShardRows:
    """Rows of a dataset whose items lie in consecutive shards of ``counts`` items."""

    def __init__(self, counts: Sequence[int]) -> None:
        sizes = torch.tensor(list(counts), dtype=torch.long)
        self._starts = torch.cumsum(sizes, 0) - sizes  # [S] first row of each shard
        self._total = int(sizes.sum())

    def __len__(self) -> int:
        return self._total

    def gather(self, index: Tensor, read: Callable[[int, int], T]) -> list[T]:
        """``read(shard, item)`` of every row of ``index``, in its order; rows are read shard by
        shard, so a batch opens each of its shards once."""
        rows = index.reshape(-1)
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= self._total):
            raise IndexError(f"rows must lie in [0, {self._total})")
        shard_of = torch.searchsorted(self._starts, rows, right=True) - 1  # [B]
        items = (rows - self._starts[shard_of]).tolist()
        shards = shard_of.tolist()
        found: dict[int, T] = {}
        for position in sorted(range(len(shards)), key=shards.__getitem__):
            found[position] = read(shards[position], items[position])
        return [found[position] for position in range(len(shards))]


def decoded_pairs(shards: Iterable[Shard], size: int) -> ImageTextPairs:
    """Every item of ``shards`` with every caption, images decoded into memory (``[N, 3, size, size]``
    uint8): the server's public and evaluation sets, which it reads every round."""
    images: list[Tensor] = []
    captions: list[str] = []
    caption_image: list[int] = []
    for shard in shards:
        for item in range(len(shard)):
            for caption in shard.index.captions[item]:
                captions.append(caption)
                caption_image.append(len(images))
            images.append(shard.image(item, size))
    if not images:
        raise ValueError("no items")
    return ImageTextPairs(torch.stack(images), tuple(captions), torch.tensor(caption_image, dtype=torch.long))
