"""Tiny data sets in the real on-disk formats, written from generated scenes (so training on them is
meaningful): a labelled image folder, CIFAR-100 pickles, an AG_NEWS CSV, Karpathy JSON + images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from creamfl.data import samples
from creamfl.data.builtin import BuiltinSpec, builtin_split
from creamfl.data.scenes import CLASS_NAMES, Scenes


def scenes(count: int = 30, seed: int = 5) -> Scenes:
    return builtin_split(BuiltinSpec(seed=seed, private_size=count, image_size=32), "private")


def _png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))).save(path)


def write_image_folder(root: Path, data: Scenes) -> Path:
    for index in range(len(data)):
        label = CLASS_NAMES[int(data.labels[index])].replace("+", "-")
        _png(root / label / f"{index:04d}.png", data.images[index].numpy())
    return root


def write_cifar100(root: Path, data: Scenes) -> Path:
    """The same scenes as the train and the test set."""
    return samples.write_cifar100(root, data, data)


def write_ag_news(path: Path, data: Scenes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        for index in range(len(data)):
            first, second = data.captions[index]
            writer.writerow([int(data.labels[index]) % 4 + 1, first, second])
    return path


def write_karpathy(root: Path, data: Scenes, *, val: int = 4) -> tuple[Path, Path]:
    """The last ``val`` scenes go to the val split, the rest to train."""
    images = root / "images"
    entries = []
    for index in range(len(data)):
        name = f"{index:04d}.png"
        _png(images / "train2014" / name, data.images[index].numpy())
        split = "val" if index >= len(data) - val else "train"
        sentences = [{"raw": c} for c in data.captions[index]]
        entries.append({"filepath": "train2014", "filename": name, "split": split, "sentences": sentences})
    document = root / "dataset_coco.json"
    document.write_text(json.dumps({"images": entries}), encoding="utf-8")
    return document, images
