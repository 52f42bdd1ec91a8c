"""The federation's client tokenizers: choices, the bundled MiniLM vocabulary, trained vocabularies,
their JSON round trip and the [UNK] share on English news text."""

from __future__ import annotations

import pytest
import torch

from creamfl.data.builtin import BuiltinSpec, builtin_split
from creamfl.data.samples import news_rows
from creamfl.text import WordTokenizer
from creamfl.tokenizers import (
    UNK_WARN_SHARE,
    WordPieceTokenizer,
    build_tokenizer,
    check_choice,
    load_tokenizer,
    tokenizer_json,
    unknown_share,
)

NEWS = [f"{title} {description}" for _, title, description in news_rows(200, seed=1)]


def public_captions() -> list[str]:
    scenes = builtin_split(BuiltinSpec(seed=0, public_size=200), "public")
    return [caption for captions in scenes.captions for caption in captions]


@pytest.mark.parametrize("choice", ["builtin-words", "wordpiece-minilm", "trained:8000", "trained:100"])
def test_valid_choices_pass(choice: str) -> None:
    assert check_choice(choice) == choice


@pytest.mark.parametrize("choice", ["words", "trained:", "trained:0", "trained:99", "trained:100001", "trained:-5"])
def test_invalid_choices_name_what_is_allowed(choice: str) -> None:
    with pytest.raises(ValueError, match="tokenizer"):
        check_choice(choice)


def test_the_built_in_words_cannot_read_news_but_wordpiece_can() -> None:
    # Prepare
    words = build_tokenizer("builtin-words")
    minilm = build_tokenizer("wordpiece-minilm")
    trained = build_tokenizer("trained:8000", public_captions())

    # Execute
    shares = {name: unknown_share(t, NEWS).share for name, t in (("w", words), ("m", minilm), ("t", trained))}

    # Assert: the built-in 28 words miss most of real text; both WordPiece vocabularies stay far under 5%
    assert shares["w"] > 0.5
    assert shares["m"] < UNK_WARN_SHARE and shares["t"] < UNK_WARN_SHARE


def test_minilm_wordpiece_gives_the_ids_of_minilms_own_tokenizer() -> None:
    pytest.importorskip("transformers")
    from creamfl.text import PretrainedTokenizer, minilm_path

    texts = ["Wall St. Bears Claw Back Into the Black (Reuters)", "a café in Zürich", "東京 2-1 don't"]
    assert torch.equal(
        build_tokenizer("wordpiece-minilm").encode(texts), PretrainedTokenizer(minilm_path()).encode(texts)
    )


def test_a_trained_tokenizer_travels_as_json_and_encodes_alike() -> None:
    # Prepare
    trained = build_tokenizer("trained:300", public_captions())
    text = tokenizer_json(trained)
    assert text is not None

    # Execute
    loaded = load_tokenizer("trained:300", text)

    # Assert
    assert isinstance(loaded, WordPieceTokenizer) and loaded.vocab_size == trained.vocab_size <= 300
    assert tokenizer_json(build_tokenizer("trained:300", public_captions())) == text  # deterministic
    assert torch.equal(loaded.encode(NEWS[:5]), trained.encode(NEWS[:5]))
    assert trained.encode(["a dog"]).shape == (1, trained.max_length)


def test_the_built_in_words_travel_as_nothing() -> None:
    assert tokenizer_json(build_tokenizer("builtin-words")) is None
    assert isinstance(load_tokenizer("builtin-words", None), WordTokenizer)


def test_a_wordpiece_choice_without_its_json_or_with_bad_json_is_refused() -> None:
    with pytest.raises(ValueError, match="missing"):
        load_tokenizer("wordpiece-minilm", None)
    with pytest.raises(ValueError, match="not a tokenizer"):
        load_tokenizer("trained:300", '{"not": "a tokenizer"}')


def test_trained_needs_the_captions() -> None:
    with pytest.raises(ValueError, match="captions"):
        build_tokenizer("trained:300")


def test_unknown_share_counts_content_tokens_only() -> None:
    # Prepare: two known words and two unknown ones, padded to 24 with [CLS] and [SEP] around
    words = WordTokenizer(["red", "circle"])

    # Execute
    share = unknown_share(words, ["red zebra circle xylophone"])

    # Assert
    assert (share.unknown, share.tokens) == (2, 4) and share.share == 0.5
    assert unknown_share(words, []).share == 0.0
