"""The built-in federation data: public, test and private splits of the scenes dataset.

Shaped like the paper's setting: a small public set, clients' private data several times larger
and non-IID, and a test split no one trains on. Each split has its own seed stream, so resizing
one split leaves the others' bytes unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from creamfl.data.scenes import Scenes, generate_scenes

_SPLIT_STREAMS = {"public": 1, "test": 2, "private": 3}


@dataclass(frozen=True)
class BuiltinSpec:
    seed: int = 0
    public_size: int = 500
    test_size: int = 500
    private_size: int = 15_000
    image_size: int = 32


def builtin_split(spec: BuiltinSpec, split: str) -> Scenes:
    """One split, regenerated from the spec alone: same spec, same bytes, on any machine."""
    sizes = {"public": spec.public_size, "test": spec.test_size, "private": spec.private_size}
    if split not in sizes:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(sizes)}")
    seed = spec.seed * 1000 + _SPLIT_STREAMS[split]
    return generate_scenes(sizes[split], seed=seed, image_size=spec.image_size)
