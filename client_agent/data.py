"""Data specs (``--data``) and model specs (``--model``): :mod:`creamfl.data.specs` and
:mod:`creamfl.models.specs`, which describe them, with every problem raised as a
:class:`~client_agent.errors.ConfigError` in the agent's words.
"""

from __future__ import annotations

from client_agent.errors import ConfigError
from creamfl.data import specs
from creamfl.data.specs import KIND_MODALITIES, DataModalityError, PrivateData, resize_images
from creamfl.models import specs as model_specs
from creamfl.models.specs import DEFAULT_MODELS, ClientModality, ModelModalityError, ModelSpec
from creamfl.text import Tokenizer

__all__ = [
    "DEFAULT_MODELS",
    "KIND_MODALITIES",
    "DataSpec",
    "ModelSpec",
    "PrivateData",
    "parse_data_spec",
    "parse_model_spec",
    "resize_images",
]


class DataSpec(specs.DataSpec):
    """:class:`creamfl.data.specs.DataSpec`, its problems raised as ConfigErrors."""

    def load(self, modality: ClientModality, tokenizer: Tokenizer, *, image_size: int, seed: int = 0) -> PrivateData:
        """Read the data (images lazily where the format allows); a ConfigError says what is wrong."""
        try:
            return super().load(modality, tokenizer, image_size=image_size, seed=seed)
        except ValueError as exc:
            raise _data_error(exc) from exc


def parse_data_spec(text: str) -> DataSpec:
    try:
        spec = specs.parse_data_spec(text)
    except ValueError as exc:
        raise _data_error(exc) from exc
    return DataSpec(kind=spec.kind, where=spec.where, options=spec.options, text=spec.text)


def parse_model_spec(text: str | None, modality: ClientModality) -> ModelSpec:
    """``NAME[:DIM]``, checked against the modality; the modality's default model when None."""
    try:
        return model_specs.parse_model_spec(text, modality)
    except ModelModalityError as exc:
        raise ConfigError(
            f"--model {exc.name} represents {' and '.join(exc.represents)}, but --modality is {exc.modality}; "
            f"use one of {', '.join(exc.fitting)} (or change --modality)"
        ) from exc
    except ValueError as exc:
        raise ConfigError(f"--model {exc}") from exc


def _data_error(exc: ValueError) -> ConfigError:
    if isinstance(exc, DataModalityError):
        return ConfigError(f"--data {exc}; pass --modality {exc.fits[0]} or other data")
    return ConfigError(f"--data {exc}")
