"""Representation payloads as safetensors bytes (never pickle): what crosses the network each round.

float16 by default; float32; or int8 with one float32 scale per row (symmetric, max-abs). An
optional int64 ``indices`` tensor names the public-set row of each payload row.

What may be aggregated (:func:`representation_problem`): the coordinator refuses any other upload
before storing it, and the round engine leaves out any other representations it is handed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from shared_schemas.vocabulary import PayloadDtype

PAYLOAD_DTYPES: tuple[PayloadDtype, ...] = ("float16", "float32", "int8")
_SCALE_SUFFIX = ".scale"
INDICES = "indices"
Name = TypeVar("Name", bound=str)
# Largest L2 norm of a representation row. Representations are L2-normalised (DESIGN.md section 2),
# so an honest row has norm 1 within its wire dtype's rounding; rows clipped to C and noised for
# differential privacy reach C + sigma * C * sqrt(d): a few hundred at sigma = 10, d = 1024. 1e4
# leaves that ample room, while a row far beyond it is a fault or an attack, never a representation.
# It is not what keeps a norm from buying ensemble weight (the ensemble normalises every row before
# scoring it, overflow-safely); it refuses nonsense early, with a message that says why.
MAX_ROW_NORM = 1e4
# Rows per block when computing row norms in float64: bounds the temporary at 32 MB for d = 1024.
_NORM_BLOCK_ROWS = 4096


def encode_payload(
    reps: Mapping[Name, Tensor], *, dtype: PayloadDtype = "float16", indices: Tensor | None = None
) -> bytes:
    """One ``[n, d]`` tensor per modality name, in the wire dtype; ``indices`` ``[n]`` alongside if given."""
    tensors: dict[str, Tensor] = {}
    if indices is not None:
        tensors[INDICES] = indices.detach().cpu().to(torch.int64).contiguous()
    for name, rep in reps.items():
        if name.endswith(_SCALE_SUFFIX) or name == INDICES:
            raise ValueError(f"tensor name {name!r} is reserved for int8 scales or the row indices")
        rep = rep.detach().float().cpu()
        if dtype == "int8":
            scale = rep.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0  # [n, 1]
            tensors[name] = torch.round(rep / scale).clamp(-127, 127).to(torch.int8).contiguous()
            tensors[name + _SCALE_SUFFIX] = scale.squeeze(1)
        elif dtype in ("float16", "float32"):
            tensors[name] = rep.to(getattr(torch, dtype)).contiguous()
        else:
            raise ValueError(f"unknown payload dtype {dtype!r}; choose one of {PAYLOAD_DTYPES}")
    return st_save(tensors)


def decode_payload(data: bytes) -> dict[str, Tensor]:
    """float32 ``[n, d]`` per modality name; int8 payloads are rescaled by their row scales.

    The ``indices`` tensor, if any, is not a modality: read it with :func:`payload_indices`."""
    try:
        tensors = st_load(data)
    except Exception as exc:  # safetensors raises its own error types for malformed input
        raise ValueError(f"not a valid safetensors payload: {exc}") from exc
    out: dict[str, Tensor] = {}
    for name, tensor in tensors.items():
        if name.endswith(_SCALE_SUFFIX) or name == INDICES:
            continue
        if tensor.dtype == torch.int8:
            scale = tensors.get(name + _SCALE_SUFFIX)
            if scale is None or scale.shape != (tensor.shape[0],):
                raise ValueError(f"int8 tensor {name!r} has no matching per-row scale")
            out[name] = dequantize(tensor, scale)
        else:
            out[name] = tensor.float()
    return out


def payload_indices(data: bytes) -> Tensor | None:
    """The ``[n]`` public-set rows a payload carries, or None."""
    return st_load(data).get(INDICES)


def dequantize(values: Tensor, scale: Tensor) -> Tensor:
    """int8 ``values`` ``[n, d]`` times their per-row ``scale`` ``[n]``, in float32 (huge scales: Inf). ``[n, d]``."""
    return values.float() * scale.float().unsqueeze(1)


def representation_problem(reps: Tensor, *, shape: tuple[int, int]) -> str | None:
    """Why decoded representations ``reps`` cannot be aggregated, or None when they can: they must be
    floating point of ``shape`` ``[n, d]``, every value finite and every row's L2 norm at most
    :data:`MAX_ROW_NORM`."""
    if tuple(reps.shape) != shape:
        return f"expected shape {list(shape)}, got {list(reps.shape)}"
    if not reps.is_floating_point():
        return f"representations must be floating point, got {reps.dtype}"
    # float64: the square of any float32 value is finite there, so a norm is Inf or NaN only when a value is.
    norms = torch.cat(
        [torch.linalg.vector_norm(rows, dim=1, dtype=torch.float64) for rows in reps.split(_NORM_BLOCK_ROWS)]
    )  # [n]
    if not bool(torch.isfinite(norms).all()):
        return "the representations contain NaN or Inf"
    largest = float(norms.max()) if norms.numel() else 0.0
    if largest > MAX_ROW_NORM:
        return (
            f"row {int(norms.argmax())} has L2 norm {largest:.3g}, above {MAX_ROW_NORM:g}: "
            "representations are L2-normalised"
        )
    return None
