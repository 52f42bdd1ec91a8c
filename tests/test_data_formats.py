"""The real-format loaders, on tiny fixtures written into ``tmp_path``."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from creamfl.data.formats import load_ag_news, load_cifar100, load_image_folder, load_karpathy_captions
from creamfl.data.types import ImageFiles

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
YELLOW = (255, 255, 0)
GREY = (128, 128, 128)


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (10, 7)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def pixel_colours(batch: torch.Tensor) -> list[tuple[int, ...]]:
    """The colour of each image in a batch of solid-colour images (top-left pixel)."""
    return [tuple(int(v) for v in image[:, 0, 0]) for image in batch]


def all_indices(count: int) -> torch.Tensor:
    return torch.arange(count)


# --- Karpathy captions ------------------------------------------------------------------------


def karpathy_entry(filename: str, split: str, captions: list[str], filepath: str | None = None) -> dict[str, Any]:
    sentences = [{"raw": c} for c in captions]
    entry: dict[str, Any] = {"filename": filename, "split": split, "sentences": sentences}
    if filepath is not None:
        entry["filepath"] = filepath
    return entry


def write_json(path: Path, document: object) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.fixture
def coco(tmp_path: Path) -> tuple[Path, Path]:
    """A COCO-style Karpathy file over four images in two sub-folders and all four splits."""
    root = tmp_path / "images"
    write_image(root / "train2014" / "a.png", RED)
    write_image(root / "val2014" / "b.png", GREEN)
    write_image(root / "val2014" / "c.png", BLUE)
    write_image(root / "val2014" / "d.png", YELLOW)
    document = {
        "dataset": "coco",
        "images": [
            karpathy_entry("a.png", "train", ["  A red thing. ", "Red."], "train2014"),
            karpathy_entry("b.png", "test", ["green one", "green two", "green three"], "val2014"),
            karpathy_entry("c.png", "restval", ["blue"], "val2014"),
            karpathy_entry("d.png", "test", ["yellow\n"], "val2014"),
        ],
    }
    return write_json(tmp_path / "dataset_coco.json", document), root


def test_karpathy_keeps_the_split_in_file_order_with_every_caption(coco: tuple[Path, Path]) -> None:
    # Prepare
    json_path, root = coco

    # Execute
    pairs = load_karpathy_captions(json_path, root, split="test", image_size=4)

    # Assert
    assert pairs.num_images == 2
    assert pairs.captions == ("green one", "green two", "green three", "yellow")
    assert pairs.caption_image.dtype == torch.int64
    assert pairs.caption_image.tolist() == [0, 0, 0, 1]
    assert pairs.first_caption_per_image().tolist() == [0, 3]


def test_karpathy_images_are_lazy_files_resized_to_the_right_colours(coco: tuple[Path, Path]) -> None:
    # Prepare
    json_path, root = coco

    # Execute
    pairs = load_karpathy_captions(json_path, root, split="test", image_size=4)
    batch = pairs.images[torch.tensor([1, 0])]

    # Assert
    assert isinstance(pairs.images, ImageFiles)
    assert pairs.images.paths == (root / "val2014" / "b.png", root / "val2014" / "d.png")
    assert batch.shape == (2, 3, 4, 4)
    assert batch.dtype == torch.uint8
    assert pixel_colours(batch) == [YELLOW, GREEN]
    assert bool((batch[0] == torch.tensor(YELLOW, dtype=torch.uint8).view(3, 1, 1)).all())


def test_karpathy_several_splits_merge_in_file_order(coco: tuple[Path, Path]) -> None:
    # Prepare
    json_path, root = coco

    # Execute
    pairs = load_karpathy_captions(json_path, root, split=["restval", "train"], image_size=4)

    # Assert
    assert pairs.captions == ("A red thing.", "Red.", "blue")
    assert pairs.caption_image.tolist() == [0, 0, 1]
    assert pixel_colours(pairs.images[all_indices(2)]) == [RED, BLUE]


def test_karpathy_without_filepath_reads_from_the_image_root(tmp_path: Path) -> None:
    # Prepare: the Flickr30k layout has no sub-folders
    write_image(tmp_path / "1.jpg", GREY)
    json_path = write_json(
        tmp_path / "dataset_flickr30k.json",
        {"dataset": "flickr30k", "images": [karpathy_entry("1.jpg", "val", ["grey", "also grey"])]},
    )

    # Execute
    pairs = load_karpathy_captions(json_path, tmp_path, split="val", image_size=3)

    # Assert
    assert pairs.captions == ("grey", "also grey")
    assert pairs.caption_image.tolist() == [0, 0]
    colour = pairs.images[torch.tensor([0])][0, :, 1, 1]
    assert all(abs(int(v) - 128) <= 3 for v in colour)  # JPEG is lossy


def test_karpathy_reads_an_unreadable_image_only_when_indexed(coco: tuple[Path, Path]) -> None:
    # Prepare: loading must not decode images, so a corrupt one only fails when it is used
    json_path, root = coco
    (root / "val2014" / "d.png").write_bytes(b"not an image")

    # Execute
    pairs = load_karpathy_captions(json_path, root, split="test", image_size=4)

    # Assert
    assert pixel_colours(pairs.images[torch.tensor([0])]) == [GREEN]
    with pytest.raises(ValueError, match=r"cannot read image .*d\.png"):
        pairs.images[torch.tensor([1])]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"dataset": "coco"}, r"'images' list"),
        ([1, 2], r"'images' list"),
        ({"images": [{"split": "test", "sentences": [{"raw": "x"}]}]}, r"image #0 lacks the key 'filename'"),
        ({"images": [{"filename": "a.png", "sentences": []}]}, r"image #0 lacks the key 'split'"),
        ({"images": [{"filename": "a.png", "split": "test"}]}, r"image #0 lacks the key 'sentences'"),
        ({"images": [karpathy_entry("a.png", "test", [])]}, r"image #0 \('a.png'\) has no sentences"),
        ({"images": [{"filename": "a.png", "split": "test", "sentences": [{}]}]}, r"lacks the key 'raw'"),
        ({"images": [karpathy_entry("a.png", "train", ["x"])]}, r"no image in split\(s\) \['test'\]"),
    ],
)
def test_karpathy_rejects_malformed_documents(tmp_path: Path, document: object, message: str) -> None:
    # Prepare
    write_image(tmp_path / "a.png", RED)
    json_path = write_json(tmp_path / "captions.json", document)

    # Execute / Assert
    with pytest.raises(ValueError, match=message) as info:
        load_karpathy_captions(json_path, tmp_path, split="test", image_size=4)
    assert str(json_path) in str(info.value)


def test_karpathy_rejects_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"caption file .*nope\.json does not exist"):
        load_karpathy_captions(tmp_path / "nope.json", tmp_path, split="test", image_size=4)


def test_karpathy_rejects_invalid_json(tmp_path: Path) -> None:
    # Prepare
    json_path = tmp_path / "broken.json"
    json_path.write_text('{"images": [', encoding="utf-8")

    # Execute / Assert
    with pytest.raises(ValueError, match=r"broken\.json: not a readable JSON file"):
        load_karpathy_captions(json_path, tmp_path, split="test", image_size=4)


def test_karpathy_reports_missing_image_files(coco: tuple[Path, Path]) -> None:
    # Prepare
    json_path, root = coco
    (root / "val2014" / "b.png").unlink()
    (root / "val2014" / "d.png").unlink()

    # Execute / Assert
    message = r"dataset_coco\.json: 2 of 2 image files are missing, first: .*val2014.b\.png"
    with pytest.raises(ValueError, match=message):
        load_karpathy_captions(json_path, root, split="test", image_size=4)


# --- CIFAR-100 --------------------------------------------------------------------------------


def write_pickle(path: Path, content: object) -> None:
    with path.open("wb") as f:
        pickle.dump(content, f)


def solid_cifar_rows(colours: list[tuple[int, int, int]]) -> np.ndarray:
    """One row per colour: the red, green and blue planes of a solid 32x32 image."""
    return np.array([np.repeat(np.array(c, dtype=np.uint8), 1024) for c in colours], dtype=np.uint8)


@pytest.fixture
def cifar(tmp_path: Path) -> Path:
    train = solid_cifar_rows([RED, GREEN, BLUE])
    train[0, 1] = 7  # red plane, y=0, x=1: checks the row-major plane layout
    train[0, 32] = 9  # red plane, y=1, x=0
    write_pickle(tmp_path / "train", {b"data": train, b"fine_labels": [2, 0, 1], b"coarse_labels": [0, 0, 0]})
    write_pickle(tmp_path / "test", {b"data": solid_cifar_rows([YELLOW]), b"fine_labels": [1]})
    write_pickle(tmp_path / "meta", {b"fine_label_names": [b"apple", b"bee", b"cat"]})
    return tmp_path


def test_cifar100_loads_images_labels_and_names_in_order(cifar: Path) -> None:
    # Execute
    data = load_cifar100(cifar, train=True)

    # Assert
    images = data.images[all_indices(3)]
    assert isinstance(data.images, torch.Tensor)
    assert images.shape == (3, 3, 32, 32)
    assert images.dtype == torch.uint8
    assert data.labels.dtype == torch.int64
    assert data.labels.tolist() == [2, 0, 1]
    assert data.class_names == ("apple", "bee", "cat")
    assert pixel_colours(images[1:]) == [GREEN, BLUE]
    assert (int(images[0, 0, 0, 1]), int(images[0, 0, 1, 0])) == (7, 9)
    assert images[0, :, 5, 5].tolist() == list(RED)


def test_cifar100_test_split(cifar: Path) -> None:
    # Execute
    data = load_cifar100(cifar, train=False)

    # Assert
    assert len(data.images) == 1
    assert data.labels.tolist() == [1]
    assert pixel_colours(data.images[all_indices(1)]) == [YELLOW]


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("train", {b"fine_labels": [0]}, r"train: missing key b'data'"),
        ("train", {b"data": solid_cifar_rows([RED])}, r"train: missing key b'fine_labels'"),
        ("train", {b"data": np.zeros((1, 3000), np.uint8), b"fine_labels": [0]}, r"uint8 \[N, 3072\]"),
        ("train", {b"data": np.zeros((1, 3072), np.int64), b"fine_labels": [0]}, r"'data' is int64"),
        ("train", {b"data": solid_cifar_rows([RED]), b"fine_labels": [0, 1]}, r"2 fine labels for 1 images"),
        ("train", {b"data": solid_cifar_rows([RED]), b"fine_labels": [3]}, r"labels must lie in \[0, 3\)"),
        ("train", [1, 2, 3], r"expected a pickled dict, got list"),
        ("meta", {b"coarse_label_names": [b"x"]}, r"meta: missing key b'fine_label_names'"),
    ],
)
def test_cifar100_rejects_malformed_files(cifar: Path, file: str, content: object, message: str) -> None:
    # Prepare
    write_pickle(cifar / file, content)

    # Execute / Assert
    with pytest.raises(ValueError, match=message):
        load_cifar100(cifar, train=True)


@pytest.mark.parametrize("file", ["train", "meta"])
def test_cifar100_rejects_a_missing_file(cifar: Path, file: str) -> None:
    # Prepare
    (cifar / file).unlink()

    # Execute / Assert
    with pytest.raises(ValueError, match=rf"CIFAR-100 file .*{file} does not exist"):
        load_cifar100(cifar, train=True)


def test_cifar100_rejects_a_file_that_is_not_a_pickle(cifar: Path) -> None:
    # Prepare
    (cifar / "train").write_bytes(b"")

    # Execute / Assert
    with pytest.raises(ValueError, match=r"train: not a readable pickle"):
        load_cifar100(cifar, train=True)


# --- AG_NEWS ----------------------------------------------------------------------------------


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="")
    return path


def test_ag_news_parses_quoting_and_keeps_labels_with_their_texts(tmp_path: Path) -> None:
    # Prepare: rows deliberately not sorted by class, with embedded commas, doubled quotes, a
    # line break inside a quoted field and the literal backslash sequences of the original data
    csv_path = write_csv(
        tmp_path / "train.csv",
        '"3","Wall St. Bears, Again","Short-sellers, Wall Street\'s ""dwindling"" band."\n'
        '"1","Peace talks","Talks\nresume  today"\n'
        '"4","New chip","Faster \\\\ cheaper"\n'
        '"2","Cup final","Home side wins"\n',
    )

    # Execute
    news = load_ag_news(csv_path)

    # Assert
    assert news.texts == (
        'Wall St. Bears, Again Short-sellers, Wall Street\'s "dwindling" band.',
        "Peace talks Talks resume today",
        "New chip Faster \\\\ cheaper",
        "Cup final Home side wins",
    )
    assert news.labels.dtype == torch.int64
    assert news.labels.tolist() == [2, 0, 3, 1]
    assert news.class_names == ("World", "Sports", "Business", "Sci/Tech")


def test_ag_news_skips_blank_lines(tmp_path: Path) -> None:
    # Prepare
    csv_path = write_csv(tmp_path / "test.csv", '"2","a","b"\n\n"1","c","d"\n\n')

    # Execute
    news = load_ag_news(csv_path)

    # Assert
    assert news.texts == ("a b", "c d")
    assert news.labels.tolist() == [1, 0]


@pytest.mark.parametrize(
    ("second_row", "message"),
    [
        ('"2","only a title"\n', r"line 2: expected 3 columns, found 2"),
        ('"2","a","b","c"\n', r"line 2: expected 3 columns, found 4"),
        ('"two","a","b"\n', r"line 2: class index 'two' is not an integer"),
        ('"0","a","b"\n', r"line 2: class index 0 is not in 1-4"),
        ('"5","a","b"\n', r"line 2: class index 5 is not in 1-4"),
        ('"2","a"b,"c"\n', r"line 2: malformed CSV"),
    ],
)
def test_ag_news_rejects_malformed_rows_by_line(tmp_path: Path, second_row: str, message: str) -> None:
    # Prepare
    csv_path = write_csv(tmp_path / "bad.csv", '"1","fine","row"\n' + second_row)

    # Execute / Assert
    with pytest.raises(ValueError, match=message) as info:
        load_ag_news(csv_path)
    assert str(csv_path) in str(info.value)


def test_ag_news_rejects_missing_and_empty_files(tmp_path: Path) -> None:
    # Prepare
    empty = write_csv(tmp_path / "empty.csv", "")

    # Execute / Assert
    with pytest.raises(ValueError, match=r"AG_NEWS file .*missing\.csv does not exist"):
        load_ag_news(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match=r"empty\.csv: no rows"):
        load_ag_news(empty)


# --- Image folder -----------------------------------------------------------------------------


def test_image_folder_sorts_classes_and_files_and_skips_empty_classes(tmp_path: Path) -> None:
    # Prepare: classes created out of order, an upper-case extension, a JPEG, a stray non-image
    write_image(tmp_path / "zebra" / "2.png", YELLOW)
    write_image(tmp_path / "zebra" / "1.PNG", BLUE)
    write_image(tmp_path / "ant" / "b.png", GREEN)
    write_image(tmp_path / "ant" / "a.png", RED)
    write_image(tmp_path / "bee" / "x.jpeg", GREY)
    (tmp_path / "bee" / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    (tmp_path / "README.md").write_text("not a class")

    # Execute
    data = load_image_folder(tmp_path, image_size=5)

    # Assert
    assert isinstance(data.images, ImageFiles)
    assert data.class_names == ("ant", "bee", "zebra")
    assert data.labels.dtype == torch.int64
    assert data.labels.tolist() == [0, 0, 1, 2, 2]
    assert [p.name for p in data.images.paths] == ["a.png", "b.png", "x.jpeg", "1.PNG", "2.png"]
    batch = data.images[all_indices(5)]
    assert batch.shape == (5, 3, 5, 5)
    assert batch.dtype == torch.uint8
    colours = pixel_colours(batch)
    assert colours[:2] + colours[3:] == [RED, GREEN, BLUE, YELLOW]
    assert all(abs(v - 128) <= 3 for v in colours[2])  # JPEG is lossy


def test_image_folder_rejects_a_root_without_class_folders(tmp_path: Path) -> None:
    # Prepare
    write_image(tmp_path / "loose.png", RED)

    # Execute / Assert
    with pytest.raises(ValueError, match=r"no class folders"):
        load_image_folder(tmp_path, image_size=4)


def test_image_folder_rejects_class_folders_without_images(tmp_path: Path) -> None:
    # Prepare
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("x")

    # Execute / Assert
    with pytest.raises(ValueError, match=r"no image files .* in any class folder"):
        load_image_folder(tmp_path, image_size=4)


def test_image_folder_rejects_a_missing_root_and_a_bad_size(tmp_path: Path) -> None:
    write_image(tmp_path / "a" / "1.png", RED)
    with pytest.raises(ValueError, match=r"image folder .*nope does not exist"):
        load_image_folder(tmp_path / "nope", image_size=4)
    with pytest.raises(ValueError, match=r"image_size must be positive, got 0"):
        load_image_folder(tmp_path, image_size=0)
