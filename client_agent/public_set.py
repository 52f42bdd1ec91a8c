"""The public set and the federation's client tokenizer, as the coordinator's manifest describes them.

- The built-in dataset: the manifest carries the generator's spec; every party regenerates the same
  bytes (:func:`creamfl.data.builtin.builtin_split`) and compares the manifest's sha256
  (:func:`creamfl.data.manifest.scenes_manifest`). The cache is a safetensors file (images and
  labels, captions in its metadata) named by that hash, re-checked against it on every load.
- A registered dataset: its shards are downloaded into the public cache
  (:class:`~client_agent.public_files.PublicFiles`), and read on demand: images decoded and first
  captions tokenized for the rows a round asks for, a couple of shards open at a time, so memory is
  bounded by a shard, not by the dataset.
- The tokenizer: the built-in words, or a WordPiece tokenizer's JSON downloaded beside the shards.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from pydantic import ValidationError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from client_agent.errors import AgentError, ConfigError
from client_agent.public_files import PublicFiles, shard_name, tokenizer_name
from client_agent.state import write_atomic
from creamfl.data.builtin import BuiltinSpec, builtin_split
from creamfl.data.manifest import scenes_manifest
from creamfl.data.scenes import Scenes
from creamfl.data.shards import ShardFiles, dataset_sha256
from creamfl.data.types import ImageSource
from creamfl.text import Tokenizer
from creamfl.tokenizers import BUILTIN_WORDS, load_tokenizer
from shared_schemas.datasets import PublicSetManifest, TokenizerRef
from shared_schemas.federation import PublicSetSpec

log = logging.getLogger("client_agent.public_set")


class TokenSource(Protocol):
    def __getitem__(self, index: Tensor) -> Tensor:
        """``[B, L]`` token ids of the rows ``index`` ``[B]``."""
        ...


@dataclass(frozen=True)
class PublicSet:
    images: ImageSource  # N x [3, H, W] uint8: in memory (built-in) or decoded from the shards on demand
    token_ids: TokenSource  # [N, L] by rows: each item's first caption, with the client tokenizer
    sha256: str
    image_size: int

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class FirstCaptionTokens:
    """The token ids of each item's first caption, tokenized for the rows asked for."""

    shards: ShardFiles
    tokenizer: Tokenizer

    def __getitem__(self, index: Tensor) -> Tensor:
        return self.tokenizer.encode([captions[0] for captions in self.shards.captions(index)])


def cached_names(manifest: PublicSetManifest) -> set[str]:
    """The files of the public cache this manifest uses (:meth:`PublicFiles.keep_only` drops the rest)."""
    if manifest.kind == "builtin":
        names = {_builtin_name(manifest.sha256)}
    else:
        names = {shard_name(shard.sha256) for shard in manifest.shards}
    if manifest.tokenizer.sha256 is not None:
        names.add(tokenizer_name(manifest.tokenizer.sha256))
    return names


def federation_tokenizer(ref: TokenizerRef, files: PublicFiles) -> Tokenizer:
    """The client tokenizer the federation fixed: the built-in words, or its downloaded JSON."""
    if ref.choice == BUILTIN_WORDS:
        return load_tokenizer(ref.choice, None)
    if ref.sha256 is None:
        raise AgentError(f"the coordinator's manifest names the tokenizer {ref.choice!r} without its sha256")
    path = files.tokenizer(ref.sha256, ref.size)
    try:
        return load_tokenizer(ref.choice, path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise AgentError(
            f"the federation's tokenizer {ref.choice!r} is unusable here ({exc}): upgrade the agent"
        ) from exc


def obtain_public_set(manifest: PublicSetManifest, files: PublicFiles, tokenizer: Tokenizer) -> PublicSet:
    """The public set the manifest describes: generated (or from the cache), or its shards downloaded."""
    if manifest.kind == "dataset":
        return _dataset(manifest, files, tokenizer)
    with files.reporter.step("public set", manifest.size, "items"):
        return _builtin(manifest, files.cache_dir, tokenizer)


def _dataset(manifest: PublicSetManifest, files: PublicFiles, tokenizer: Tokenizer) -> PublicSet:
    shards = manifest.shards
    if (
        not shards
        or sum(shard.items for shard in shards) != manifest.size
        or dataset_sha256([shard.sha256 for shard in shards]) != manifest.sha256
    ):
        raise AgentError(
            f"the coordinator's public-set manifest is inconsistent ({len(shards)} shards for "
            f"{manifest.size} items, sha256 {manifest.sha256[:12]}…): ask its operator"
        )
    paths = files.shards(shards)
    images = ShardFiles(paths, [shard.items for shard in shards], manifest.image_size)
    log.info("public set ready items=%d shards=%d sha256=%s", manifest.size, len(shards), manifest.sha256[:12])
    return PublicSet(
        images=images,
        token_ids=FirstCaptionTokens(images, tokenizer),
        sha256=manifest.sha256,
        image_size=manifest.image_size,
    )


def _builtin(manifest: PublicSetManifest, cache_dir: Path, tokenizer: Tokenizer) -> PublicSet:
    try:
        spec = PublicSetSpec.model_validate(manifest.spec)
    except ValidationError as exc:
        why = exc.errors()[0]["msg"]
        raise AgentError(f"the coordinator's built-in public-set spec is malformed ({why}); upgrade the agent") from exc
    expected, size = manifest.sha256, manifest.size
    path = cache_dir / _builtin_name(expected)
    scenes = _load_cached(path, expected)
    if scenes is None:
        scenes = builtin_split(BuiltinSpec(seed=spec.seed, public_size=spec.size, image_size=spec.image_size), "public")
        actual = scenes_manifest(scenes)["sha256"]
        if actual != expected or len(scenes) != size:
            raise ConfigError(
                f"the public set generated here (sha256 {actual[:12]}…, {len(scenes)} items) differs from the "
                f"coordinator's ({expected[:12]}…, {size} items): install the creamfl version the coordinator runs"
            )
        _save(path, scenes)
        log.info("public set generated and cached items=%d sha256=%s", len(scenes), expected[:12])
    token_ids = tokenizer.encode([captions[0] for captions in scenes.captions])
    return PublicSet(images=scenes.images, token_ids=token_ids, sha256=expected, image_size=spec.image_size)


def _builtin_name(sha256: str) -> str:
    return f"public-{sha256}.safetensors"


def _save(path: Path, scenes: Scenes) -> None:
    tensors = {"images": scenes.images.contiguous(), "labels": scenes.labels.contiguous()}
    write_atomic(path, st_save(tensors, metadata={"captions": json.dumps(scenes.captions)}))


def _load_cached(path: Path, expected: str) -> Scenes | None:
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
        tensors = st_load(data)
        header_length = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_length]).get("__metadata__", {})
        captions = tuple(tuple(c) for c in json.loads(metadata["captions"]))
        scenes = Scenes(images=tensors["images"], captions=captions, labels=tensors["labels"].to(torch.long))
        if scenes_manifest(scenes)["sha256"] == expected:
            return scenes
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        log.warning("public set cache unreadable, regenerating path=%s error=%r", path, str(exc))
        return None
    log.warning("public set cache does not match its hash, regenerating path=%s", path)
    return None
