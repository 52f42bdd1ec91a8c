"""Validation of an uploaded safetensors payload before anything is stored (DESIGN.md section 5)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

import torch

from coordinator_service.errors import Invalid
from coordinator_service.safetensors_reader import MalformedSafetensors, SafetensorsReader
from creamfl.payload import INDICES, dequantize, representation_problem

_ALLOWED = {"F16": "float16", "F32": "float32", "I8": "int8"}


@dataclass(frozen=True)
class PayloadInfo:
    dtype: str
    rows: int
    dim: int


def validate_payload(handle: BinaryIO, *, modality: str, subset: list[int], dim: int) -> PayloadInfo:
    """One tensor named ``modality`` of shape ``[len(subset), dim]``, float16/float32/int8 (with its
    ``.scale`` rows) whose decoded values are finite with bounded row norms
    (:func:`creamfl.payload.representation_problem`); an optional ``indices`` tensor must equal the
    round's subset.

    ``handle`` is read tensor by tensor (seekable), never whole."""
    try:
        return _validate(SafetensorsReader(handle), modality=modality, subset=subset, dim=dim)
    except MalformedSafetensors as exc:
        raise Invalid(f"not a valid safetensors payload: {exc}") from exc


def _validate(payload: SafetensorsReader, *, modality: str, subset: list[int], dim: int) -> PayloadInfo:
    names = set(payload.entries)
    expected = {modality}
    if modality not in names:
        raise Invalid(f"the payload has no tensor named {modality!r}", tensors=sorted(names))
    dtype = _dtype(payload.entries[modality].dtype)
    if dtype == "int8":
        expected.add(modality + ".scale")
    if INDICES in names:
        expected.add(INDICES)
    if names != expected:
        raise Invalid("unexpected tensors in the payload", tensors=sorted(names), expected=sorted(expected))
    rows = len(subset)
    shape = payload.entries[modality].shape
    if shape != (rows, dim):  # from the header: a wrong-sized tensor is never read
        raise Invalid(f"expected shape [{rows}, {dim}], got {list(shape)}", shape=list(shape))
    values = payload.load(modality)  # [n, d]
    if dtype == "int8":
        # As float: comparisons are not implemented for every dtype a scale could arrive in.
        scale = payload.load(modality + ".scale").float()
        if tuple(scale.shape) != (rows,) or not bool(torch.isfinite(scale).all()) or bool((scale <= 0).any()):
            raise Invalid(f"int8 payloads need {modality}.scale: [{rows}] finite positive row scales")
        values = dequantize(values, scale)  # finite scales can still decode to Inf: checked below
    problem = representation_problem(values, shape=(rows, dim))
    if problem is not None:
        raise Invalid(problem)
    if INDICES in names and payload.load(INDICES).tolist() != subset:
        raise Invalid("the payload's indices are not this round's public subset")
    return PayloadInfo(dtype=dtype, rows=rows, dim=dim)


def _dtype(code: str) -> str:
    if code not in _ALLOWED:
        raise Invalid(f"dtype {code} is not allowed; use one of {sorted(_ALLOWED.values())}", dtype=code)
    return _ALLOWED[code]
