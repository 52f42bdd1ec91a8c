"""Validation of an uploaded safetensors payload before anything is stored (DESIGN.md section 5)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from coordinator_service.errors import Invalid
from creamfl.payload import INDICES

_ALLOWED = {"F16": "float16", "F32": "float32", "I8": "int8"}


@dataclass(frozen=True)
class PayloadInfo:
    dtype: str
    rows: int
    dim: int


def validate_payload(path: Path, *, modality: str, subset: list[int], dim: int) -> PayloadInfo:
    """One tensor named ``modality`` of shape ``[len(subset), dim]``, float16/float32/int8 (with its
    ``.scale`` rows), finite; an optional ``indices`` tensor must equal the round's subset."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            names = set(handle.keys())
            expected = {modality}
            if modality not in names:
                raise Invalid(f"the payload has no tensor named {modality!r}", tensors=sorted(names))
            dtype = _dtype(handle.get_slice(modality).get_dtype())
            if dtype == "int8":
                expected.add(modality + ".scale")
            if INDICES in names:
                expected.add(INDICES)
            if names != expected:
                raise Invalid("unexpected tensors in the payload", tensors=sorted(names), expected=sorted(expected))
            tensor = handle.get_tensor(modality)
            scale = handle.get_tensor(modality + ".scale") if dtype == "int8" else None
            indices = handle.get_tensor(INDICES) if INDICES in names else None
    except SafetensorError as exc:
        raise Invalid(f"not a valid safetensors payload: {exc}") from exc
    rows = len(subset)
    if tuple(tensor.shape) != (rows, dim):
        raise Invalid(f"expected shape [{rows}, {dim}], got {list(tensor.shape)}", shape=list(tensor.shape))
    if dtype != "int8" and not bool(torch.isfinite(tensor).all()):
        raise Invalid("the representations contain NaN or Inf")
    if scale is not None and (
        tuple(scale.shape) != (rows,) or not bool(torch.isfinite(scale).all()) or bool((scale <= 0).any())
    ):
        raise Invalid(f"int8 payloads need {modality}.scale: [{rows}] finite positive row scales")
    if indices is not None and indices.tolist() != subset:
        raise Invalid("the payload's indices are not this round's public subset")
    return PayloadInfo(dtype=dtype, rows=rows, dim=dim)


def _dtype(code: str) -> str:
    if code not in _ALLOWED:
        raise Invalid(f"dtype {code} is not allowed; use one of {sorted(_ALLOWED.values())}", dtype=code)
    return _ALLOWED[code]
