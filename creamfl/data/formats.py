"""Loaders for the on-disk formats of the public datasets CreamFL is evaluated on.

Each loader reads one format into the shapes of :mod:`creamfl.data.types` and never reorders
records: images, labels and texts keep their file order, so their pairing is preserved. Every
problem with the files is reported as a ``ValueError`` naming the file and what is wrong.
"""

from __future__ import annotations

import csv
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from creamfl.data.sources import PairSource, check_image_size
from creamfl.data.types import ImageFiles, ImageTextPairs, LabelledImages, LabelledTexts

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"})
AG_NEWS_CLASSES = ("World", "Sports", "Business", "Sci/Tech")
CIFAR_SIDE = 32


# --- Karpathy caption JSON (COCO, Flickr30k) -------------------------------------------------


def load_karpathy_captions(
    json_path: Path, image_root: Path, *, split: str | Sequence[str], image_size: int
) -> ImageTextPairs:
    """Images of the given split(s) with all their captions, in file order; images load lazily
    (read by :class:`creamfl.data.sources.PairSource`, the one reader of caption files)."""
    splits = (split,) if isinstance(split, str) else tuple(split)
    text = f"karpathy:{json_path}?images={image_root}&split={','.join(splits)}"
    return PairSource("karpathy", json_path, image_root, splits, text).load_pairs(image_size)


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
    check_image_size(image_size)
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
