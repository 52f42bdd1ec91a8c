"""Image-caption sources: a caption file plus an image folder, named by a one-line spec.

Specs (the agent's ``--data`` syntax; option values are URL-query encoded)::

    karpathy:FILE.json?images=DIR[&split=S[,S2...]]   COCO/Flickr30k Karpathy JSON (split: train by default)
    captions:FILE.jsonl?images=DIR                    {"image": "rel/path.jpg", "captions": [...]} per line
    captions:FILE.csv?images=DIR                      a header with ``image``, ``caption...`` columns

An item's id is the one the file gives (``id`` of a captions file) or else its image's path
relative to the image folder (``filepath/filename`` for Karpathy: unlike ``cocoid`` it exists in
every Karpathy file, COCO and Flickr30k alike). Ids must be unique, captions non-empty (stripped),
and image paths must stay inside the image folder.

:meth:`PairSource.items` streams what the format allows (JSONL and CSV line by line; a Karpathy
file is one JSON document) and never opens an image: whoever reads the items decides when to.
"""

from __future__ import annotations

import csv
import json
import urllib.parse
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TextIO, cast

import torch

from creamfl.data.types import ImageFiles, ImageTextPairs
from creamfl.spec_syntax import PAIR_SOURCE_HELP

SourceKind = Literal["karpathy", "captions"]
_OPTIONS: dict[str, frozenset[str]] = {"karpathy": frozenset({"images", "split"}), "captions": frozenset({"images"})}
CAPTION_SUFFIXES = (".jsonl", ".csv")


@dataclass(frozen=True)
class SourceItem:
    id: str  # unique within the source
    image_path: Path
    captions: tuple[str, ...]  # non-empty, each stripped and non-empty


@dataclass(frozen=True)
class _Record:
    """One item as the file states it, before the checks every format shares."""

    where: str  # "image #3", "line 7": how an error names it
    id: str | None  # None: the image path
    image: str  # relative to the image folder
    captions: Sequence[Any]


@dataclass(frozen=True)
class PairSource:
    kind: SourceKind
    path: Path  # the JSON / JSONL / CSV file
    images: Path  # the image folder
    splits: tuple[str, ...]  # karpathy: the splits read; captions: ()
    text: str  # the spec as written

    def files(self) -> tuple[Path, ...]:
        """What the source reads (for a check of where it may read from)."""
        return (self.path, self.images)

    def items(self) -> Iterator[SourceItem]:
        """The items in file order; ValueError names the file and the record for anything malformed."""
        if self.kind == "karpathy":
            return self._checked(_karpathy_records(self.path, self.splits))
        if self.path.suffix.lower() == ".csv":
            return self._checked(_csv_records(self.path))
        return self._checked(_jsonl_records(self.path))

    def load_pairs(self, image_size: int) -> ImageTextPairs:
        """Every item with all its captions; images load lazily, resized to ``image_size``."""
        check_image_size(image_size)
        paths: list[Path] = []
        captions: list[str] = []
        caption_image: list[int] = []
        for item in self.items():
            caption_image.extend([len(paths)] * len(item.captions))
            captions.extend(item.captions)
            paths.append(item.image_path)
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise ValueError(
                f"{self.path}: {len(missing)} of {len(paths)} image files are missing, first: {missing[0]}"
            )
        return ImageTextPairs(
            images=ImageFiles(tuple(paths), image_size),
            captions=tuple(captions),
            caption_image=torch.tensor(caption_image, dtype=torch.long),
        )

    def _checked(self, records: Iterable[_Record]) -> Iterator[SourceItem]:
        first_seen: dict[str, str] = {}  # id -> where: ids are small, so the set of them fits in memory
        for record in records:
            image = _relative_image_path(record.image, self.path, record.where)
            item_id = record.id if record.id is not None else image.as_posix()
            if item_id in first_seen:
                raise ValueError(f"{self.path}: {record.where} repeats the id {item_id!r} of {first_seen[item_id]}")
            first_seen[item_id] = record.where
            captions = _stripped_captions(record.captions, self.path, f"{record.where} ({item_id!r})")
            yield SourceItem(id=item_id, image_path=self.images / image, captions=captions)
        if not first_seen:
            where = f" in split(s) {sorted(self.splits)}" if self.kind == "karpathy" else ""
            raise ValueError(f"{self.path}: no image{where}")


def parse_pair_source(spec: str) -> PairSource:
    """The source a spec names (nothing is read yet); ValueError says what is wrong with the spec."""
    kind, colon, rest = spec.strip().partition(":")
    if not colon or kind not in _OPTIONS:
        raise ValueError(f"source {spec!r}: unknown kind {kind!r}; use {PAIR_SOURCE_HELP}")
    where, _, query = rest.partition("?")
    options = _options(spec, kind, query)
    if not where:
        raise ValueError(f"source {spec!r}: name the {kind} file; use {PAIR_SOURCE_HELP}")
    images = options.get("images")
    if not images:
        raise ValueError(f"source {spec!r}: say where the images are: {kind}:FILE?images=DIR")
    splits: tuple[str, ...] = ()
    if kind == "karpathy":
        splits = tuple(s for s in options.get("split", "train").split(",") if s)
        if not splits:
            raise ValueError(f"source {spec!r}: split names no split")
    elif Path(where).suffix.lower() not in CAPTION_SUFFIXES:
        raise ValueError(f"source {spec!r}: a captions file is .jsonl or .csv, not {Path(where).name!r}")
    return PairSource(kind=cast(SourceKind, kind), path=Path(where), images=Path(images), splits=splits, text=spec)


def check_image_size(image_size: int) -> None:
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")


