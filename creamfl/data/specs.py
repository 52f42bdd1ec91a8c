"""Client data specs: what a client trains on (what it trains with: :mod:`creamfl.models.specs`).

The client agent's ``--data`` and the simulator's ``--client MODALITY=SPEC`` read the same specs.
Every problem is a ``ValueError`` naming the spec; a spec whose data does not fit the client's
modality raises :class:`DataModalityError`, which carries what would fit, so each caller can say it
in its own words.

Data specs, ``KIND:WHERE[?key=value&...]`` (option values are URL-query encoded):

==================================================  ==========  ========================================
spec                                                modality    what
==================================================  ==========  ========================================
``builtin:SEED:I/K[?samples=N&alpha=A]``            any         client ``I`` (0-based) of ``K``: its
                                                                Dirichlet (``alpha``, default 0.5)
                                                                non-IID share of the built-in scenes'
                                                                private split of ``N`` (default 400)
                                                                scenes per client, seed ``SEED`` (as the
                                                                simulator's clients get it). image:
                                                                shape-pair labels; text: one caption per
                                                                scene with its label; multimodal: pairs.
``image-folder:DIR``                                image       ``DIR/<class>/<image>``, labels by folder
``cifar100:DIR[?split=train|test]``                 image       the CIFAR-100 python pickles in ``DIR``
``ag-news:FILE.csv``                                text        AG_NEWS rows ``class,title,description``
``karpathy:FILE.json?images=DIR[&split=S[,S2]]``    multimodal  COCO/Flickr30k Karpathy captions + images
                                                                (split: train by default)
``captions:FILE.jsonl|FILE.csv?images=DIR``         multimodal  a captions file + images
                                                                (:mod:`creamfl.data.sources`)
==================================================  ==========  ========================================

Every kind but ``builtin`` takes ``share=I/K`` (and ``seed=S``): only client ``I``'s share of ``K``
of the file, drawn from ``seed`` (default: the caller's, the simulation's seed for the simulator).
Labelled data is split Dirichlet non-IID on its labels (``alpha=A``, default 0.5,
:func:`creamfl.data.partition.dirichlet_partition`); image-caption pairs have no labels, so their
shares are IID: a seeded permutation of the images cut into ``K`` near-equal parts.

Images are brought to the federation's image size (``image_size=S`` pins another). Texts are
encoded with the federation's client tokenizer, which the caller passes.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from creamfl.data.builtin import BuiltinSpec, builtin_split
from creamfl.data.formats import load_ag_news, load_cifar100, load_image_folder
from creamfl.data.partition import dirichlet_partition
from creamfl.data.scenes import CLASS_NAMES
from creamfl.data.sources import parse_pair_source
from creamfl.data.types import ImageSource, ImageTextPairs, LabelledImages, LabelledTexts, SubsetSource
from creamfl.models.specs import CLIENT_MODALITIES, ClientModality
from creamfl.participants import client_init_seed
from creamfl.spec_syntax import DATA_SPEC_HELP
from creamfl.text import Tokenizer
from creamfl.training import TaskData

KIND_MODALITIES: dict[str, tuple[ClientModality, ...]] = {
    "builtin": CLIENT_MODALITIES,
    "image-folder": ("image",),
    "cifar100": ("image",),
    "ag-news": ("text",),
    "karpathy": ("multimodal",),
    "captions": ("multimodal",),
}
_SHARE_OPTIONS = frozenset({"share", "seed"})
_LABELLED_SHARE_OPTIONS = _SHARE_OPTIONS | {"alpha"}
_OPTIONS: dict[str, frozenset[str]] = {
    "builtin": frozenset({"samples", "alpha"}),
    "image-folder": _LABELLED_SHARE_OPTIONS | {"image_size"},
    "cifar100": _LABELLED_SHARE_OPTIONS | {"split", "image_size"},
    "ag-news": _LABELLED_SHARE_OPTIONS,
    "karpathy": _SHARE_OPTIONS | {"images", "split", "image_size"},
    "captions": _SHARE_OPTIONS | {"images", "image_size"},
}
_PAIR_SOURCE_OPTIONS = frozenset({"images", "split"})  # what creamfl.data.sources reads itself
DEFAULT_ALPHA = 0.5

ClientDataset = LabelledImages | LabelledTexts | ImageTextPairs


class DataModalityError(ValueError):
    """A data spec whose kind holds other data than the client's modality."""

    def __init__(self, spec: DataSpec, modality: ClientModality) -> None:
        self.spec, self.modality = spec, modality
        self.fits = KIND_MODALITIES[spec.kind]  # the modalities this data would serve
        super().__init__(f"{spec.text!r}: {spec.kind} data is {' or '.join(self.fits)} data, not {modality}")


