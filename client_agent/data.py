"""Data specs (``--data``) and model specs (``--model``): what this client trains on, and with what.

Data specs, ``KIND:WHERE[?key=value&...]``:

==============================================  ==========  ============================================
spec                                            modality    what
==============================================  ==========  ============================================
``builtin:SEED:I/K[?samples=N&alpha=A]``        any         client ``I`` (0-based) of ``K``: its Dirichlet
                                                            (``alpha``, default 0.5) non-IID share of the
                                                            built-in scenes dataset's private split of
                                                            ``N`` (default 400) scenes per client, seed
                                                            ``SEED`` (as the simulator's clients get it).
                                                            image: shape-pair labels; text: one caption
                                                            per scene with its label; multimodal: pairs.
``image-folder:DIR[?image_size=S]``             image       ``DIR/<class>/<image>``, labels by folder
``cifar100:DIR[?split=train|test]``             image       the CIFAR-100 python pickles in ``DIR``
``ag-news:FILE.csv``                            text        AG_NEWS rows ``class,title,description``
``karpathy:FILE.json?images=DIR[&split=S]``     multimodal  COCO/Flickr30k Karpathy captions + images
                                                            (``split``: train, the default, val, test,
                                                            restval; several with commas)
==============================================  ==========  ============================================

Images are brought to the federation's image size (``image_size`` pins another). Texts use the
client tokenizer of the library (:func:`creamfl.participants.client_tokenizer`), the one the public
captions are encoded with.

Model specs: a client model of :mod:`creamfl.models.registry` (``image-cnn-s|m``, ``text-gru-s|m``,
``dual-s|m``), optionally with the representation dimension it must have: ``dual-s:256``. Without
one, the model takes the federation's dimension.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from client_agent.errors import ConfigError
from client_agent.settings import DATA_HELP, AgentModality
from creamfl.data.builtin import BuiltinSpec, builtin_split
from creamfl.data.formats import load_ag_news, load_cifar100, load_image_folder, load_karpathy_captions
from creamfl.data.partition import dirichlet_partition
from creamfl.data.scenes import CLASS_NAMES
from creamfl.data.types import ImageFiles, ImageSource, ImageTextPairs, LabelledImages, LabelledTexts
from creamfl.models.registry import CLIENT_MODELS, client_model_modalities
from creamfl.participants import client_init_seed
from creamfl.text import Tokenizer
from creamfl.training import TaskData

DEFAULT_MODELS: dict[AgentModality, str] = {"image": "image-cnn-s", "text": "text-gru-s", "multimodal": "dual-s"}
KIND_MODALITIES: dict[str, tuple[AgentModality, ...]] = {
    "builtin": ("image", "text", "multimodal"),
    "image-folder": ("image",),
    "cifar100": ("image",),
    "ag-news": ("text",),
    "karpathy": ("multimodal",),
}
_OPTIONS = {
    "builtin": {"samples", "alpha"},
    "image-folder": {"image_size"},
    "cifar100": {"split", "image_size"},
    "ag-news": set(),
    "karpathy": {"images", "split", "image_size"},
}


@dataclass(frozen=True)
class PrivateData:
    task: TaskData
    num_classes: int  # 0 for image-text pairs
    description: str
    image_size: int | None  # None: no images
    # The torch seed to build the model under (built-in data: simulated client I's, so the same
    # initial weights); None: one derived from the client id.
    init_seed: int | None = None

    @property
    def samples(self) -> int:
        return len(self.task)


@dataclass(frozen=True)
class DataSpec:
    kind: str
    where: str
    options: dict[str, str]
    text: str

    def load(self, modality: AgentModality, tokenizer: Tokenizer, *, image_size: int) -> PrivateData:
        """Read the data (images lazily where the format allows); a ConfigError says what is wrong."""
        if modality not in KIND_MODALITIES[self.kind]:
            allowed = " or ".join(KIND_MODALITIES[self.kind])
            raise ConfigError(
                f"--data {self.text}: {self.kind} data is {allowed} data, not {modality}; "
                f"pass --modality {KIND_MODALITIES[self.kind][0]} or other data"
            )
        size = self._int("image_size", image_size)
        try:
            return _LOADERS[self.kind](self, modality, tokenizer, size)
        except ValueError as exc:
            raise ConfigError(f"--data {self.text}: cannot read the data: {exc}") from exc

    def _int(self, key: str, default: int) -> int:
        value = self.options.get(key)
        if value is None:
            return default
        if not value.isdigit() or int(value) < 1:
            raise ConfigError(f"--data {self.text}: {key} must be a positive integer, got {value!r}")
        return int(value)


def parse_data_spec(text: str) -> DataSpec:
    kind, colon, rest = text.strip().partition(":")
    if not colon or kind not in KIND_MODALITIES:
        raise ConfigError(f"--data {text!r}: unknown data spec; use one of {DATA_HELP}")
    where, _, query = rest.partition("?")
    options: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key not in _OPTIONS[kind]:
            known = ", ".join(sorted(_OPTIONS[kind])) or "none"
            raise ConfigError(f"--data {text!r}: unknown option {key!r} for {kind} data (options: {known})")
        options[key] = value
    if not where:
        raise ConfigError(f"--data {text!r}: say where the {kind} data is; use one of {DATA_HELP}")
    return DataSpec(kind=kind, where=where, options=options, text=text)


# --- loaders ---------------------------------------------------------------------------------------


def _builtin(spec: DataSpec, modality: AgentModality, tokenizer: Tokenizer, image_size: int) -> PrivateData:
    try:
        seed_text, share = spec.where.split(":", 1)
        index_text, clients_text = share.split("/", 1)
        seed, index, clients = int(seed_text), int(index_text), int(clients_text)
    except ValueError as exc:
        raise ConfigError(
            f"--data {spec.text}: expected builtin:SEED:I/K, e.g. builtin:0:2/6 for client 2 of 6 with seed 0"
        ) from exc
    if not (seed >= 0 and clients >= 1 and 0 <= index < clients):
        raise ConfigError(f"--data {spec.text}: need SEED >= 0, K >= 1 and 0 <= I < K")
    per_client = spec._int("samples", 400)
    try:
        alpha = float(spec.options.get("alpha", "0.5"))
    except ValueError as exc:
        raise ConfigError(f"--data {spec.text}: alpha must be a number") from exc
    if not alpha > 0:
        raise ConfigError(f"--data {spec.text}: alpha must be positive")
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
        return PrivateData(task, len(CLASS_NAMES), description, None, init_seed)
    return replace(_pairs(scenes.pairs(), tokenizer, description, builtin.image_size), init_seed=init_seed)


def _image_folder(spec: DataSpec, _modality: AgentModality, _tokenizer: Tokenizer, image_size: int) -> PrivateData:
    return _labelled(load_image_folder(Path(spec.where), image_size=image_size), f"image folder {spec.where}")


def _cifar100(spec: DataSpec, _modality: AgentModality, _tokenizer: Tokenizer, image_size: int) -> PrivateData:
    split = spec.options.get("split", "train")
    if split not in ("train", "test"):
        raise ConfigError(f"--data {spec.text}: split must be train or test, got {split!r}")
    data = load_cifar100(Path(spec.where), train=split == "train")
    images = resize_images(data.images, image_size) if isinstance(data.images, Tensor) else data.images
    return _labelled(replace(data, images=images), f"CIFAR-100 {split} in {spec.where}")


def _ag_news(spec: DataSpec, _modality: AgentModality, tokenizer: Tokenizer, _image_size: int) -> PrivateData:
    texts: LabelledTexts = load_ag_news(Path(spec.where))
    task = TaskData(tokenizer.encode(texts.texts), texts.labels)
    return PrivateData(task, len(texts.class_names), f"AG_NEWS {spec.where}, {len(task)} texts", None)


def _karpathy(spec: DataSpec, _modality: AgentModality, tokenizer: Tokenizer, image_size: int) -> PrivateData:
    images = spec.options.get("images")
    if not images:
        raise ConfigError(f"--data {spec.text}: say where the images are: karpathy:FILE.json?images=DIR")
    splits = [s for s in spec.options.get("split", "train").split(",") if s]
    pairs = load_karpathy_captions(Path(spec.where), Path(images), split=splits, image_size=image_size)
    return _pairs(pairs, tokenizer, f"captions {spec.where} ({'+'.join(splits)})", image_size)


def _labelled(data: LabelledImages, description: str) -> PrivateData:
    size = _image_side(data.images)
    task = TaskData(data.images, data.labels)
    return PrivateData(task, len(data.class_names), f"{description}, {len(task)} images", size)


def _pairs(pairs: ImageTextPairs, tokenizer: Tokenizer, description: str, image_size: int) -> PrivateData:
    task = TaskData(pairs.images, tokenizer.encode(pairs.captions), pairs.caption_image)
    text = f"{description}, {pairs.num_images} images with {len(pairs.captions)} captions"
    return PrivateData(task, 0, text, image_size)


def _image_side(images: ImageSource) -> int | None:
    if isinstance(images, ImageFiles):
        return images.size
    if isinstance(images, Tensor):
        return int(images.shape[-1])
    return None


def resize_images(images: Tensor, size: int) -> Tensor:
    """uint8 ``[N, 3, H, W]`` to ``[N, 3, size, size]`` (bilinear, antialiased); unchanged if already so."""
    if images.shape[-2:] == (size, size):
        return images
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)


_LOADERS: dict[str, Callable[[DataSpec, AgentModality, Tokenizer, int], PrivateData]] = {
    "builtin": _builtin,
    "image-folder": _image_folder,
    "cifar100": _cifar100,
    "ag-news": _ag_news,
    "karpathy": _karpathy,
}


# --- model specs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    name: str
    dim: int | None  # the representation dimension the operator insists on, if any


def parse_model_spec(text: str | None, modality: AgentModality) -> ModelSpec:
    """``NAME[:DIM]``, checked against the modality; the modality's default model when None."""
    if text is None:
        return ModelSpec(DEFAULT_MODELS[modality], None)
    name, _, dim_text = text.strip().partition(":")
    if name not in CLIENT_MODELS:
        raise ConfigError(f"--model {text!r}: unknown client model; choose one of {', '.join(CLIENT_MODELS)}")
    dim = None
    if dim_text:
        if not dim_text.isdigit() or int(dim_text) < 1:
            raise ConfigError(f"--model {text!r}: the dimension after ':' must be a positive integer")
        dim = int(dim_text)
    wanted = ("image", "text") if modality == "multimodal" else (modality,)
    has = client_model_modalities(name)
    if set(has) != set(wanted):
        fits = ", ".join(m for m, spec in CLIENT_MODELS.items() if set(spec[0]) == set(wanted))
        raise ConfigError(
            f"--model {name} represents {' and '.join(has)}, but --modality is {modality}; "
            f"use one of {fits} (or change --modality)"
        )
    return ModelSpec(name, dim)
