"""Loaders for the on-disk formats of the public datasets CreamFL is evaluated on.

Each loader reads one format into the shapes of :mod:`creamfl.data.types` and never reorders
records: images, labels and texts keep their file order, so their pairing is preserved. Every
problem with the files is reported as a ``ValueError`` naming the file and what is wrong.
"""

from __future__ import annotations

import csv
import json
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from creamfl.data.types import ImageFiles, ImageTextPairs, LabelledImages, LabelledTexts

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
AG_NEWS_CLASSES = ("World", "Sports", "Business", "Sci/Tech")
CIFAR_SIDE = 32


# --- Karpathy caption JSON (COCO, Flickr30k) -------------------------------------------------


def load_karpathy_captions(
    json_path: Path, image_root: Path, *, split: str | Sequence[str], image_size: int
) -> ImageTextPairs:
    """Images of the given split(s) with all their captions, in file order; images load lazily."""
    _check_image_size(image_size)
    wanted = {split} if isinstance(split, str) else set(split)
    entries = _karpathy_entries(json_path)
    paths: list[Path] = []
    captions: list[str] = []
    caption_image: list[int] = []
    for position, entry in enumerate(entries):
        if _field(entry, "split", str, json_path, position) not in wanted:
            continue
        for caption in _karpathy_sentences(entry, json_path, position):
            captions.append(caption)
            caption_image.append(len(paths))
        paths.append(_karpathy_image_path(entry, image_root, json_path, position))
    if not paths:
        raise ValueError(f"{json_path}: no image in split(s) {sorted(wanted)}")
    _check_files_exist(paths, json_path)
    return ImageTextPairs(
        images=ImageFiles(tuple(paths), image_size),
        captions=tuple(captions),
        caption_image=torch.tensor(caption_image, dtype=torch.long),
    )


def _karpathy_entries(json_path: Path) -> list[Any]:
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValueError(f"caption file {json_path} does not exist") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{json_path}: not a readable JSON file: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise ValueError(f"{json_path}: expected an object with an 'images' list (Karpathy layout)")
    images: list[Any] = document["images"]
    return images


def _karpathy_sentences(entry: Any, json_path: Path, position: int) -> list[str]:
    sentences = _field(entry, "sentences", list, json_path, position)
    if not sentences:
        raise ValueError(f"{json_path}: image #{position} ({entry.get('filename')!r}) has no sentences")
    return [_field(s, "raw", str, json_path, position).strip() for s in sentences]


def _karpathy_image_path(entry: Any, image_root: Path, json_path: Path, position: int) -> Path:
    filename: str = _field(entry, "filename", str, json_path, position)
    # Only COCO entries carry a sub-folder (train2014/val2014); Flickr30k images sit in the root.
    folder = entry.get("filepath", "")
    if not isinstance(folder, str):
        raise ValueError(f"{json_path}: image #{position} has a non-string 'filepath'")
    return image_root / folder / filename


def _field(record: Any, key: str, kind: type, json_path: Path, position: int) -> Any:
    if not isinstance(record, dict) or key not in record:
        raise ValueError(f"{json_path}: image #{position} lacks the key {key!r}")
    value = record[key]
    if not isinstance(value, kind):
        raise ValueError(f"{json_path}: image #{position} has {key!r} of type {type(value).__name__}")
    return value


def _check_files_exist(paths: Sequence[Path], json_path: Path) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"{json_path}: {len(missing)} of {len(paths)} image files are missing, first: {missing[0]}")


# --- CIFAR-100 python pickles -----------------------------------------------------------------


def load_cifar100(root: Path, *, train: bool) -> LabelledImages:
    """The train or test set of the CIFAR-100 python layout as in-memory uint8 ``[N, 3, 32, 32]``."""
    path = root / ("train" if train else "test")
    batch = _unpickle(path)
    names = _cifar_class_names(root / "meta")
    images = _cifar_images(batch, path)
    labels = _cifar_labels(batch, path, len(images), len(names))
    return LabelledImages(images=images, labels=labels, class_names=names)


def _unpickle(path: Path) -> dict[bytes, Any]:
    if not path.is_file():
        raise ValueError(f"CIFAR-100 file {path} does not exist")
    try:
        with path.open("rb") as f:
            # Trusted local dataset files in their published format, not wire input: pickle never
            # crosses the network in this project.
            content = pickle.load(f, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable pickle: {exc}") from exc
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(content).__name__}")
    return content


