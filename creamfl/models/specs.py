"""Model specs (an agent's ``--model``, a scenario's client ``model``): a client model of
:mod:`creamfl.models.registry` (``image-cnn-s|m``, ``text-gru-s|m``, ``dual-s|m``), optionally with
the representation dimension it must have (``dual-s:256``); without one, the model takes the
federation's dimension. A model that does not fit the client's modality raises
:class:`ModelModalityError`, which carries what would fit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from creamfl.models.registry import CLIENT_MODELS, client_model_modalities

ClientModality = Literal["image", "text", "multimodal"]
CLIENT_MODALITIES: tuple[ClientModality, ...] = ("image", "text", "multimodal")
DEFAULT_MODELS: dict[ClientModality, str] = {"image": "image-cnn-s", "text": "text-gru-s", "multimodal": "dual-s"}


class ModelModalityError(ValueError):
    """A model spec whose model represents other modalities than the client's."""

    def __init__(self, name: str, modality: ClientModality) -> None:
        self.name, self.modality = name, modality
        self.represents = client_model_modalities(name)
        self.fitting = models_for(modality)  # the models that would fit the modality
        super().__init__(
            f"{name} represents {' and '.join(self.represents)}, not {modality} data; "
            f"use one of {', '.join(self.fitting)}"
        )


@dataclass(frozen=True)
class ModelSpec:
    name: str
    dim: int | None  # the representation dimension the operator insists on, if any


def models_for(modality: ClientModality) -> tuple[str, ...]:
    """The registry's client models that represent exactly what a ``modality`` client holds."""
    wanted = {"image", "text"} if modality == "multimodal" else {modality}
    return tuple(name for name in CLIENT_MODELS if set(client_model_modalities(name)) == wanted)


def parse_model_spec(text: str | None, modality: ClientModality) -> ModelSpec:
    """``NAME[:DIM]``, checked against the modality; the modality's default model when None."""
    if text is None:
        return ModelSpec(DEFAULT_MODELS[modality], None)
    name, _, dim_text = text.strip().partition(":")
    if name not in CLIENT_MODELS:
        raise ValueError(f"{text!r}: unknown client model; choose one of {', '.join(CLIENT_MODELS)}")
    dim = None
    if dim_text:
        if not dim_text.isdigit() or int(dim_text) < 1:
            raise ValueError(f"{text!r}: the dimension after ':' must be a positive integer")
        dim = int(dim_text)
    if name not in models_for(modality):
        raise ModelModalityError(name, modality)
    return ModelSpec(name, dim)
