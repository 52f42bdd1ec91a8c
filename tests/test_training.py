"""Client and server training steps: eval-mode extraction, the regularisers, distillation counted once."""

import pytest
import torch
import torch.nn.functional as F

from creamfl.models import BertTextConfig, ResNetConfig, ServerConfig, ServerModel, build_client_model
from creamfl.text import WordTokenizer
from creamfl.training import (
    ClientTrainingConfig,
    Distillation,
    PublicInputs,
    TaskData,
    encode_all,
    encode_public,
    server_pass,
    train_client_round,
)

CPU = torch.device("cpu")
VOCAB = ("a", "red", "circle", "blue", "square", "above", "below")
CAPTIONS = ["a red circle", "a blue square", "a red square above a blue circle", "a blue circle below a red square"]


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _server(embed_dim: int = 8) -> ServerModel:
    # No dropout: train-mode outputs must be reproducible for the hand-computed expectations.
    torch.manual_seed(0)
    text = BertTextConfig(vocab_size=11, dropout=0.0)
    return ServerModel(ServerConfig(embed_dim=embed_dim, image=ResNetConfig(widths=(8, 16)), text=text))


def test_encoding_is_deterministic_in_eval_mode_and_restores_train_mode() -> None:
    # Prepare: a model with BatchNorm, in train mode, as it is mid-round.
    model = build_client_model("image-cnn-s", embed_dim=8, vocab_size=5, num_classes=3).train()
    running_mean = model.backbone.stem[1].running_mean.clone()
    images = _images(10)

    # Execute
    first = encode_all(model, lambda x: model.encode("image", x), images, batch_size=3, device=CPU)
    second = encode_all(model, lambda x: model.encode("image", x), images, batch_size=10, device=CPU)

    # Assert: same output whatever the batching (no batch statistics), BN state untouched, mode restored.
    torch.testing.assert_close(first, second)
    torch.testing.assert_close(model.backbone.stem[1].running_mean, running_mean)
    assert model.training


def test_epoch_targets_draw_one_caption_per_item_and_batches_cover_every_item_once() -> None:
    # Prepare: 3 items, 7 captions (item 1 has three).
    data = TaskData(_images(3), torch.arange(7), caption_image=torch.tensor([0, 1, 1, 2, 1, 0, 2]))
    generator = torch.Generator().manual_seed(1)

    # Execute
    seen = [data.epoch_targets(generator) for _ in range(50)]
    batches = list(data.batches(2, generator))

    # Assert
    for pick in seen:
        assert data.caption_image[pick].tolist() == [0, 1, 2]
    assert {int(p[1]) for p in seen} == {1, 2, 4}  # every caption of item 1 gets drawn
    assert sorted(torch.cat([index for index, _, _ in batches]).tolist()) == [0, 1, 2]


def test_subset_keeps_the_chosen_items_with_their_captions() -> None:
    data = TaskData(_images(3), torch.arange(5), caption_image=torch.tensor([0, 1, 2, 2, 0]))
    part = data.subset(torch.tensor([2, 0]))
    assert len(part) == 2
    assert part.targets.tolist() == [0, 2, 3, 4]
    assert part.caption_image.tolist() == [1, 0, 0, 1]
    torch.testing.assert_close(part.inputs[torch.tensor([0])], data.inputs[torch.tensor([2])])