def _cifar_key(batch: dict[bytes, Any], key: bytes, path: Path) -> Any:
    if key not in batch:
        raise ValueError(f"{path}: missing key {key!r}")
    return batch[key]


def _cifar_class_names(meta_path: Path) -> tuple[str, ...]:
    names = _cifar_key(_unpickle(meta_path), b"fine_label_names", meta_path)
    if not names:
        raise ValueError(f"{meta_path}: 'fine_label_names' is empty")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def _cifar_images(batch: dict[bytes, Any], path: Path) -> torch.Tensor:
    data = np.asarray(_cifar_key(batch, b"data", path))
    row = 3 * CIFAR_SIDE * CIFAR_SIDE
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row:
        raise ValueError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 [N, {row}]")
    # Each row holds the red, green and blue planes one after another, each row-major.
    return torch.from_numpy(data.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE).copy())


def _cifar_labels(batch: dict[bytes, Any], path: Path, count: int, num_classes: int) -> torch.Tensor:
    labels = torch.as_tensor(np.asarray(_cifar_key(batch, b"fine_labels", path), dtype=np.int64))
    if labels.shape != (count,):
        raise ValueError(f"{path}: {labels.numel()} fine labels for {count} images")
    if count and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"{path}: fine labels must lie in [0, {num_classes})")
    return labels


# --- AG_NEWS CSV ------------------------------------------------------------------------------


def load_ag_news(csv_path: Path) -> LabelledTexts:
    """AG_NEWS rows ``class (1-4), title, description`` as "title description" with labels 0-3."""
    texts: list[str] = []
    labels: list[int] = []
    try:
        with csv_path.open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f, strict=True)
            try:
                for row in reader:
                    if row:  # tolerate blank lines, e.g. a trailing one
                        label, text = _ag_news_row(row, csv_path, reader.line_num)
                        labels.append(label)
                        texts.append(text)
            except csv.Error as exc:
                raise ValueError(f"{csv_path}, line {reader.line_num}: malformed CSV: {exc}") from exc
    except FileNotFoundError as exc:
        raise ValueError(f"AG_NEWS file {csv_path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{csv_path}: not a readable UTF-8 file: {exc}") from exc
    if not texts:
        raise ValueError(f"{csv_path}: no rows")
    return LabelledTexts(texts=tuple(texts), labels=torch.tensor(labels, dtype=torch.long), class_names=AG_NEWS_CLASSES)


def _ag_news_row(row: list[str], csv_path: Path, line: int) -> tuple[int, str]:
    if len(row) != 3:
        raise ValueError(f"{csv_path}, line {line}: expected 3 columns, found {len(row)}")
    try:
        class_index = int(row[0])
    except ValueError as exc:
        raise ValueError(f"{csv_path}, line {line}: class index {row[0]!r} is not an integer") from exc
    if not 1 <= class_index <= len(AG_NEWS_CLASSES):
        raise ValueError(f"{csv_path}, line {line}: class index {class_index} is not in 1-4")
    return class_index - 1, " ".join(f"{row[1]} {row[2]}".split())


# --- Image folder (one sub-folder per class) ------------------------------------------------


def load_image_folder(root: Path, *, image_size: int) -> LabelledImages:
    """``root/<class>/<image>`` with classes and files sorted by name; images load lazily.

    Class folders without images are skipped, so ``class_names`` lists only classes that occur.
    """
    _check_image_size(image_size)
    if not root.is_dir():
        raise ValueError(f"image folder {root} does not exist")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir())
    if not class_dirs:
        raise ValueError(f"{root}: no class folders")
    paths: list[Path] = []
    labels: list[int] = []
    names: list[str] = []
    for class_dir in class_dirs:
        files = _image_files(class_dir)
        if files:
            paths.extend(files)
            labels.extend([len(names)] * len(files))
            names.append(class_dir.name)
    if not paths:
        extensions = ", ".join(sorted(IMAGE_EXTENSIONS))
        raise ValueError(f"{root}: no image files ({extensions}) in any class folder")
    return LabelledImages(
        images=ImageFiles(tuple(paths), image_size),
        labels=torch.tensor(labels, dtype=torch.long),
        class_names=tuple(names),
    )


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _check_image_size(image_size: int) -> None:
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