def _options(spec: str, kind: str, query: str) -> dict[str, str]:
    try:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise ValueError(f"source {spec!r}: malformed options: {exc}") from exc
    options: dict[str, str] = {}
    for key, value in pairs:
        if key not in _OPTIONS[kind]:
            raise ValueError(
                f"source {spec!r}: unknown option {key!r} for {kind} (options: {', '.join(sorted(_OPTIONS[kind]))})"
            )
        if key in options:
            raise ValueError(f"source {spec!r}: option {key!r} is given twice")
        options[key] = value
    return options


def _relative_image_path(text: str, source: Path, where: str) -> PurePosixPath:
    image = PurePosixPath(text)
    if not text or image.is_absolute() or ".." in image.parts:
        raise ValueError(f"{source}: {where} has the image path {text!r}; it must be relative to the image folder")
    return image


def _stripped_captions(captions: Sequence[Any], source: Path, where: str) -> tuple[str, ...]:
    if not captions:
        raise ValueError(f"{source}: {where} has no caption")
    stripped = []
    for number, caption in enumerate(captions, 1):
        if not isinstance(caption, str):
            raise ValueError(f"{source}: {where} has caption {number} of type {type(caption).__name__}")
        if not caption.strip():
            raise ValueError(f"{source}: {where} has an empty caption (number {number})")
        stripped.append(caption.strip())
    return tuple(stripped)


# --- Karpathy caption JSON (COCO, Flickr30k) -------------------------------------------------


def _karpathy_records(json_path: Path, splits: Sequence[str]) -> Iterator[_Record]:
    wanted = set(splits)
    for position, entry in enumerate(_karpathy_entries(json_path)):
        where = f"image #{position}"
        if _field(entry, "split", str, json_path, where) not in wanted:
            continue
        sentences = _field(entry, "sentences", list, json_path, where)
        if not sentences:
            raise ValueError(f"{json_path}: {where} ({entry.get('filename')!r}) has no sentences")
        captions = [_field(s, "raw", str, json_path, where) for s in sentences]
        filename: str = _field(entry, "filename", str, json_path, where)
        # Only COCO entries carry a sub-folder (train2014/val2014); Flickr30k images sit in the root.
        folder = entry.get("filepath", "")
        if not isinstance(folder, str):
            raise ValueError(f"{json_path}: {where} has a non-string 'filepath'")
        yield _Record(where=where, id=None, image=f"{folder}/{filename}" if folder else filename, captions=captions)


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


def _field(record: Any, key: str, kind: type, source: Path, where: str) -> Any:
    if not isinstance(record, dict) or key not in record:
        raise ValueError(f"{source}: {where} lacks the key {key!r}")
    value = record[key]
    if not isinstance(value, kind):
        raise ValueError(f"{source}: {where} has {key!r} of type {type(value).__name__}")
    return value


# --- captions files: JSONL and CSV ------------------------------------------------------------


def _jsonl_records(path: Path) -> Iterator[_Record]:
    with _open_text(path) as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():  # tolerate blank lines, e.g. a trailing one
                continue
            where = f"line {number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: {where} is not valid JSON: {exc}") from exc
            image: str = _field(record, "image", str, path, where)
            if ("caption" in record) == ("captions" in record):
                raise ValueError(f"{path}: {where} needs exactly one of the keys 'caption' and 'captions'")
            if "caption" in record:
                captions = [_field(record, "caption", str, path, where)]
            else:
                captions = _field(record, "captions", list, path, where)
            yield _Record(where=where, id=_optional_id(record.get("id"), path, where), image=image, captions=captions)


def _optional_id(value: Any, path: Path, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
        raise ValueError(f"{path}: {where} has the id {value!r}; an id is a non-empty string or an integer")
    return str(value).strip()


def _csv_records(path: Path) -> Iterator[_Record]:
    with _open_text(path) as f:
        reader = csv.reader(f, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{path}: empty CSV file; expected a header naming 'image' and 'caption' columns")
            columns = _CsvColumns.of(header, path)
            for row in reader:
                if row:  # tolerate blank lines
                    yield columns.record(row, path, f"line {reader.line_num}")
        except csv.Error as exc:
            raise ValueError(f"{path}, line {reader.line_num}: malformed CSV: {exc}") from exc


@dataclass(frozen=True)
class _CsvColumns:
    width: int
    image: int
    captions: tuple[int, ...]
    id: int | None

    @classmethod
    def of(cls, header: list[str], path: Path) -> _CsvColumns:
        names = [name.strip().lower() for name in header]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"{path}: the header repeats the column(s) {duplicates}")
        captions = tuple(i for i, name in enumerate(names) if name.startswith("caption"))
        if "image" not in names or not captions:
            raise ValueError(f"{path}: the header {header} must name an 'image' column and 'caption...' column(s)")
        return cls(len(names), names.index("image"), captions, names.index("id") if "id" in names else None)

    def record(self, row: list[str], path: Path, where: str) -> _Record:
        if len(row) != self.width:
            raise ValueError(f"{path}: {where} has {len(row)} fields, the header {self.width}")
        item_id = row[self.id].strip() if self.id is not None else None
        if item_id == "":
            raise ValueError(f"{path}: {where} has an empty id")
        # Extra caption columns may be left empty; at least one caption is checked for later.
        captions = [row[i] for i in self.captions if row[i].strip()]
        return _Record(where=where, id=item_id, image=row[self.image].strip(), captions=captions)


@contextmanager
def _open_text(path: Path) -> Iterator[TextIO]:
    """A UTF-8 text file (a BOM tolerated) whose read errors become ValueErrors naming it."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except FileNotFoundError as exc:
        raise ValueError(f"caption file {path} does not exist") from exc
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc}") from exc
    with handle:
        try:
            yield handle
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not a UTF-8 text file: {exc}") from exc
        except OSError as exc:
            raise ValueError(f"{path}: cannot read: {exc}") from exc
