"""The public set as an enrolled client sees it: the manifest, and which artifacts it may download.

The evaluation set is never among them: a client reaches the public dataset's shards and the
federation's tokenizer, nothing else of the store.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy.orm import Session

from coordinator_service.artifacts import ArtifactStore
from coordinator_service.db.models import Dataset, Federation
from coordinator_service.errors import NotFound
from coordinator_service.services.rounds import config_of
from creamfl.data.builtin import BuiltinSpec, builtin_split
from creamfl.data.manifest import scenes_manifest
from shared_schemas.datasets import PublicSetManifest, ShardRef, TokenizerRef
from shared_schemas.federation import PublicSetSpec


def manifest(session: Session, store: ArtifactStore, federation: Federation) -> PublicSetManifest:
    config = config_of(federation)
    spec = config.public_set
    sha = federation.tokenizer_sha256
    tokenizer = TokenizerRef(choice=config.tokenizer, sha256=sha, size=store.size(sha) if sha else None)
    common = {"embed_dim": config.embed_dim, "image_size": spec.image_size, "tokenizer": tokenizer}
    if isinstance(spec, PublicSetSpec):
        builtin = _builtin_manifest(spec.seed, spec.size, spec.image_size)
        return PublicSetManifest(kind="builtin", spec=spec.model_dump(), **builtin, **common)
    dataset = _public_dataset(session, federation)
    return PublicSetManifest(
        kind="dataset",
        size=dataset.items,
        sha256=dataset.sha256 or "",
        shards=[ShardRef.model_validate(shard) for shard in dataset.shards or []],
        **common,
    )


def shard_size(session: Session, federation: Federation, sha256: str) -> int:
    """The size of one shard of the federation's public dataset; 404 for anything else."""
    if federation.public_dataset_id is not None:
        for shard in _public_dataset(session, federation).shards or []:
            if shard["sha256"] == sha256:
                return int(shard["size"])
    raise NotFound(f"no shard {sha256} in this federation's public set")


def tokenizer_artifact(federation: Federation) -> str:
    if federation.tokenizer_sha256 is None:
        raise NotFound("this federation's tokenizer is the built-in words: there is nothing to download")
    return federation.tokenizer_sha256


def _public_dataset(session: Session, federation: Federation) -> Dataset:
    dataset = session.get(Dataset, federation.public_dataset_id)
    if dataset is None:  # a federation's datasets cannot be deleted
        raise NotFound(f"the public dataset {federation.public_dataset_id!r} is gone")
    return dataset


@functools.lru_cache(maxsize=8)
def _builtin_manifest(seed: int, size: int, image_size: int) -> dict[str, Any]:
    return scenes_manifest(builtin_split(BuiltinSpec(seed=seed, public_size=size, image_size=image_size), "public"))
