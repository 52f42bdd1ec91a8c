"""A simulation on data from disk: its public and test sets, client tokenizer and clients.

Written on the command line (``creamfl simulate --public SPEC --test SPEC --client MODALITY=SPEC
... --tokenizer CHOICE``) or as a TOML file (``creamfl simulate --scenario FILE.toml``)::

    public = "karpathy:coco/dataset_coco.json?images=coco/images&split=train"
    test = "karpathy:coco/dataset_coco.json?images=coco/images&split=test"
    tokenizer = "trained:8000"
    rounds = 6          # any SimulationConfig field but the built-in data's sizes and client counts
    embed_dim = 256

    [[clients]]
    modality = "image"
    data = "cifar100:cifar-100-python?share=0/2"
    model = "image-cnn-m"   # optional: else its modality's next model size

The public and test sets are image-caption pair sources (:mod:`creamfl.data.sources`), the
clients' data are client data specs (:mod:`creamfl.data.specs`). Paths in a scenario file are
relative to the file's folder.
"""

from __future__ import annotations

import tomllib
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from creamfl.data.sources import PairSource, parse_pair_source
from creamfl.data.specs import KIND_MODALITIES, DataModalityError, DataSpec, parse_data_spec
from creamfl.models.specs import CLIENT_MODALITIES, ClientModality, ModelSpec, parse_model_spec
from creamfl.sim_config import BUILTIN_DATA_FIELDS, PRESETS, SimulationConfig
from creamfl.tokenizers import BUILTIN_WORDS, check_choice

_CONFIG_FIELDS = frozenset(SimulationConfig.__dataclass_fields__)


@dataclass(frozen=True)
class ClientPlan:
    modality: ClientModality
    data: DataSpec
    model: ModelSpec | None  # None: its modality's next model size (SimulationConfig.image_models, ...)


@dataclass(frozen=True)
class Scenario:
    public: PairSource
    test: PairSource
    tokenizer: str  # a creamfl.tokenizers choice other than the built-in words
    clients: tuple[ClientPlan, ...]

    def as_dict(self) -> dict[str, Any]:
        clients = [
            {"modality": c.modality, "data": c.data.text, "model": None if c.model is None else c.model.name}
            for c in self.clients
        ]
        return {
            "kind": "scenario",
            "public": self.public.text,
            "test": self.test.text,
            "tokenizer": self.tokenizer,
            "clients": clients,
        }


@dataclass(frozen=True)
class ClientEntry:
    """A client as written: ``modality``, its data spec and optionally its model spec."""

    modality: str
    data: str
    model: str | None = None


def new_scenario(*, public: str, test: str, tokenizer: str | None, clients: Sequence[ClientEntry]) -> Scenario:
    """The scenario these specs name, every spec checked (nothing is read yet)."""
    if tokenizer is None or check_choice(tokenizer) == BUILTIN_WORDS:
        raise ValueError(
            f"data from disk needs the tokenizer wordpiece-minilm or trained:V (V tokens learnt from the public "
            f"captions); {BUILTIN_WORDS} knows only the built-in scenes' words"
        )
    return Scenario(
        public=_pair_source("public", public),
        test=_pair_source("test", test),
        tokenizer=tokenizer,
        clients=tuple(_client_plan(number, entry) for number, entry in enumerate(clients)),
    )


def parse_client_arg(text: str) -> ClientEntry:
    """``MODALITY=SPEC``, as ``--client`` takes it."""
    modality, equals, data = text.partition("=")
    if not equals:
        raise ValueError(f"--client {text!r}: expected MODALITY=SPEC, e.g. image=cifar100:DIR?share=0/4")
    return ClientEntry(modality=modality.strip(), data=data.strip())


def _pair_source(role: str, spec: str) -> PairSource:
    try:
        return parse_pair_source(spec)
    except ValueError as exc:
        raise ValueError(f"{role} set: {exc}") from exc


