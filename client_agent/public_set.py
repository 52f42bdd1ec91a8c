"""The public set: generated locally from the coordinator's manifest, hash-checked, cached once.

For the built-in dataset the manifest carries the generator's spec; every party regenerates the
same bytes (:func:`creamfl.data.builtin.builtin_split`) and compares the manifest's sha256
(:func:`creamfl.data.manifest.scenes_manifest`). The cache is a safetensors file (images and
labels, captions in its metadata) named by that hash, re-checked against it on every load.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from client_agent.errors import AgentError, ConfigError
from client_agent.state import write_atomic
from creamfl.data.builtin import BuiltinSpec, builtin_split
from creamfl.data.manifest import scenes_manifest
from creamfl.data.scenes import Scenes
from creamfl.text import Tokenizer
from shared_schemas.federation import PublicSetSpec

log = logging.getLogger("client_agent.public_set")


@dataclass(frozen=True)
class PublicSet:
    images: Tensor  # [N, 3, H, W] uint8
    token_ids: Tensor  # [N, L]: each item's first caption, with the client tokenizer
    sha256: str
    image_size: int

    def __len__(self) -> int:
        return int(self.images.shape[0])


def obtain_public_set(manifest: dict[str, Any], cache_dir: Path, tokenizer: Tokenizer) -> PublicSet:
    """The public set the manifest describes, from the cache or generated (and then cached)."""
    if manifest.get("kind") != "builtin":
        raise AgentError(
            f"the federation's public set is of kind {manifest.get('kind')!r}; this agent can only "
            "generate the built-in one: upgrade the agent"
        )
    try:
        spec = PublicSetSpec.model_validate(manifest["spec"])
        expected, size = str(manifest["sha256"]), int(manifest["size"])
    except (KeyError, TypeError, ValueError, ValidationError) as exc:
        raise AgentError(f"the coordinator's public-set manifest is malformed ({exc}); upgrade the agent") from exc
    path = cache_dir / f"public-{expected}.safetensors"
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


def _save(path: Path, scenes: Scenes) -> None:
    tensors = {"images": scenes.images.contiguous(), "labels": scenes.labels.contiguous()}
    write_atomic(path, st_save(tensors, metadata={"captions": json.dumps(scenes.captions)}))
    for stale in path.parent.glob("public-*.safetensors"):
        if stale != path:
            stale.unlink(missing_ok=True)


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