@dataclass(frozen=True)
class PrivateData:
    task: TaskData
    num_classes: int  # 0 for image-text pairs
    description: str
    image_size: int | None  # None: no images
    # The torch seed to build the model under (built-in data: simulated client I's, so the same
    # initial weights); None: one derived from the client id.
    init_seed: int | None = None
    texts: tuple[str, ...] = ()  # the texts as read (text and pair data), for the tokenizer's [UNK] share

    @property
    def samples(self) -> int:
        return len(self.task)


@dataclass(frozen=True)
class Share:
    """Client ``index`` of ``count``'s rows of a dataset, drawn from ``seed`` (see the module docstring)."""

    index: int
    count: int
    alpha: float
    seed: int

    def rows(self, data: ClientDataset) -> Tensor:
        """``[n]`` sorted item indices of this client's share."""
        if isinstance(data, ImageTextPairs):
            order = torch.randperm(data.num_images, generator=torch.Generator().manual_seed(self.seed))
            rows = order.tensor_split(self.count)[self.index].sort().values
        else:
            rows = dirichlet_partition(data.labels, self.count, alpha=self.alpha, seed=self.seed)[self.index]
        if rows.numel() == 0:
            raise ValueError(f"share {self.index}/{self.count} is empty: the data has too few items for {self.count}")
        return rows

    def of(self, data: ClientDataset) -> ClientDataset:
        rows = self.rows(data)
        if isinstance(data, LabelledImages):
            return LabelledImages(_image_rows(data.images, rows), data.labels[rows], data.class_names)
        if isinstance(data, LabelledTexts):
            return LabelledTexts(tuple(data.texts[int(i)] for i in rows), data.labels[rows], data.class_names)
        # Caption indices as the targets, so TaskData.subset says which captions the share keeps.
        kept = TaskData(data.images, torch.arange(len(data.captions)), data.caption_image).subset(rows)
        assert kept.caption_image is not None
        return ImageTextPairs(kept.inputs, tuple(data.captions[int(i)] for i in kept.targets), kept.caption_image)

    def __str__(self) -> str:
        return f"share {self.index} of {self.count}"


