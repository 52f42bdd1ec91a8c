"""Checks of the agent's settings against its machine, its state dir and its federation; each failure
is a ConfigError saying which flag to change."""

from __future__ import annotations

import logging

import torch

from client_agent.data import ModelSpec
from client_agent.errors import ConfigError
from client_agent.settings import AgentSettings
from client_agent.state import IDENTITY, Identity


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but no CUDA device is visible to torch: use --device cpu (or auto)")
    return torch.device(setting)


def check_identity(identity: Identity, settings: AgentSettings, model_spec: ModelSpec, log: logging.Logger) -> None:
    """The client in the state dir can only resume in its own federation, with its own modalities and model."""
    s = settings
    where = s.state_dir / IDENTITY
    if identity.federation_id != s.federation:
        raise ConfigError(
            f"the state dir {s.state_dir} belongs to client {identity.client_id} of federation "
            f"{identity.federation_id}, not {s.federation}: use another --state-dir for this federation"
        )
    if sorted(identity.modalities) != sorted(s.modalities) or identity.model != model_spec.name:
        raise ConfigError(
            f"client {identity.client_id} ({where}) enrolled with modalities {identity.modalities} and model "
            f"{identity.model}; it cannot change to {s.modalities} with {model_spec.name}: keep the "
            "original --modality/--model, or use another --state-dir to enroll a new client"
        )
    if identity.coordinator != s.coordinator:
        log.warning(
            "the coordinator URL changed from %s to %s; resuming client=%s",
            identity.coordinator,
            s.coordinator,
            identity.client_id,
        )


def check_dim(model_spec: ModelSpec, embed_dim: int, federation: str) -> None:
    """A model given with an explicit dimension must have the federation's."""
    if model_spec.dim is not None and model_spec.dim != embed_dim:
        raise ConfigError(
            f"--model {model_spec.name}:{model_spec.dim} has dimension {model_spec.dim}, but "
            f"federation {federation} uses {embed_dim}: use --model "
            f"{model_spec.name}:{embed_dim} (or leave the dimension out)"
        )
