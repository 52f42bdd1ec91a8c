"""Small datasets in every on-disk format the platform reads, written from the built-in scenes.

For trying the real-data paths without downloading anything (the tests, the benchmarks and the
README's walk-through use them): a Karpathy caption JSON and a plain captions file with their JPEG
folders, CIFAR-100 python pickles, a labelled image folder, and an AG_NEWS-format CSV of
English news sentences. Everything is deterministic in its seed.
"""

from __future__ import annotations

import csv
import io
import json
import pickle
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from creamfl.data.builtin import BuiltinSpec, builtin_split
from creamfl.data.formats import AG_NEWS_CLASSES
from creamfl.data.scenes import CLASS_NAMES, Scenes


@dataclass(frozen=True)
class CaptionFiles:
    """A caption file and the image folder its records point into."""

    path: Path
    images: Path


def jpeg_bytes(image: Tensor, *, quality: int = 90) -> bytes:
    """A uint8 ``[3, H, W]`` image as JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def write_karpathy(root: Path, splits: Mapping[str, Scenes]) -> CaptionFiles:
    """``root/dataset.json`` (Karpathy layout: filename, split, sentences) and ``root/images/*.jpg``."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    entries: list[dict[str, object]] = []
    for split, scenes in splits.items():
        for index in range(len(scenes)):
            filename = f"{split}-{index:06d}.jpg"
            (images / filename).write_bytes(jpeg_bytes(scenes.images[index]))
            sentences = [{"raw": caption} for caption in scenes.captions[index]]
            entries.append({"filename": filename, "split": split, "imgid": len(entries), "sentences": sentences})
    path = root / "dataset.json"
    path.write_text(json.dumps({"images": entries}), encoding="utf-8")
    return CaptionFiles(path, images)


def write_captions(root: Path, scenes: Scenes, *, format: str = "jsonl") -> CaptionFiles:
    """A plain captions file (``jsonl``: one ``{"image", "captions"}`` per line; ``csv``: ``image,
    caption_1, caption_2``) beside ``root/images/*.jpg``."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(len(scenes)):
        names.append(f"scene-{index:06d}.jpg")
        (images / names[-1]).write_bytes(jpeg_bytes(scenes.images[index]))
    path = root / f"captions.{format}"
    if format == "jsonl":
        lines = [json.dumps({"image": n, "captions": list(c)}) for n, c in zip(names, scenes.captions, strict=True)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif format == "csv":
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "caption_1", "caption_2"])
            writer.writerows([n, *c] for n, c in zip(names, scenes.captions, strict=True))
    else:
        raise ValueError(f"format must be jsonl or csv, got {format!r}")
    return CaptionFiles(path, images)


def write_cifar100(root: Path, train: Scenes, test: Scenes) -> Path:
    """The CIFAR-100 python layout (``train``, ``test``, ``meta`` pickles) of 32x32 scenes, labelled
    with the scenes' shape-pair classes."""
    root.mkdir(parents=True, exist_ok=True)
    for name, scenes in (("train", train), ("test", test)):
        if scenes.images.shape[-2:] != (32, 32):
            raise ValueError("CIFAR-100 images are 32x32")
        batch = {
            b"data": scenes.images.reshape(len(scenes), -1).numpy(),
            b"fine_labels": scenes.labels.tolist(),
        }
        (root / name).write_bytes(pickle.dumps(batch))
    (root / "meta").write_bytes(pickle.dumps({b"fine_label_names": [n.encode() for n in CLASS_NAMES]}))
    return root


def write_image_folder(root: Path, scenes: Scenes) -> Path:
    """``root/<class>/<index>.png`` for every scene."""
    for index in range(len(scenes)):
        folder = root / CLASS_NAMES[int(scenes.labels[index])]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scenes.images[index].permute(1, 2, 0).numpy()).save(folder / f"{index:06d}.png")
    return root


# --- English news, AG_NEWS-style ---------------------------------------------------------------

_NEWS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "World": (
        (
            "{country} and {country2} agree to resume {topic} talks",
            "Protests spread across {city} after disputed election",
            "{country} recalls ambassador over border incident",
        ),
        (
            "Officials in {city} said on {day} that negotiators from {country} and {country2} would meet "
            "again next week to discuss {topic}, after months of stalled diplomacy.",
            "Thousands of people marched through the capital on {day}, demanding a recount and the release "
            "of opposition leaders detained by police.",
            "The foreign ministry of {country} accused its neighbour of violating an agreement signed in "
            "{city}, and warned of further measures.",
        ),
    ),
    "Sports": (
        (
            "{team} beat {team2} {score} to reach the final",
            "Injury rules star striker out of {competition}",
            "{team} sign veteran goalkeeper on two-year deal",
        ),
        (
            "A late goal in the second half gave {team} a {score} victory over {team2} on {day}, sending the "
            "club into its first {competition} final in a decade.",
            "The coach confirmed on {day} that the forward tore a hamstring in training and will miss the "
            "rest of the {competition} season.",
            "The experienced keeper, who spent six seasons abroad, passed a medical in {city} and will join "
            "{team} before the transfer window closes.",
        ),
    ),
    "Business": (
        (
            "Shares of {company} fall after quarterly profit warning",
            "{company} to cut {number} jobs in restructuring plan",
            "Oil prices climb as supply concerns grow",
        ),
        (
            "{company} said on {day} that revenue for the quarter would miss analyst forecasts, citing weak "
            "demand in {country} and rising costs, and its stock dropped sharply in early trading.",
            "The retailer announced it would close stores and reduce its workforce by {number} as it shifts "
            "investment toward online sales and logistics.",
            "Crude futures rose for a third straight session on {day} after producers signalled they would "
            "keep output limits in place through the winter.",
        ),
    ),
    "Sci/Tech": (
        (
            "{company} unveils faster chip for mobile devices",
            "Researchers map the genome of a drought-resistant crop",
            "Space agency delays launch of weather satellite",
        ),
        (
            "The new processor uses less power and runs machine learning models on the phone itself, "
            "{company} engineers told reporters in {city} on {day}.",
            "Scientists at a university in {country} published the sequence on {day}, saying it could help "
            "farmers breed varieties that survive longer dry seasons.",
            "Engineers found a fault in a fuel valve during final checks, and the launch from the coast of "
            "{country} was moved to next month.",
        ),
    ),
}
_FILLERS = {
    "country": ("France", "Brazil", "Japan", "Kenya", "Canada", "India", "Norway", "Egypt", "Chile", "Vietnam"),
    "city": ("Geneva", "Nairobi", "Lisbon", "Seoul", "Toronto", "Madrid", "Cairo", "Oslo", "Lima", "Jakarta"),
    "topic": ("trade", "security", "water sharing", "fishing rights", "climate", "nuclear", "refugee"),
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "team": ("United", "Rovers", "Athletic", "City", "Wanderers", "Rangers", "Albion", "Celtic"),
    "competition": ("cup", "league", "champions", "continental"),
    "score": ("2-1", "3-0", "1-0", "4-2", "2-0", "3-2"),
    "company": ("Northwind", "Globex", "Initech", "Umbrella Labs", "Vandelay", "Hooli", "Acme", "Stark Digital"),
    "number": ("1,200", "800", "3,500", "450", "2,000", "6,000"),
}


def news_rows(count: int, *, seed: int = 0) -> list[tuple[int, str, str]]:
    """``count`` AG_NEWS rows ``(class 1-4, title, description)``: English news sentences."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        label = rng.randrange(len(AG_NEWS_CLASSES))
        titles, descriptions = _NEWS[AG_NEWS_CLASSES[label]]
        fill = {key: rng.choice(values) for key, values in _FILLERS.items()}
        fill["country2"] = rng.choice([c for c in _FILLERS["country"] if c != fill["country"]])
        fill["team2"] = rng.choice([t for t in _FILLERS["team"] if t != fill["team"]])
        rows.append((label + 1, rng.choice(titles).format(**fill), rng.choice(descriptions).format(**fill)))
    return rows


def write_ag_news(path: Path, count: int, *, seed: int = 0) -> Path:
    """An AG_NEWS-format CSV (``class,title,description``, no header) of :func:`news_rows`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(news_rows(count, seed=seed))
    return path


# --- the paper's setting, in miniature --------------------------------------------------------


@dataclass(frozen=True)
class SampleScenario:
    """The specs of a written sample scenario: public and test pairs, one client per modality."""

    public: str
    test: str
    clients: dict[str, str]  # modality -> data spec
    toml: Path  # the same, as a `creamfl simulate --scenario` file


def write_sample_scenario(
    root: Path, *, seed: int = 0, public: int = 300, test: int = 100, private: int = 600, news: int = 600
) -> SampleScenario:
    """The paper's setting on real formats, from the built-in scenes: a Karpathy caption file (train:
    the public set, test: the evaluation set, restval: an image+text client's pairs), CIFAR-100
    pickles for an image client, an AG_NEWS CSV for a text client, and ``scenario.toml``."""
    spec = BuiltinSpec(seed=seed, public_size=public, test_size=test, private_size=private, image_size=32)
    pool = builtin_split(spec, "private")
    half = len(pool) // 2
    coco = write_karpathy(
        root / "coco",
        {
            "train": builtin_split(spec, "public"),
            "test": builtin_split(spec, "test"),
            "restval": pool.subset(torch.arange(half, len(pool))),
        },
    )
    cifar = write_cifar100(root / "cifar-100-python", pool.subset(torch.arange(half)), builtin_split(spec, "test"))
    ag_news = write_ag_news(root / "ag_news.csv", news, seed=seed)
    karpathy = f"karpathy:{coco.path.resolve()}?images={coco.images.resolve()}"
    clients = {"image": f"cifar100:{cifar.resolve()}", "text": f"ag-news:{ag_news.resolve()}"}
    clients["multimodal"] = f"{karpathy}&split=restval"
    scenario = SampleScenario(f"{karpathy}&split=train", f"{karpathy}&split=test", clients, root / "scenario.toml")
    lines = [f'public = "{scenario.public}"', f'test = "{scenario.test}"', 'tokenizer = "trained:2000"', ""]
    for modality, data in clients.items():
        lines += ["[[clients]]", f'modality = "{modality}"', f'data = "{data}"', ""]
    scenario.toml.write_text("\n".join(lines), encoding="utf-8")
    return scenario
