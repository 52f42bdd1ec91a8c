"""What a new federation's data resolves to: its registered datasets (sizes and hashes filled into
the config) and its client tokenizer (built, or trained on the public captions, and stored)."""

from __future__ import annotations

import functools
from collections.abc import Iterator

from pydantic import ValidationError
from sqlalchemy.orm import Session

from coordinator_service.artifacts import ArtifactStore
from coordinator_service.db.models import Dataset
from coordinator_service.errors import Conflict, Invalid
from creamfl.data.builtin import BuiltinSpec, builtin_split
from creamfl.data.shards import read_index
from creamfl.tokenizers import BUILTIN_WORDS, build_tokenizer, tokenizer_json
from shared_schemas.federation import DatasetPublicSet, EvaluationSetSpec, FederationCreate, PublicSetSpec


def resolve_datasets(session: Session, config: FederationCreate) -> tuple[FederationCreate, list[str]]:
    """The config with each named dataset's size and sha256 filled in, and the public set's shard
    hashes (empty for the built-in set). A dataset that is missing, not ready, or not the content
    the config pinned is refused."""
    updates: dict[str, object] = {}
    shards: list[str] = []
    if isinstance(config.public_set, DatasetPublicSet):
        dataset = _ready_dataset(session, config.public_set, "public_set")
        updates["public_set"] = config.public_set.model_copy(update=_identity(dataset))
        shards = [shard["sha256"] for shard in dataset.shards or []]
    if config.evaluation_set is not None:
        dataset = _ready_dataset(session, config.evaluation_set, "evaluation_set")
        updates["evaluation_set"] = config.evaluation_set.model_copy(update=_identity(dataset))
    try:
        # Validated again: public_subset_size may exceed the size now known.
        return FederationCreate.model_validate(config.model_copy(update=updates).model_dump()), shards
    except ValidationError as exc:
        raise Invalid(f"the federation config does not fit its datasets: {exc.errors()[0]['msg']}") from exc


def build_client_tokenizer(store: ArtifactStore, config: FederationCreate, public_shards: list[str]) -> str | None:
    """The JSON of the federation's WordPiece tokenizer (trained on every public caption for
    ``trained:V``), or None for the built-in words. Reads shard headers only, never images."""
    if config.tokenizer == BUILTIN_WORDS:
        return None
    captions = (
        _public_captions(store, config.public_set, public_shards) if config.tokenizer.startswith("trained:") else None
    )
    return tokenizer_json(build_tokenizer(config.tokenizer, captions))


def _public_captions(
    store: ArtifactStore, public: PublicSetSpec | DatasetPublicSet, shards: list[str]
) -> Iterator[str]:
    if isinstance(public, PublicSetSpec):
        scenes = builtin_split(
            BuiltinSpec(seed=public.seed, public_size=public.size, image_size=public.image_size), "public"
        )
        yield from (caption for captions in scenes.captions for caption in captions)
        return
    for sha in shards:
        index = read_index(functools.partial(_read_range, store, sha))
        yield from (caption for captions in index.captions for caption in captions)


def _read_range(store: ArtifactStore, sha256: str, start: int, length: int) -> bytes:
    return b"".join(store.open_range(sha256, start, start + length - 1))


def _ready_dataset(session: Session, ref: DatasetPublicSet | EvaluationSetSpec, field: str) -> Dataset:
    dataset = session.get(Dataset, ref.dataset)
    if dataset is None:
        raise Invalid(f"{field}: no dataset {ref.dataset!r}", dataset=ref.dataset)
    if dataset.state != "ready":
        why = f": {dataset.failure_reason}" if dataset.failure_reason else f" ({dataset.items} items so far)"
        raise Conflict(f"{field}: dataset {ref.dataset!r} is {dataset.state}{why}", dataset=ref.dataset)
    for pinned in ("size", "sha256"):
        expected, actual = getattr(ref, pinned), _identity(dataset)[pinned]
        if expected is not None and expected != actual:
            raise Conflict(
                f"{field}: dataset {ref.dataset!r} has {pinned} {actual}, the config pins {expected}",
                dataset=ref.dataset,
            )
    return dataset


def _identity(dataset: Dataset) -> dict[str, object]:
    return {"size": dataset.items, "sha256": dataset.sha256}
