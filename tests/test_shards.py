"""Dataset shards: deterministic bytes, reading from bytes and from a memory-mapped file, the
header-only index, packing bounds, and lazy images across shards."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from creamfl.data.builtin import BuiltinSpec, builtin_split
from creamfl.data.samples import jpeg_bytes
from creamfl.data.shards import (
    PairItem,
    Shard,
    ShardFiles,
    dataset_sha256,
    decode_image,
    decoded_pairs,
    encode_shard,
    pack,
    read_index,
)

SCENES = builtin_split(BuiltinSpec(seed=0, public_size=7), "public")
ITEMS = [PairItem(f"scene-{i}", jpeg_bytes(SCENES.images[i]), SCENES.captions[i]) for i in range(len(SCENES))]


def test_the_same_items_make_the_same_bytes() -> None:
    assert encode_shard(ITEMS) == encode_shard(list(ITEMS))
    assert encode_shard(ITEMS) != encode_shard(ITEMS[::-1])


def test_a_shard_reads_back_from_bytes_and_from_a_file(tmp_path: Path) -> None:
    # Prepare
    data = encode_shard(ITEMS)
    path = tmp_path / "shard"
    path.write_bytes(data)

    # Execute
    in_memory, mapped = Shard.from_bytes(data), Shard.open(path)

    # Assert: ids, captions, the original image bytes, decoded pixels
    for shard in (in_memory, mapped):
        assert shard.index.ids == tuple(item.id for item in ITEMS)
        assert shard.index.captions == tuple(item.captions for item in ITEMS)
        assert [shard.image_bytes(i) for i in range(len(ITEMS))] == [item.image for item in ITEMS]
        assert torch.equal(shard.image(3, 32), decode_image(ITEMS[3].image, 32, name="x"))
    # JPEG is lossy, but close to the scene it encodes
    assert (in_memory.image(0, 32).float() - SCENES.images[0].float()).abs().mean() < 12


def test_the_index_is_read_from_the_header_alone() -> None:
    # Prepare
    data = encode_shard(ITEMS)
    reads: list[tuple[int, int]] = []

    def read(start: int, length: int) -> bytes:
        reads.append((start, length))
        return data[start : start + length]

    # Execute
    index = read_index(read)

    # Assert: two reads, neither reaching the images
    assert index.ids == tuple(item.id for item in ITEMS)
    header_end = 8 + int.from_bytes(data[:8], "little")
    assert len(reads) == 2 and max(start + length for start, length in reads) == header_end


@pytest.mark.parametrize("data", [b"", b"\x10\x00\x00\x00\x00\x00\x00\x00{}", b"not a shard at all"])
def test_what_is_not_a_shard_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="shard"):
        Shard.from_bytes(data)


def test_packing_bounds_items_and_bytes() -> None:
    by_items = [len(group) for group in pack(ITEMS, max_items=3)]
    largest = max(len(item.image) for item in ITEMS)
    by_bytes = list(pack(ITEMS, max_bytes=2 * largest))
    assert by_items == [3, 3, 1]
    assert all(sum(len(i.image) for i in group) <= 2 * largest for group in by_bytes)
    assert [i for group in by_bytes for i in group] == ITEMS


def test_images_across_shards_decode_on_demand(tmp_path: Path) -> None:
    # Prepare: three shards on disk
    shards = []
    for number, group in enumerate(pack(ITEMS, max_items=3)):
        path = tmp_path / f"{number}"
        path.write_bytes(encode_shard(group))
        shards.append(path)

    # Execute
    images = ShardFiles(shards, [3, 3, 1], 16)
    batch = images[torch.tensor([6, 0, 4])]

    # Assert
    assert len(images) == 7 and batch.shape == (3, 3, 16, 16)
    assert torch.equal(batch[0], decode_image(ITEMS[6].image, 16, name="x"))
    with pytest.raises(IndexError):
        images[torch.tensor([7])]


def test_decoded_pairs_keep_every_caption_with_its_image() -> None:
    shards = [Shard.from_bytes(encode_shard(group)) for group in pack(ITEMS, max_items=4)]
    pairs = decoded_pairs(shards, 32)
    assert pairs.num_images == 7 and len(pairs.captions) == 14
    assert pairs.captions[2] == ITEMS[1].captions[0] and int(pairs.caption_image[2]) == 1


def test_the_dataset_hash_depends_on_the_shards_and_their_order() -> None:
    a, b = "a" * 64, "b" * 64
    assert dataset_sha256([a, b]) != dataset_sha256([b, a]) and dataset_sha256([a, b]) == dataset_sha256([a, b])