def _client_plan(number: int, entry: ClientEntry) -> ClientPlan:
    try:
        if entry.modality not in CLIENT_MODALITIES:
            raise ValueError(f"unknown modality {entry.modality!r}; use one of {', '.join(CLIENT_MODALITIES)}")
        modality: ClientModality = entry.modality  # narrowed by the check above
        data = parse_data_spec(entry.data)
        if modality not in KIND_MODALITIES[data.kind]:
            raise DataModalityError(data, modality)
        model = None if entry.model is None else parse_model_spec(entry.model, modality)
    except ValueError as exc:
        raise ValueError(f"client {number} ({entry.modality}): {exc}") from exc
    return ClientPlan(modality=modality, data=data, model=model)


# --- the configuration -----------------------------------------------------------------------------


def scenario_config(preset: str, fields: dict[str, Any]) -> SimulationConfig:
    """``preset`` with ``fields`` (SimulationConfig fields as written), validated; the built-in data's
    sizes and client counts are refused: the files and the clients give them."""
    unknown = sorted(fields.keys() - _CONFIG_FIELDS)
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}")
    builtin_only = sorted(fields.keys() & BUILTIN_DATA_FIELDS)
    if builtin_only:
        raise ValueError(
            f"{', '.join(builtin_only)} describe(s) the built-in data; with data from disk the files and "
            "the clients give the sizes (a client's share=I/K&alpha=A its partition)"
        )
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    try:
        return TypeAdapter(SimulationConfig).validate_python({**PRESETS[preset], **fields})
    except ValidationError as exc:
        raise ValueError(one_line(exc)) from exc


def one_line(exc: ValidationError) -> str:
    """A pydantic error's problems, ``where: what``, on one line."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        problems.append(f"{where}: {error['msg']}" if where else error["msg"].removeprefix("Value error, "))
    return "; ".join(problems)


# --- the scenario file -----------------------------------------------------------------------------


class _ClientRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    modality: str
    data: str
    model: str | None = None


class _ScenarioRecord(BaseModel):
    # Extra keys are SimulationConfig fields, checked by scenario_config.
    model_config = ConfigDict(extra="allow", strict=True)

    public: str
    test: str
    tokenizer: str | None = None
    clients: list[_ClientRecord] = []


@dataclass(frozen=True)
class ScenarioFile:
    """A scenario file as written: its specs (paths made relative to its folder) and its settings."""

    public: str
    test: str
    tokenizer: str | None
    clients: tuple[ClientEntry, ...]
    settings: dict[str, Any]  # SimulationConfig fields


def read_scenario_file(path: Path) -> ScenarioFile:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValueError(f"scenario file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"scenario file {path}: cannot read it: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"scenario file {path}: not valid TOML: {exc}") from exc
    try:
        record = _ScenarioRecord.model_validate(document)
    except ValidationError as exc:
        raise ValueError(f"scenario file {path}: {one_line(exc)}") from exc
    folder = path.parent
    return ScenarioFile(
        public=_rebased(record.public, folder),
        test=_rebased(record.test, folder),
        tokenizer=record.tokenizer,
        clients=tuple(ClientEntry(c.modality, _rebased(c.data, folder), c.model) for c in record.clients),
        settings=dict(record.model_extra or {}),
    )


def _rebased(spec: str, folder: Path) -> str:
    """``spec`` with its relative file and ``images`` paths taken from ``folder``."""
    kind, colon, rest = spec.strip().partition(":")
    if not colon or kind == "builtin":  # builtin:SEED:I/K names no file
        return spec
    where, question, query = rest.partition("?")
    options = [
        (key, str(folder / value) if key == "images" and value else value)
        for key, value in urllib.parse.parse_qsl(query, keep_blank_values=True)
    ]
    rebased_where = str(folder / where) if where else where
    return f"{kind}:{rebased_where}{question}{urllib.parse.urlencode(options, safe='/,')}"
