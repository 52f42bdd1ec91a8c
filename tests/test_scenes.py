"""The built-in scenes: determinism, shapes, caption grammar and vocabulary, labels, geometry, splits."""

from __future__ import annotations

import re

import pytest
import torch
from torch import Tensor

from creamfl.data.builtin import BuiltinSpec, builtin_split
from creamfl.data.scenes import CLASS_NAMES, COLOURS, SHAPES, Scenes, generate_scenes, vocabulary

PHRASE = r"a (small|large) (\w+) (\w+)"
RELATION = r"(to the left of|to the right of|above|below)"
TWO_OBJECTS = re.compile(rf"^{PHRASE} {RELATION} {PHRASE}$")
ONE_OBJECT = re.compile(rf"^{PHRASE}$")
INVERSE = {"to the left of": "to the right of", "to the right of": "to the left of", "above": "below", "below": "above"}
PALETTE = {name: torch.tensor(rgb, dtype=torch.float32) for name, rgb in COLOURS.items()}


def object_pixels(image: Tensor, colour: str, other: str) -> Tensor:
    """Mask of the pixels of the object tinted ``colour``: far from the background, nearer ``colour`` than ``other``.

    Background: grey 20-90 plus noise of 10 per channel; an object: one palette colour plus noise of 12.
    """
    pixels = image.permute(1, 2, 0).float()  # [H, W, 3]
    background = pixels.reshape(-1, 3).median(dim=0).values
    foreground = (pixels - background).norm(dim=-1) > 60
    near = (pixels - PALETTE[colour]).norm(dim=-1) < (pixels - PALETTE[other]).norm(dim=-1)
    return foreground & near


def centroid(mask: Tensor) -> tuple[float, float]:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return xs.float().mean().item(), ys.float().mean().item()


# --- determinism, shapes, dtypes -----------------------------------------------------------------


def test_same_seed_same_bytes_and_captions() -> None:
    # Prepare / Execute
    first = generate_scenes(40, seed=3)
    torch.manual_seed(999)  # torch's global RNG must play no part
    second = generate_scenes(40, seed=3)

    # Assert
    assert torch.equal(first.images, second.images)
    assert first.images.numpy().tobytes() == second.images.numpy().tobytes()
    assert first.captions == second.captions
    assert torch.equal(first.labels, second.labels)


def test_different_seed_different_scenes() -> None:
    # Prepare / Execute
    first = generate_scenes(40, seed=3)
    second = generate_scenes(40, seed=4)

    # Assert
    assert not torch.equal(first.images, second.images)
    assert first.captions != second.captions
    assert sum(a != b for a, b in zip(first.captions, second.captions, strict=True)) > 30


@pytest.mark.parametrize(("count", "image_size"), [(0, 32), (1, 32), (25, 32), (6, 48), (3, 24)])
def test_shapes_and_dtypes(count: int, image_size: int) -> None:
    # Execute
    scenes = generate_scenes(count, seed=0, image_size=image_size)

    # Assert
    assert isinstance(scenes, Scenes)
    assert len(scenes) == count
    assert scenes.images.shape == (count, 3, image_size, image_size)
    assert scenes.images.dtype == torch.uint8
    assert scenes.labels.shape == (count,)
    assert scenes.labels.dtype == torch.int64
    assert len(scenes.captions) == count
    for both in scenes.captions:
        assert len(both) == 2
        assert all(isinstance(c, str) and c for c in both)
    if count:
        assert int(scenes.labels.min()) >= 0
        assert int(scenes.labels.max()) < len(CLASS_NAMES)


def test_images_are_not_blank() -> None:
    # Execute
    scenes = generate_scenes(20, seed=1)

    # Assert: every image has background noise and a bright object.
    flat = scenes.images.reshape(20, -1).float()
    assert (flat.std(dim=1) > 5).all()
    assert (flat.max(dim=1).values > 150).all()


# --- captions and labels -------------------------------------------------------------------------


def test_vocabulary_is_sorted_unique_and_covers_every_caption() -> None:
    # Prepare
    vocab = vocabulary()
    scenes = generate_scenes(300, seed=2)

    # Execute
    words = {word for both in scenes.captions for caption in both for word in caption.split()}

    # Assert
    assert list(vocab) == sorted(set(vocab))
    assert words <= set(vocab)
    assert set(SHAPES) <= set(vocab)
    assert set(COLOURS) <= set(vocab)
    # And the vocabulary holds no word the generator never uses (300 scenes use them all).
    assert words == set(vocab)