@dataclass(frozen=True)
class DataSpec:
    kind: str
    where: str
    options: dict[str, str]
    text: str

    def load(self, modality: ClientModality, tokenizer: Tokenizer, *, image_size: int, seed: int = 0) -> PrivateData:
        """Read the data (images lazily where the format allows); ``seed`` draws a ``share`` unless the
        spec names its own."""
        if modality not in KIND_MODALITIES[self.kind]:
            raise DataModalityError(self, modality)
        size = self.image_size(image_size)
        if self.kind == "builtin":
            return _builtin(self, modality, tokenizer, size)
        try:
            data, description = _READERS[self.kind](self, size)
            share = self.share(seed)
            if share is not None:
                data, description = share.of(data), f"{description}, {share}"
        except ValueError as exc:
            raise ValueError(f"{self.text!r}: cannot read the data: {exc}") from exc
        return _private_data(data, description, tokenizer, size)

    def image_size(self, default: int) -> int:
        return self._positive_int("image_size", default)

    def share(self, default_seed: int) -> Share | None:
        """The ``share`` option, or None: all of the data."""
        text = self.options.get("share")
        if text is None:
            return None
        index, count = self._fraction(text, "share=I/K, e.g. share=0/4 for the first of 4 clients")
        return Share(index, count, self.alpha(), self._seed(default_seed))

    def alpha(self) -> float:
        """The Dirichlet concentration of a non-IID share (small: few classes per client)."""
        return self._positive_float("alpha", DEFAULT_ALPHA)

    def samples(self) -> int:
        """Built-in data: scenes per client in the private pool."""
        return self._positive_int("samples", 400)

    def pair_source_spec(self) -> str:
        """This spec as :func:`creamfl.data.sources.parse_pair_source` reads it (its own options only)."""
        own = {k: v for k, v in self.options.items() if k in _PAIR_SOURCE_OPTIONS}
        return f"{self.kind}:{self.where}?{urllib.parse.urlencode(own, safe='/,')}"

    def cifar_split(self) -> str:
        split = self.options.get("split", "train")
        if split not in ("train", "test"):
            raise ValueError(f"{self.text!r}: split must be train or test, got {split!r}")
        return split

    def builtin_share(self) -> tuple[int, int, int]:
        """``(SEED, I, K)`` of ``builtin:SEED:I/K``."""
        seed_text, colon, share = self.where.partition(":")
        if not colon or not seed_text.isdigit():
            raise ValueError(
                f"{self.text!r}: expected builtin:SEED:I/K, e.g. builtin:0:2/6 for client 2 of 6 with seed 0"
            )
        return (int(seed_text), *self._fraction(share, "builtin:SEED:I/K"))

    def _seed(self, default: int) -> int:
        value = self.options.get("seed")
        if value is None:
            return default
        if not value.isdigit():
            raise ValueError(f"{self.text!r}: seed must be a non-negative integer, got {value!r}")
        return int(value)

    def _fraction(self, text: str, expected: str) -> tuple[int, int]:
        index_text, slash, count_text = text.partition("/")
        if not (slash and index_text.isdigit() and count_text.isdigit()):
            raise ValueError(f"{self.text!r}: expected {expected}")
        index, count = int(index_text), int(count_text)
        if not (count >= 1 and index < count):
            raise ValueError(f"{self.text!r}: need K >= 1 and 0 <= I < K in {text}")
        return index, count

    def _positive_int(self, key: str, default: int) -> int:
        value = self.options.get(key)
        if value is None:
            return default
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{self.text!r}: {key} must be a positive integer, got {value!r}")
        return int(value)

    def _positive_float(self, key: str, default: float) -> float:
        value = self.options.get(key)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError as exc:
            raise ValueError(f"{self.text!r}: {key} must be a number, got {value!r}") from exc
        if not number > 0:
            raise ValueError(f"{self.text!r}: {key} must be positive, got {value!r}")
        return number


def parse_data_spec(text: str) -> DataSpec:
    """The spec ``text`` names, every option checked (nothing is read yet)."""
    kind, colon, rest = text.strip().partition(":")
    if not colon or kind not in KIND_MODALITIES:
        raise ValueError(f"{text!r}: unknown data spec; use one of {DATA_SPEC_HELP}")
    where, _, query = rest.partition("?")
    options: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key not in _OPTIONS[kind]:
            known = ", ".join(sorted(_OPTIONS[kind]))
            raise ValueError(f"{text!r}: unknown option {key!r} for {kind} data (options: {known})")
        options[key] = value
    if not where:
        raise ValueError(f"{text!r}: say where the {kind} data is; use one of {DATA_SPEC_HELP}")
    spec = DataSpec(kind=kind, where=where, options=options, text=text)
    _check_options(spec)
    return spec


def _check_options(spec: DataSpec) -> None:
    """Every option's value, so a bad one is refused before anything is read."""
    spec.image_size(1)
    spec.share(0)
    if spec.kind == "builtin":
        spec.builtin_share()
        spec.samples()
        spec.alpha()
    elif spec.kind == "cifar100":
        spec.cifar_split()
    elif spec.kind in ("karpathy", "captions"):
        parse_pair_source(spec.pair_source_spec())


# --- readers ---------------------------------------------------------------------------------------


