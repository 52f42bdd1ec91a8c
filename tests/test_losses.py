"""The CreamFL losses against hand computations on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.functional import normalize

from creamfl.losses import inter_modal_contrast, intra_modal_contrast, representation_distillation, retrieval_loss


def neg_log_softmax(logits: list[float], target: int) -> float:
    """-log(e^{z_t} / sum_j e^{z_j}), written out with math.exp."""
    return -math.log(math.exp(logits[target]) / sum(math.exp(z) for z in logits))


# --- inter-modal contrast ---------------------------------------------------------------------


def test_inter_modal_contrast_hand_case() -> None:
    # Prepare: B = 2 local reps, n = 3 global reps, d = 2, all unit vectors; tau = 0.5.
    local = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    global_other = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    targets = torch.tensor([0, 2])
    # Row 0: dots (1, 0, 0.6) / 0.5 = (2, 0, 1.2), target 0 -> -log(e^2 / (e^2 + e^0 + e^1.2))
    # Row 1: dots (0, 1, 0.8) / 0.5 = (0, 2, 1.6), target 2 -> -log(e^1.6 / (e^0 + e^2 + e^1.6))
    row0 = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.0) + math.exp(1.2)))
    row1 = -math.log(math.exp(1.6) / (math.exp(0.0) + math.exp(2.0) + math.exp(1.6)))
    expected = (row0 + row1) / 2  # ~ (0.4604 + 0.9909) / 2

    # Execute
    loss = inter_modal_contrast(local, global_other, targets, tau=0.5)

    # Assert
    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert loss.item() == pytest.approx(0.72565, abs=1e-4)


def test_inter_modal_contrast_temperature_and_targets_matter() -> None:
    # Prepare
    local = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    global_other = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])

    # Execute
    sharp = inter_modal_contrast(local, global_other, torch.tensor([0, 1]), tau=0.1)
    soft = inter_modal_contrast(local, global_other, torch.tensor([0, 1]), tau=1.0)
    wrong = inter_modal_contrast(local, global_other, torch.tensor([1, 0]), tau=0.1)

    # Assert: tau = 1 row 0 is (1, 0, 0.6); row 1 is (0, 1, 0.8).
    expected_soft = (neg_log_softmax([1.0, 0.0, 0.6], 0) + neg_log_softmax([0.0, 1.0, 0.8], 1)) / 2
    expected_sharp = (neg_log_softmax([10.0, 0.0, 6.0], 0) + neg_log_softmax([0.0, 10.0, 8.0], 1)) / 2
    assert soft.item() == pytest.approx(expected_soft, abs=1e-6)
    assert sharp.item() == pytest.approx(expected_sharp, abs=1e-6)
    assert wrong.item() > 9.0


def test_inter_modal_contrast_gradient_reaches_local_only_through_local() -> None:
    # Prepare
    local = normalize(torch.randn(4, 3, generator=torch.Generator().manual_seed(0))).requires_grad_()
    global_other = normalize(torch.randn(6, 3, generator=torch.Generator().manual_seed(1)))

    # Execute
    inter_modal_contrast(local, global_other, torch.tensor([0, 1, 2, 3]), tau=0.5).backward()

    # Assert
    assert local.grad is not None
    assert local.grad.abs().sum().item() > 0


# --- intra-modal contrast ---------------------------------------------------------------------


def test_intra_modal_contrast_hand_case() -> None:
    # Prepare: B = 2, d = 2, tau = 0.5.
    local = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    global_same = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    previous = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    # Row 0: p = 0.8, n = 0.0; row 1: p = 0.8, n = 0.6.
    # loss_i = -log(e^{p/tau} / (e^{p/tau} + e^{n/tau}))
    tau = 0.5
    row0 = -math.log(math.exp(0.8 / tau) / (math.exp(0.8 / tau) + math.exp(0.0 / tau)))
    row1 = -math.log(math.exp(0.8 / tau) / (math.exp(0.8 / tau) + math.exp(0.6 / tau)))
    expected = (row0 + row1) / 2  # ~ (0.1839 + 0.5130) / 2

    # Execute
    loss = intra_modal_contrast(local, global_same, previous, tau=tau)

    # Assert
    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert loss.item() == pytest.approx(0.34846, abs=1e-4)


def test_intra_modal_contrast_is_log_two_when_positive_equals_negative() -> None:
    # Prepare: global and previous identical, so both logits are equal.
    local = normalize(torch.randn(5, 4, generator=torch.Generator().manual_seed(2)))
    same = normalize(torch.randn(5, 4, generator=torch.Generator().manual_seed(3)))

    # Execute
    loss = intra_modal_contrast(local, same, same.clone(), tau=0.5)

    # Assert
    assert loss.item() == pytest.approx(math.log(2.0), abs=1e-6)


def test_intra_modal_contrast_prefers_global_over_previous() -> None:
    # Prepare: local equals the global rep (low loss) or equals the previous rep (high loss).
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0]])

    # Execute
    good = intra_modal_contrast(a, a, b, tau=0.5)
    bad = intra_modal_contrast(a, b, a, tau=0.5)

    # Assert: logits (2, 0) vs (0, 2).
    assert good.item() == pytest.approx(math.log(1 + math.exp(-2.0)), abs=1e-6)
    assert bad.item() == pytest.approx(math.log(1 + math.exp(2.0)), abs=1e-6)


# --- representation distillation ---------------------------------------------------------------


def test_representation_distillation_is_mean_over_all_elements() -> None:
    # Prepare: squared errors 1, 4, 9, 9 -> mean 23 / 4 (a per-row sum would give 11.5).
    server = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[0.0, 0.0], [0.0, 1.0]])

    # Execute
    loss = representation_distillation(server, target)

    # Assert
    assert loss.item() == pytest.approx(5.75, abs=1e-6)


def test_representation_distillation_random_and_zero() -> None:
    # Prepare
    generator = torch.Generator().manual_seed(4)
    server = torch.randn(7, 5, generator=generator)
    target = torch.randn(7, 5, generator=generator)

    # Execute
    loss = representation_distillation(server, target)
    zero = representation_distillation(target, target.clone())

    # Assert
    assert loss.item() == pytest.approx(((server - target) ** 2).sum().item() / 35, rel=1e-6)
    assert zero.item() == 0.0


# --- retrieval loss ------------------------------------------------------------------------------

HAND_IMAGE = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
HAND_TEXT = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
# logits = image @ text.T = [[0.6, 0.0], [0.8, 1.0]]


def hand_retrieval(scale: float) -> float:
    # image -> text rows: (0.6, 0.0) target 0; (0.8, 1.0) target 1
    i2t = (neg_log_softmax([0.6 * scale, 0.0], 0) + neg_log_softmax([0.8 * scale, 1.0 * scale], 1)) / 2
    # text -> image rows (the transpose): (0.6, 0.8) target 0; (0.0, 1.0) target 1
    t2i = (neg_log_softmax([0.6 * scale, 0.8 * scale], 0) + neg_log_softmax([0.0, 1.0 * scale], 1)) / 2
    return 0.5 * (i2t + t2i)


@pytest.mark.parametrize("log_scale", [0.0, math.log(2.0), math.log(20.0)])
def test_retrieval_loss_hand_case(log_scale: float) -> None:
    # Prepare
    logit_scale = torch.tensor(log_scale)

    # Execute
    loss = retrieval_loss(HAND_IMAGE, HAND_TEXT, logit_scale)

    # Assert
    assert loss.shape == ()
    assert loss.item() == pytest.approx(hand_retrieval(math.exp(log_scale)), abs=1e-5)


def test_retrieval_loss_hand_value_at_scale_one() -> None:
    # Prepare: scale 1; i2t = (0.4375 + 0.5981) / 2, t2i = (0.7981 + 0.3133) / 2.
    i2t = -math.log(math.exp(0.6) / (math.exp(0.6) + 1.0)) - math.log(math.exp(1.0) / (math.exp(0.8) + math.exp(1.0)))
    t2i = -math.log(math.exp(0.6) / (math.exp(0.6) + math.exp(0.8))) - math.log(math.exp(1.0) / (1.0 + math.exp(1.0)))
    expected = 0.5 * (i2t / 2 + t2i / 2)

    # Execute
    loss = retrieval_loss(HAND_IMAGE, HAND_TEXT, torch.tensor(0.0))

    # Assert
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert loss.item() == pytest.approx(0.53676, abs=1e-4)


def test_retrieval_loss_is_symmetric() -> None:
    # Prepare
    generator = torch.Generator().manual_seed(5)
    image = normalize(torch.randn(6, 4, generator=generator))
    text = normalize(torch.randn(6, 4, generator=generator))
    logit_scale = torch.tensor(math.log(1 / 0.07))

    # Execute
    forward = retrieval_loss(image, text, logit_scale)
    swapped = retrieval_loss(text, image, logit_scale)

    # Assert
    assert swapped.item() == pytest.approx(forward.item(), abs=1e-6)


def test_retrieval_loss_clamps_logit_scale() -> None:
    # Prepare
    at_cap = retrieval_loss(HAND_IMAGE, HAND_TEXT, torch.tensor(math.log(100.0)))
    at_zero = retrieval_loss(HAND_IMAGE, HAND_TEXT, torch.tensor(0.0))

    # Execute
    huge = retrieval_loss(HAND_IMAGE, HAND_TEXT, torch.tensor(50.0))
    negative = retrieval_loss(HAND_IMAGE, HAND_TEXT, torch.tensor(-5.0))

    # Assert: the temperature stays in [1/100, 1].
    assert math.isfinite(huge.item())
    assert huge.item() == pytest.approx(at_cap.item(), rel=1e-3)
    assert huge.item() == pytest.approx(hand_retrieval(100.0), rel=1e-3)
    assert negative.item() == pytest.approx(at_zero.item(), abs=1e-7)


def test_retrieval_loss_gradient_reaches_logit_scale() -> None:
    # Prepare
    logit_scale = torch.tensor(1.0, requires_grad=True)
    image = HAND_IMAGE.clone().requires_grad_()
    eps = 1e-3

    # Execute
    loss = retrieval_loss(image, HAND_TEXT, logit_scale)
    loss.backward()

    # Assert: the gradient matches a central difference of the hand formula in log-scale.
    assert logit_scale.grad is not None
    numeric = (hand_retrieval(math.exp(1.0 + eps)) - hand_retrieval(math.exp(1.0 - eps))) / (2 * eps)
    assert logit_scale.grad.item() == pytest.approx(numeric, abs=1e-4)
    assert logit_scale.grad.item() != 0.0
    assert image.grad is not None and image.grad.abs().sum().item() > 0


def test_retrieval_loss_perfect_alignment_is_lower_than_shuffled() -> None:
    # Prepare
    generator = torch.Generator().manual_seed(6)
    image = normalize(torch.randn(8, 16, generator=generator))
    logit_scale = torch.tensor(math.log(100.0))

    # Execute
    aligned = retrieval_loss(image, image.clone(), logit_scale)
    shuffled = retrieval_loss(image, image.roll(1, dims=0), logit_scale)

    # Assert
    assert aligned.item() < 0.1
    assert shuffled.item() > 5.0