def test_captions_follow_the_grammar() -> None:
    # Prepare
    scenes = generate_scenes(300, seed=2)

    # Execute
    singles = [both for both in scenes.captions if ONE_OBJECT.match(both[0])]
    pairs = [both for both in scenes.captions if TWO_OBJECTS.match(both[0])]

    # Assert: every caption is one of the two forms; single-object scenes are a minority (~15%).
    assert len(singles) + len(pairs) == 300
    assert 15 <= len(singles) <= 80
    for first, second in singles:
        assert second == f"there is only {first}"
    for first, _ in pairs + singles:
        match = TWO_OBJECTS.match(first) or ONE_OBJECT.match(first)
        assert match is not None
        groups = match.groups()
        assert groups[1] in COLOURS and groups[2] in SHAPES


def test_second_caption_names_same_objects_with_inverse_relation() -> None:
    # Prepare
    scenes = generate_scenes(300, seed=4)

    # Execute / Assert
    seen_relations = set()
    for first, second in scenes.captions:
        match = TWO_OBJECTS.match(first)
        if match is None:
            continue
        size0, colour0, shape0, relation, size1, colour1, shape1 = match.groups()
        seen_relations.add(relation)
        expected = f"a {size1} {colour1} {shape1} {INVERSE[relation]} a {size0} {colour0} {shape0}"
        assert second == expected
    assert seen_relations == set(INVERSE)


def test_labels_are_the_unordered_pair_of_named_shapes() -> None:
    # Prepare
    scenes = generate_scenes(300, seed=6)

    # Execute / Assert
    seen = set()
    for (first, second), label in zip(scenes.captions, scenes.labels.tolist(), strict=True):
        named = [word for word in first.split() if word in SHAPES]
        if len(named) == 1:  # a single object: the pair is (shape, shape)
            named = named * 2
        assert len(named) == 2
        low, high = sorted(named, key=SHAPES.index)
        assert CLASS_NAMES[label] == f"{low}+{high}"
        # The second caption names the same shapes, so the label is readable from either.
        named_second = [word for word in second.split() if word in SHAPES]
        if len(named_second) == 1:
            named_second = named_second * 2
        assert sorted(named_second) == sorted(named)
        seen.add(label)
    assert len(CLASS_NAMES) == 15
    assert len(set(CLASS_NAMES)) == 15
    assert seen == set(range(15))


def test_class_names_hand_checked() -> None:
    # Assert: pairs (a, b) with a <= b in SHAPES order.
    assert CLASS_NAMES[0] == "circle+circle"
    assert CLASS_NAMES[1] == "circle+square"
    assert CLASS_NAMES[4] == "circle+cross"
    assert CLASS_NAMES[5] == "square+square"
    assert CLASS_NAMES[-1] == "cross+cross"


# --- geometry --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 7])
def test_relations_are_geometrically_true(seed: int) -> None:
    # Prepare
    scenes = generate_scenes(300, seed=seed)

    # Execute / Assert
    checked = 0
    for image, (first, _) in zip(scenes.images, scenes.captions, strict=True):
        match = TWO_OBJECTS.match(first)
        if match is None:
            continue
        _, colour0, _, relation, _, colour1, _ = match.groups()
        if colour0 == colour1:
            continue
        mask0 = object_pixels(image, colour0, colour1)
        mask1 = object_pixels(image, colour1, colour0)
        assert mask0.sum() > 0 and mask1.sum() > 0, first
        (x0, y0), (x1, y1) = centroid(mask0), centroid(mask1)
        # Image rows grow downwards: "above" means a smaller row index.
        holds = {"to the left of": x0 < x1, "to the right of": x0 > x1, "above": y0 < y1, "below": y0 > y1}
        assert holds[relation], f"{first}: centroids ({x0:.1f}, {y0:.1f}) vs ({x1:.1f}, {y1:.1f})"
        checked += 1
    assert checked > 150


def test_named_colours_and_sizes_are_drawn() -> None:
    # Prepare
    scenes = generate_scenes(300, seed=8)

    # Execute / Assert
    compared = 0
    for image, (first, _) in zip(scenes.images, scenes.captions, strict=True):
        match = TWO_OBJECTS.match(first)
        if match is None:
            continue
        size0, colour0, shape0, _, size1, colour1, shape1 = match.groups()
        if colour0 == colour1 or shape0 != shape1 or size0 == size1:
            continue
        area0 = int(object_pixels(image, colour0, colour1).sum())
        area1 = int(object_pixels(image, colour1, colour0).sum())
        large, small = (area0, area1) if size0 == "large" else (area1, area0)
        assert large > small, f"{first}: areas {area0} and {area1}"
        compared += 1
    assert compared >= 5


