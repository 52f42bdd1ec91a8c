"""The federation's client tokenizer (DESIGN.md section 3), chosen once and shipped to every client.

- ``builtin-words``: the built-in scenes' word vocabulary (built-in data only: real text would be
  mostly ``[UNK]``);
- ``wordpiece-minilm``: all-MiniLM-L6-v2's WordPiece vocabulary (BERT's uncased one, Apache-2.0),
  bundled in ``creamfl/assets``: offline, and without the model package;
- ``trained:V``: a WordPiece vocabulary of ``V`` tokens trained on the public captions.

The last two are Hugging Face ``tokenizers`` objects whose JSON travels in the artifact store and
to the agents, so an agent needs neither transformers nor the MiniLM package.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers
from torch import Tensor

from creamfl.data.scenes import vocabulary
from creamfl.text import Tokenizer, WordTokenizer
from shared_schemas.vocabulary import check_tokenizer_choice

BUILTIN_WORDS = "builtin-words"
WORDPIECE_MINILM = "wordpiece-minilm"
MINILM_VOCAB = Path(__file__).parent / "assets" / "minilm-vocab.txt"
DEFAULT_MAX_LENGTH = 32
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
UNK_WARN_SHARE = 0.05
ASCII_ALPHABET = (
    string.ascii_lowercase + string.digits + string.punctuation
)  # after lower-casing  # agents warn above this share of unknown tokens in their private text


def check_choice(choice: str) -> str:
    """``choice`` if it names a tokenizer; else a ValueError saying what is allowed."""
    return check_tokenizer_choice(choice)


def trained_size(choice: str) -> int:
    return int(choice.removeprefix("trained:"))


class WordPieceTokenizer:
    """A ``tokenizers`` tokenizer behind the library's :class:`~creamfl.text.Tokenizer` protocol:
    ``[CLS] pieces [SEP]``, truncated and padded to ``max_length``."""

    def __init__(self, tokenizer: HFTokenizer, *, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        if max_length < 3:
            raise ValueError(f"max_length must be at least 3, got {max_length}")
        self._tokenizer = tokenizer
        self.max_length = max_length
        self.pad_id = _special_id(tokenizer, "[PAD]")
        self.unk_id = _special_id(tokenizer, "[UNK]")
        self.boundary_ids = (_special_id(tokenizer, "[CLS]"), _special_id(tokenizer, "[SEP]"))
        self.vocab_size = tokenizer.get_vocab_size()
        tokenizer.enable_truncation(max_length)
        tokenizer.enable_padding(pad_id=self.pad_id, pad_token="[PAD]", length=max_length)

    @classmethod
    def from_json(cls, text: str, *, max_length: int = DEFAULT_MAX_LENGTH) -> WordPieceTokenizer:
        try:
            tokenizer = HFTokenizer.from_str(text)
        except Exception as exc:  # tokenizers raises a bare Exception for malformed JSON
            raise ValueError(f"not a tokenizer: {exc}") from exc
        return cls(tokenizer, max_length=max_length)

    def to_json(self) -> str:
        return self._tokenizer.to_str()

    def encode(self, texts: Sequence[str]) -> Tensor:
        encodings = self._tokenizer.encode_batch(list(texts))
        return torch.tensor([e.ids for e in encodings], dtype=torch.long).reshape(len(texts), self.max_length)


def _special_id(tokenizer: HFTokenizer, token: str) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise ValueError(f"the tokenizer has no {token} token")
    return int(token_id)


def minilm_wordpiece(*, max_length: int = DEFAULT_MAX_LENGTH) -> WordPieceTokenizer:
    """all-MiniLM-L6-v2's WordPiece tokenizer (the same ids as its ``tokenizer.json``), from the bundled vocabulary."""
    return _bert_style(models.WordPiece.from_file(str(MINILM_VOCAB), unk_token="[UNK]"), max_length)


def train_wordpiece(
    captions: Iterable[str], vocab_size: int, *, max_length: int = DEFAULT_MAX_LENGTH
) -> WordPieceTokenizer:
    """A lower-cased BERT-style WordPiece vocabulary of about ``vocab_size`` tokens (never fewer than
    the 141 that spell any ASCII text), learnt from ``captions``; deterministic: the same captions
    give the same ids, in any process."""
    return _bert_style(models.WordPiece(vocab=_learn_vocabulary(captions, vocab_size), unk_token="[UNK]"), max_length)


