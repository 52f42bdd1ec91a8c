"""The words every part of the platform shares, defined once (typing only: no pydantic, no torch).

The library (``creamfl``), the wire schemas and both services import these, so a new payload
dtype or server schedule is added in one place.
"""

from __future__ import annotations

import re
from typing import Literal

Modality = Literal["image", "text"]
AggregationStrategy = Literal["creamfl", "mean"]
PayloadDtype = Literal["float16", "float32", "int8"]
ServerSchedule = Literal["joint", "separate"]
TextEncoder = Literal["scratch", "minilm"]
DatasetState = Literal["registering", "ready", "failed"]

# The federation's client tokenizer (creamfl.tokenizers): the built-in words, the bundled MiniLM
# WordPiece vocabulary, or a WordPiece vocabulary of V tokens trained on the public captions.
TOKENIZER_PATTERN = r"^(builtin-words|wordpiece-minilm|trained:[1-9][0-9]*)$"
TRAINED_VOCAB_RANGE = (100, 100_000)


def check_tokenizer_choice(choice: str) -> str:
    """``choice`` if it names a tokenizer; else a ValueError saying what is allowed."""
    if not re.match(TOKENIZER_PATTERN, choice):
        raise ValueError(f"tokenizer {choice!r}: expected builtin-words, wordpiece-minilm or trained:V (V tokens)")
    low, high = TRAINED_VOCAB_RANGE
    if choice.startswith("trained:") and not low <= int(choice.removeprefix("trained:")) <= high:
        raise ValueError(f"tokenizer {choice!r}: V must lie in [{low}, {high}]")
    return choice
