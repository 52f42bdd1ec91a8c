"""A model and its optimizer as safetensors bytes (never pickle), so training resumes exactly.

Tensors: ``model.<name>`` for the state dict, ``optim.<param index>.<key>`` for per-parameter
optimizer state; the optimizer's hyper-parameters (param groups) and any non-tensor state go to the
safetensors metadata as JSON.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

_MODEL, _OPTIM = "model.", "optim."


def save_training_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> bytes:
    tensors = {_MODEL + name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    state = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{_OPTIM}{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    metadata = {"param_groups": json.dumps(state["param_groups"]), "scalars": json.dumps(scalars)}
    return _canonical(st_save(tensors, metadata=metadata))


def load_training_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, data: bytes) -> None:
    """Restore into freshly built objects of the same architecture (strict: every key must match)."""
    tensors = st_load(data)
    model.load_state_dict({k[len(_MODEL) :]: v for k, v in tensors.items() if k.startswith(_MODEL)}, strict=True)
    if optimizer is None:
        return
    metadata = _metadata(data)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(_OPTIM):
            index, name = key[len(_OPTIM) :].split(".", 1)
            state.setdefault(int(index), {})[name] = value
    for key, value in json.loads(metadata["scalars"]).items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(metadata["param_groups"])})


def _canonical(data: bytes) -> bytes:
    """The same bytes for the same state in every process, so a re-run job writes the same artifact.

    safetensors writes the metadata map in a per-process random order (a Rust ``HashMap``); sort it.
    Tensor offsets are relative to the data section, so only the header is rewritten (padded to 8).
    """
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + length :]


def _metadata(data: bytes) -> dict[str, str]:
    # safetensors layout: an 8-byte little-endian header length, then the JSON header.
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    return dict(header.get("__metadata__", {}))
