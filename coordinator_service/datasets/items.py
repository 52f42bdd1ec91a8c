"""A source's items as registration stores them: each image read whole and checked to decode."""

from __future__ import annotations

from collections.abc import Iterator

from coordinator_service.datasets.roots import DatasetRoots
from creamfl.data.shards import MAX_SHARD_BYTES, PairItem, decode_image
from creamfl.data.sources import PairSource, SourceItem

# An image alone makes a shard at most this large, so memory stays bounded by a shard.
MAX_IMAGE_BYTES = MAX_SHARD_BYTES


class CannotRegister(Exception):
    """The dataset cannot be registered as it is; the message says why (and names the item)."""


def validated_items(source: PairSource, roots: DatasetRoots) -> Iterator[PairItem]:
    """The source's items in order, each image read (from inside the roots) and decoded once to
    check it; :class:`CannotRegister` at the first bad one."""
    try:
        for item in source.items():
            yield PairItem(id=item.id, image=_image_bytes(item, roots), captions=item.captions)
    except ValueError as exc:
        raise CannotRegister(str(exc)) from None


def _image_bytes(item: SourceItem, roots: DatasetRoots) -> bytes:
    path = item.image_path
    name = f"item {item.id!r} ({path})"
    try:
        roots.check(path)  # a symlink inside the image folder must not reach elsewhere
    except ValueError as exc:
        raise ValueError(f"item {item.id!r}: {exc}") from None
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise ValueError(f"{name}: the image is {size} bytes, more than the limit of {MAX_IMAGE_BYTES}")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{name}: the image file does not exist") from None
    except OSError as exc:
        raise ValueError(f"{name}: cannot read the image file: {exc.strerror or exc}") from None
    decode_image(data, 1, name=item.id)
    return data