def _learn_vocabulary(captions: Iterable[str], vocab_size: int) -> dict[str, int]:
    """At most ``vocab_size`` word pieces learnt by BPE merges over the normalised, pre-tokenised
    captions: each learnt piece both at a word's start and inside it (``##``).

    Deterministic, unlike the ``tokenizers`` library's WordPiece trainer, which numbers (and, on
    ties, picks) its pieces in hash order, so two trainings on the same text differ
    (huggingface/tokenizers#1794); its plain BPE trainer gives the same pieces every time. Every
    printable ASCII character is a piece, seen in the captions or not, so a word they never used
    still splits into pieces rather than becoming [UNK].
    """
    learner = HFTokenizer(models.BPE(unk_token="[UNK]"))
    learner.normalizer = _normalizer()
    learner.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=(vocab_size - len(SPECIALS)) // 2 + len(SPECIALS),
        special_tokens=list(SPECIALS),
        initial_alphabet=list(ASCII_ALPHABET),
        show_progress=False,
    )
    learner.train_from_iterator(captions, trainer=trainer)
    learnt = sorted(learner.get_vocab().items(), key=lambda item: item[1])  # specials first, by id
    pieces = [piece for piece, _ in learnt if piece not in SPECIALS]
    ordered = [*SPECIALS, *pieces, *(f"##{piece}" for piece in pieces)]
    return {piece: index for index, piece in enumerate(ordered)}


def _normalizer() -> normalizers.Normalizer:
    return normalizers.BertNormalizer(lowercase=True)


def _bert_style(model: models.Model, max_length: int) -> WordPieceTokenizer:
    """BERT uncased's pipeline around a WordPiece model: normalise (lower-case), split on whitespace
    and punctuation, pieces, then ``[CLS] .. [SEP]``."""
    tokenizer = HFTokenizer(model)
    tokenizer.normalizer = _normalizer()
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    cls_id, sep_id = _special_id(tokenizer, "[CLS]"), _special_id(tokenizer, "[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return WordPieceTokenizer(tokenizer, max_length=max_length)


def build_tokenizer(choice: str, captions: Iterable[str] | None = None) -> Tokenizer:
    """The tokenizer ``choice`` names; ``trained:V`` learns its vocabulary from ``captions``."""
    check_choice(choice)
    if choice == BUILTIN_WORDS:
        return WordTokenizer(vocabulary())
    if choice == WORDPIECE_MINILM:
        return minilm_wordpiece()
    if captions is None:
        raise ValueError(f"tokenizer {choice}: trained on the public captions, which were not given")
    return train_wordpiece(captions, trained_size(choice))


def tokenizer_json(tokenizer: Tokenizer) -> str | None:
    """What travels to the agents: the JSON of a WordPiece tokenizer, None for the built-in words."""
    return tokenizer.to_json() if isinstance(tokenizer, WordPieceTokenizer) else None


def load_tokenizer(choice: str, json_text: str | None) -> Tokenizer:
    """The tokenizer a manifest or a checkpoint describes: the built-in words, or its JSON."""
    check_choice(choice)
    if choice == BUILTIN_WORDS:
        return WordTokenizer(vocabulary())
    if json_text is None:
        raise ValueError(f"tokenizer {choice}: its JSON is missing")
    return WordPieceTokenizer.from_json(json_text)


@dataclass(frozen=True)
class UnknownShare:
    """How much of a text collection a tokenizer could not represent."""

    unknown: int
    tokens: int

    @property
    def share(self) -> float:
        return self.unknown / self.tokens if self.tokens else 0.0


def unknown_share(tokenizer: Tokenizer, texts: Sequence[str], *, batch: int = 1024) -> UnknownShare:
    """The share of ``[UNK]`` among the (non-special) tokens of ``texts``, as the model sees them."""
    if not isinstance(tokenizer, WordTokenizer | WordPieceTokenizer):
        raise TypeError(f"{type(tokenizer).__name__} does not say which of its ids is [UNK]")
    not_content = torch.tensor([tokenizer.pad_id, *tokenizer.boundary_ids])
    unknown = tokens = 0
    for start in range(0, len(texts), batch):
        ids = tokenizer.encode(texts[start : start + batch])  # [B, L]
        unknown += int((ids == tokenizer.unk_id).sum())
        tokens += int((~torch.isin(ids, not_content)).sum())
    return UnknownShare(unknown, tokens)