def _client_round(inter: bool, intra: bool, epochs: int = 1) -> tuple[dict[str, float], torch.Tensor]:
    torch.manual_seed(0)
    tokenizer = WordTokenizer(VOCAB)
    model = build_client_model("dual-s", embed_dim=8, vocab_size=tokenizer.vocab_size, num_classes=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    private = TaskData(_images(8, seed=1), tokenizer.encode(CAPTIONS * 2), torch.arange(8))
    public = PublicInputs(_images(6, seed=2), tokenizer.encode(CAPTIONS[:3] * 2))
    global_reps = {"image": F.normalize(torch.randn(6, 8), dim=1), "text": F.normalize(torch.randn(6, 8), dim=1)}
    stats = train_client_round(
        model,
        optimizer,
        private,
        public,
        global_reps,
        ClientTrainingConfig(local_epochs=epochs, batch_size=4, inter=inter, intra=intra),
        generator=torch.Generator().manual_seed(0),
        device=CPU,
    )
    return vars(stats), encode_public(model, public, device=CPU)["image"]


def test_regularisers_switch_on_and_off_and_change_the_model() -> None:
    # Execute
    plain_stats, plain = _client_round(inter=False, intra=False)
    inter_stats, with_inter = _client_round(inter=True, intra=False)
    both_stats, with_both = _client_round(inter=True, intra=True)

    # Assert
    assert plain_stats["inter_loss"] == 0.0 and plain_stats["intra_loss"] == 0.0
    assert inter_stats["inter_loss"] > 0.0 and inter_stats["intra_loss"] == 0.0
    assert both_stats["intra_loss"] > 0.0
    assert plain_stats["task_loss"] == pytest.approx(inter_stats["task_loss"])  # the task pass runs first
    assert not torch.allclose(plain, with_inter)
    assert not torch.allclose(with_inter, with_both)


def test_inter_modal_term_pulls_the_client_towards_the_global_representations() -> None:
    first, _ = _client_round(inter=True, intra=False, epochs=1)
    later, _ = _client_round(inter=True, intra=False, epochs=8)
    assert later["inter_loss"] < first["inter_loss"]


def test_distillation_alone_is_kd_weight_times_one_mse_per_modality() -> None:
    # Prepare: one batch holds the whole subset, so the reported loss is the pre-step value.
    server = _server()
    tokenizer = WordTokenizer(VOCAB)
    pairs = TaskData(_images(4), tokenizer.encode(CAPTIONS), torch.arange(4))
    subset = torch.tensor([1, 3])
    targets = {"image": F.normalize(torch.randn(2, 8), dim=1), "text": F.normalize(torch.randn(2, 8), dim=1)}
    public = PublicInputs(pairs.inputs[subset], pairs.targets[subset])
    expected_reps = encode_public(server, public, device=CPU)
    server.train()
    with torch.no_grad():
        train_image = server.encode_image(public.images)
        train_text = server.encode_text(public.token_ids)
    expected = 0.3 * (F.mse_loss(train_image, targets["image"]) + F.mse_loss(train_text, targets["text"]))

    # Execute
    stats = server_pass(
        server,
        torch.optim.SGD(server.parameters(), lr=0.0),
        pairs,
        retrieval=False,
        distillation=Distillation(subset_rows=subset, targets=targets, kd_weight=0.3),
        batch_size=16,
        generator=torch.Generator().manual_seed(0),
        device=CPU,
    )

    # Assert
    assert stats.steps == 1
    assert stats.retrieval_loss == 0.0
    assert stats.distillation_loss == pytest.approx(expected.item(), rel=1e-5)
    assert expected_reps["image"].shape == (2, 8)


def test_joint_pass_distils_only_the_modalities_that_were_uploaded() -> None:
    # Prepare
    server = _server()
    tokenizer = WordTokenizer(VOCAB)
    pairs = TaskData(_images(4), tokenizer.encode(CAPTIONS), torch.arange(4))
    only_text = Distillation(subset_rows=torch.tensor([0]), targets={"text": torch.zeros(1, 8)}, kd_weight=1.0)

    # Execute
    stats = server_pass(
        server,
        torch.optim.AdamW(server.parameters(), lr=1e-3),
        pairs,
        retrieval=True,
        distillation=only_text,
        batch_size=4,
        generator=torch.Generator().manual_seed(0),
        device=CPU,
    )

    # Assert: MSE of a unit vector to the zero vector, averaged over d = 8 dims, is 1/8.
    assert stats.distillation_loss == pytest.approx(1 / 8, rel=1e-4)
    assert stats.retrieval_loss > 0.0


def test_server_pass_needs_something_to_optimise() -> None:
    server = _server()
    pairs = TaskData(_images(2), torch.zeros(2, 4, dtype=torch.long), torch.arange(2))
    with pytest.raises(ValueError, match="needs the retrieval term"):
        server_pass(
            server,
            torch.optim.SGD(server.parameters(), lr=0.1),
            pairs,
            retrieval=False,
            distillation=None,
            batch_size=2,
            generator=torch.Generator(),
            device=CPU,
        )