def test_single_object_scenes_show_one_colour() -> None:
    # Prepare
    scenes = generate_scenes(300, seed=9)
    names = list(PALETTE)
    palette = torch.stack([PALETTE[name] for name in names])  # [6, 3]

    # Execute / Assert
    checked = 0
    for image, (first, _) in zip(scenes.images, scenes.captions, strict=True):
        match = ONE_OBJECT.match(first)
        if match is None:
            continue
        colour = match.group(2)
        pixels = image.permute(1, 2, 0).float().reshape(-1, 3)
        background = pixels.median(dim=0).values
        foreground = pixels[(pixels - background).norm(dim=-1) > 60]
        nearest = torch.cdist(foreground, palette).argmin(dim=1)
        assert len(foreground) > 5
        assert (nearest == names.index(colour)).all(), first
        checked += 1
    assert checked > 20


# --- splits and errors -----------------------------------------------------------------------------


def test_builtin_splits_are_different_scenes() -> None:
    # Prepare
    spec = BuiltinSpec(seed=0, public_size=30, test_size=30, private_size=30)

    # Execute
    splits = {name: builtin_split(spec, name) for name in ("public", "test", "private")}

    # Assert: same sizes, no image shared between any two splits.
    for name, scenes in splits.items():
        assert len(scenes) == 30, name
    for a, b in (("public", "test"), ("public", "private"), ("test", "private")):
        left = splits[a].images.reshape(30, -1)
        right = splits[b].images.reshape(30, -1)
        identical = (left[:, None, :] == right[None, :, :]).all(dim=-1)
        assert not identical.any(), f"{a} and {b} share an image"
        assert splits[a].captions != splits[b].captions


def test_resizing_one_split_leaves_the_others_unchanged() -> None:
    # Prepare
    small = BuiltinSpec(seed=1, public_size=20, test_size=20, private_size=40)
    resized = BuiltinSpec(seed=1, public_size=35, test_size=20, private_size=90)

    # Execute
    test_small, test_resized = builtin_split(small, "test"), builtin_split(resized, "test")
    public_small, public_resized = builtin_split(small, "public"), builtin_split(resized, "public")

    # Assert
    assert test_small.images.numpy().tobytes() == test_resized.images.numpy().tobytes()
    assert test_small.captions == test_resized.captions
    assert torch.equal(test_small.labels, test_resized.labels)
    assert len(public_small) == 20 and len(public_resized) == 35


def test_builtin_split_is_deterministic_and_seed_dependent() -> None:
    # Prepare
    spec = BuiltinSpec(seed=2, public_size=10, test_size=10, private_size=10)
    other = BuiltinSpec(seed=3, public_size=10, test_size=10, private_size=10)

    # Execute
    a, b, c = builtin_split(spec, "public"), builtin_split(spec, "public"), builtin_split(other, "public")

    # Assert
    assert torch.equal(a.images, b.images) and a.captions == b.captions
    assert not torch.equal(a.images, c.images)


def test_builtin_unknown_split_raises() -> None:
    with pytest.raises(ValueError):
        builtin_split(BuiltinSpec(public_size=2, test_size=2, private_size=2), "train")


@pytest.mark.parametrize("count", [-1, -100])
def test_negative_count_raises(count: int) -> None:
    with pytest.raises(ValueError):
        generate_scenes(count, seed=0)


def test_too_small_image_raises() -> None:
    with pytest.raises(ValueError):
        generate_scenes(3, seed=0, image_size=16)


# --- views of a scene set --------------------------------------------------------------------------


def test_pairs_subset_and_labelled_views() -> None:
    # Prepare
    scenes = generate_scenes(6, seed=10)

    # Execute
    pairs = scenes.pairs()
    subset = scenes.subset(torch.tensor([4, 1]))
    texts = scenes.labelled_texts(seed=0)
    images = scenes.labelled_images()

    # Assert
    assert pairs.captions == tuple(c for both in scenes.captions for c in both)
    assert torch.equal(pairs.caption_image, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]))
    assert torch.equal(subset.images, scenes.images[[4, 1]])
    assert subset.captions == (scenes.captions[4], scenes.captions[1])
    assert torch.equal(subset.labels, scenes.labels[[4, 1]])
    assert all(t in both for t, both in zip(texts.texts, scenes.captions, strict=True))
    assert texts.texts == scenes.labelled_texts(seed=0).texts
    assert torch.equal(images.labels, scenes.labels)
    assert images.class_names == CLASS_NAMES
