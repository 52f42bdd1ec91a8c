"""Representation payloads as safetensors bytes (never pickle): what crosses the network each round.

float16 by default; float32; or int8 with one float32 scale per row (symmetric, max-abs). An
optional int64 ``indices`` tensor names the public-set row of each payload row.
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
            out[name] = tensor.float() * scale.float().unsqueeze(1)
        else:
            out[name] = tensor.float()
    return out


def payload_indices(data: bytes) -> Tensor | None:
    """The ``[n]`` public-set rows a payload carries, or None."""
    return st_load(data).get(INDICES)