def _builtin(spec: DataSpec, modality: ClientModality, tokenizer: Tokenizer, image_size: int) -> PrivateData:
    seed, index, clients = spec.builtin_share()
    per_client, alpha = spec.samples(), spec.alpha()
    # The simulator's private pool and partition (creamfl.participants), so client I here holds
    # what simulated client I would, and starts from the same initial model.
    builtin = BuiltinSpec(seed=seed, private_size=per_client * clients, image_size=max(image_size, 24))
    private = builtin_split(builtin, "private")
    share_rows = dirichlet_partition(private.labels, clients, alpha=alpha, seed=seed, min_size=8)[index]
    scenes = private.subset(share_rows)
    description = f"built-in scenes, client {index} of {clients}, {len(scenes)} samples"
    init_seed = client_init_seed(seed, index)
    if modality == "image":
        task = TaskData(scenes.images, scenes.labels)
        return PrivateData(task, len(CLASS_NAMES), description, builtin.image_size, init_seed)
    if modality == "text":
        texts = scenes.labelled_texts(seed + index)
        task = TaskData(tokenizer.encode(texts.texts), texts.labels)
        return PrivateData(task, len(CLASS_NAMES), description, None, init_seed, texts.texts)
    pairs = scenes.pairs()
    task = TaskData(scenes.images, tokenizer.encode(pairs.captions), pairs.caption_image)
    return PrivateData(task, 0, description, builtin.image_size, init_seed, pairs.captions)


def _image_folder(spec: DataSpec, image_size: int) -> tuple[ClientDataset, str]:
    return load_image_folder(Path(spec.where), image_size=image_size), f"image folder {spec.where}"


def _cifar100(spec: DataSpec, _image_size: int) -> tuple[ClientDataset, str]:
    split = spec.cifar_split()
    return load_cifar100(Path(spec.where), train=split == "train"), f"CIFAR-100 {split} in {spec.where}"


def _ag_news(spec: DataSpec, _image_size: int) -> tuple[ClientDataset, str]:
    return load_ag_news(Path(spec.where)), f"AG_NEWS {spec.where}"


def _pair_source(spec: DataSpec, image_size: int) -> tuple[ClientDataset, str]:
    source = parse_pair_source(spec.pair_source_spec())
    splits = f" ({'+'.join(source.splits)})" if source.splits else ""
    return source.load_pairs(image_size), f"captions {spec.where}{splits}"


_READERS: dict[str, Callable[[DataSpec, int], tuple[ClientDataset, str]]] = {
    "image-folder": _image_folder,
    "cifar100": _cifar100,
    "ag-news": _ag_news,
    "karpathy": _pair_source,
    "captions": _pair_source,
}


def _private_data(data: ClientDataset, description: str, tokenizer: Tokenizer, image_size: int) -> PrivateData:
    if isinstance(data, LabelledImages):
        images = resize_images(data.images, image_size) if isinstance(data.images, Tensor) else data.images
        task = TaskData(images, data.labels)
        return PrivateData(task, len(data.class_names), f"{description}, {len(task)} images", image_size)
    if isinstance(data, LabelledTexts):
        task = TaskData(tokenizer.encode(data.texts), data.labels)
        return PrivateData(task, len(data.class_names), f"{description}, {len(task)} texts", None, texts=data.texts)
    task = TaskData(data.images, tokenizer.encode(data.captions), data.caption_image)
    text = f"{description}, {data.num_images} images with {len(data.captions)} captions"
    return PrivateData(task, 0, text, image_size, texts=data.captions)


def _image_rows(images: ImageSource, rows: Tensor) -> ImageSource:
    """In-memory images are copied (and can then be resized); others are read through the rows."""
    return images[rows] if isinstance(images, Tensor) else SubsetSource(images, rows)


def resize_images(images: Tensor, size: int) -> Tensor:
    """uint8 ``[N, 3, H, W]`` to ``[N, 3, size, size]`` (bilinear, antialiased); unchanged if already so."""
    if images.shape[-2:] == (size, size):
        return images
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)
