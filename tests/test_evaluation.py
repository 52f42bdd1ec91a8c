"""Retrieval metrics: hand-computed cases, a per-query loop reference, blocking, dtypes, folds, errors."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.nn.functional import normalize

from creamfl.evaluation import RetrievalMetrics, evaluate_folds, heldout_metrics, retrieval_metrics, retrieval_ranks

# Three images, two captions each, small integer 2-D vectors so every dot product is checkable by hand
# (the metrics take dot products as given, so these need not be unit vectors).
HAND_IMAGES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
HAND_TEXTS = torch.tensor([[2.0, 1.0], [-2.0, 1.0], [1.0, 3.0], [3.0, 0.0], [0.0, -2.0], [-1.0, 2.0]])
HAND_OWNERS = torch.tensor([0, 0, 1, 1, 2, 2])
# Scores [image, caption]:
#   image 0:  2 -2  1  3  0 -1   best positive 2 (c0), beaten by c3 (3)          -> rank 1
#   image 1:  1  1  3  0 -2  2   best positive 3 (c2), nothing higher            -> rank 0
#   image 2: -2  2 -1 -3  0  1   best positive 1 (c5), beaten by c1 (2)          -> rank 1
# Captions vs images: c0 (2 1 -2) -> 0, c1 (-2 1 2) -> 2, c2 (1 3 -1) -> 0, c3 (3 0 -3) -> 1,
#   c4 (0 -2 0) -> 1 (its own image 2 ties image 0, and a tie counts against the query), c5 (-1 2 1) -> 1
HAND_I2T_RANKS = [1, 0, 1]
HAND_T2I_RANKS = [0, 2, 0, 1, 1, 1]


def random_case(n_images: int, dim: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Unit embeddings, 1-4 captions per image, captions in random order; float64 to rule out near-ties."""
    generator = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, 5, (n_images,), generator=generator)
    owners = torch.repeat_interleave(torch.arange(n_images), counts)
    owners = owners[torch.randperm(len(owners), generator=generator)]
    images = normalize(torch.randn(n_images, dim, generator=generator, dtype=torch.float64))
    # Captions near their image so that ranks spread over 0..many rather than being uniform noise.
    texts = images[owners] + 0.9 * torch.randn(len(owners), dim, generator=generator, dtype=torch.float64)
    return images, normalize(texts), owners


def loop_reference_ranks(images: Tensor, texts: Tensor, owners: Tensor) -> tuple[list[int], list[int]]:
    """One query at a time, by sorting: the position of the first positive in the descending order."""
    scores = images @ texts.T
    i2t = []
    for image in range(len(images)):
        order = torch.argsort(scores[image], descending=True).tolist()
        i2t.append(min(order.index(caption) for caption in range(len(texts)) if owners[caption] == image))
    t2i = []
    for caption in range(len(texts)):
        order = torch.argsort(scores[:, caption], descending=True).tolist()
        t2i.append(order.index(int(owners[caption])))
    return i2t, t2i


def recall(ranks: list[int], k: int) -> float:
    return 100.0 * sum(rank < k for rank in ranks) / len(ranks)


# --- hand-built cases -------------------------------------------------------------------------


def test_hand_case_ranks() -> None:
    # Execute
    i2t, t2i = retrieval_ranks(HAND_IMAGES, HAND_TEXTS, HAND_OWNERS)

    # Assert
    assert i2t.tolist() == HAND_I2T_RANKS
    assert t2i.tolist() == HAND_T2I_RANKS
    assert i2t.dtype == t2i.dtype == torch.int64


def test_hand_case_metrics_default_ks() -> None:
    # Execute
    metrics = retrieval_metrics(HAND_IMAGES, HAND_TEXTS, HAND_OWNERS)

    # Assert: i2t R@1 is exactly one image in three; t2i R@1 two captions in six.
    assert metrics.i2t_r1 == pytest.approx(100 / 3)
    assert round(metrics.i2t_r1, 2) == 33.33
    assert (metrics.i2t_r5, metrics.i2t_r10) == (100.0, 100.0)
    assert metrics.t2i_r1 == pytest.approx(100 / 3)
    assert (metrics.t2i_r5, metrics.t2i_r10) == (100.0, 100.0)
    assert metrics.rsum == pytest.approx(200 / 3)


def test_hand_case_metrics_custom_ks_fill_the_three_fields_in_order() -> None:
    # Execute
    metrics = retrieval_metrics(HAND_IMAGES, HAND_TEXTS, HAND_OWNERS, ks=(1, 2, 3))

    # Assert: t2i ranks [0, 2, 0, 1, 1, 1] -> 2/6, 5/6, 6/6
    assert metrics.i2t_r1 == pytest.approx(100 / 3)
    assert (metrics.i2t_r5, metrics.i2t_r10) == (100.0, 100.0)
    assert metrics.t2i_r1 == pytest.approx(100 / 3)
    assert metrics.t2i_r5 == pytest.approx(500 / 6)
    assert metrics.t2i_r10 == 100.0


def test_perfect_retrieval_gives_100_everywhere() -> None:
    # Prepare: orthogonal images, each caption an exact copy of its image, captions interleaved.
    images = torch.eye(3)
    owners = torch.tensor([2, 0, 1, 0, 2, 1])
    texts = images[owners]

    # Execute
    metrics = retrieval_metrics(images, texts, owners)

    # Assert
    assert metrics.as_dict() == {
        "i2t_r1": 100.0,
        "i2t_r5": 100.0,
        "i2t_r10": 100.0,
        "t2i_r1": 100.0,
        "t2i_r5": 100.0,
        "t2i_r10": 100.0,
        "rsum": 200.0,
    }


def test_i2t_uses_the_best_ranked_of_several_captions() -> None:
    # Prepare: image 0's first caption is bad (scores 0), its second perfect (scores 1); image 1 is
    # (0, 1) with one caption that scores 0.5 with image 0.
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[0.0, -1.0], [0.5, 1.0], [1.0, 0.0]])
    owners = torch.tensor([0, 1, 0])

    # Execute
    i2t, t2i = retrieval_ranks(images, texts, owners)

    # Assert: image 0 counts its best caption (1.0, top), not its first (0.0, which two captions beat).
    assert i2t.tolist() == [0, 0]
    assert t2i.tolist() == [0, 0, 0]


def test_ties_count_against_the_query_so_a_collapsed_model_scores_zero() -> None:
    # Prepare: two identical images, each with one identical caption: every score is the same.
    images = torch.tensor([[0.6, 0.8], [0.6, 0.8]])
    texts = torch.tensor([[0.6, 0.8], [0.6, 0.8]])
    owners = torch.tensor([1, 0])

    # Execute
    i2t, t2i = retrieval_ranks(images, texts, owners)
    metrics = retrieval_metrics(images, texts, owners)

    # Assert: one negative ties every positive, so every positive ranks second.
    assert i2t.tolist() == [1, 1]
    assert t2i.tolist() == [1, 1]
    assert metrics.rsum == 0.0


def test_a_tie_above_a_lower_positive_still_counts_against_it() -> None:
    # Prepare: caption 0 (image 0) scores 1 with image 0 and 2 with both images 1 and 2.
    images = torch.tensor([[1.0], [2.0], [2.0]])
    texts = torch.tensor([[1.0], [1.0], [1.0]])
    owners = torch.tensor([0, 1, 2])

    # Execute
    _, t2i = retrieval_ranks(images, texts, owners)

    # Assert: two images are strictly better for caption 0; captions 1 and 2 tie with a negative.
    assert t2i.tolist() == [2, 1, 1]


# --- against a per-query loop reference on random data --------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranks_match_a_per_query_loop_reference(seed: int) -> None:
    # Prepare
    images, texts, owners = random_case(n_images=30, dim=8, seed=seed)
    expected_i2t, expected_t2i = loop_reference_ranks(images, texts, owners)

    # Execute
    i2t, t2i = retrieval_ranks(images, texts, owners, block_size=7)

    # Assert: the reference really spreads ranks, or the comparison would prove little.
    assert max(expected_i2t) > 10
    assert max(expected_t2i) > 10
    assert i2t.tolist() == expected_i2t
    assert t2i.tolist() == expected_t2i


@pytest.mark.parametrize("ks", [(1, 5, 10), (2, 3, 4), (1, 20, 50)])
def test_metrics_match_a_per_query_loop_reference(ks: tuple[int, int, int]) -> None:
    # Prepare
    images, texts, owners = random_case(n_images=40, dim=8, seed=3)
    i2t, t2i = loop_reference_ranks(images, texts, owners)
    expected = RetrievalMetrics(*(recall(i2t, k) for k in ks), *(recall(t2i, k) for k in ks))

    # Execute
    metrics = retrieval_metrics(images, texts, owners, ks=ks)

    # Assert
    assert metrics.as_dict() == pytest.approx(expected.as_dict())
    assert 0.0 < metrics.i2t_r1 < 100.0
    assert 0.0 < metrics.t2i_r1 < 100.0


@pytest.mark.parametrize("block_size", [1, 2, 5, 1000])
def test_block_size_does_not_change_the_result(block_size: int) -> None:
    # Prepare
    images, texts, owners = random_case(n_images=25, dim=6, seed=4)
    unblocked_i2t, unblocked_t2i = retrieval_ranks(images, texts, owners, block_size=None)

    # Execute
    i2t, t2i = retrieval_ranks(images, texts, owners, block_size=block_size)

    # Assert
    assert torch.equal(i2t, unblocked_i2t)
    assert torch.equal(t2i, unblocked_t2i)
    assert retrieval_metrics(images, texts, owners, block_size=block_size) == retrieval_metrics(images, texts, owners)


# --- dtypes --------------------------------------------------------------------------------------


def test_float16_inputs_give_the_float32_result() -> None:
    # Prepare: values that are exact in float16, so only the arithmetic could differ.
    images, texts, owners = random_case(n_images=30, dim=8, seed=5)
    images16, texts16 = images.half(), texts.half()

    # Execute
    half = retrieval_ranks(images16, texts16, owners)
    single = retrieval_ranks(images16.float(), texts16.float(), owners)

    # Assert
    assert torch.equal(half[0], single[0])
    assert torch.equal(half[1], single[1])
    assert retrieval_metrics(HAND_IMAGES.half(), HAND_TEXTS.half(), HAND_OWNERS) == retrieval_metrics(
        HAND_IMAGES, HAND_TEXTS, HAND_OWNERS
    )


def test_float16_scores_beyond_the_float16_range_are_still_ordered() -> None:
    # Prepare: caption 0 (image 0) scores 102400 with image 0 and 163840 with image 1; both exceed the
    # float16 maximum (65504), so float16 arithmetic would make them a tie (inf) and a false hit.
    images = torch.tensor([[100.0] * 4, [160.0] * 4], dtype=torch.float16)
    texts = torch.tensor([[256.0] * 4, [256.0] * 4], dtype=torch.float16)
    owners = torch.tensor([0, 1])

    # Execute
    metrics = retrieval_metrics(images, texts, owners)

    # Assert: t2i keeps 102400 < 163840 apart; i2t sees two captions that truly tie (identical texts).
    assert metrics.t2i_r1 == 50.0
    assert metrics.i2t_r1 == 0.0


# --- folds ---------------------------------------------------------------------------------------


def test_folds_average_the_per_fold_metrics() -> None:
    # Prepare: fold 0 = images 0-1 (perfect); fold 1 = images 2-3, where image 3 scores image 2's caption
    # above its own (2 > 1) and image 2's caption scores image 3 above image 2 (2 > 1). Captions shuffled.
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 2.0], [0.0, 1.0]])
    owners = torch.tensor([3, 0, 2, 1])

    # Execute
    folded = evaluate_folds(images, texts, owners, folds=2)
    fold1 = retrieval_metrics(images[2:], texts[[0, 2]], torch.tensor([1, 0]))

    # Assert: fold 1 has R@1 50 both ways, fold 0 100, so the average is 75.
    assert (fold1.i2t_r1, fold1.t2i_r1) == (50.0, 50.0)
    assert folded.as_dict() == {
        "i2t_r1": 75.0,
        "i2t_r5": 100.0,
        "i2t_r10": 100.0,
        "t2i_r1": 75.0,
        "t2i_r5": 100.0,
        "t2i_r10": 100.0,
        "rsum": 150.0,
    }


def test_one_fold_is_the_plain_evaluation() -> None:
    # Prepare
    images, texts, owners = random_case(n_images=20, dim=6, seed=6)

    # Execute
    folded = evaluate_folds(images, texts, owners, folds=1)

    # Assert
    assert folded == retrieval_metrics(images, texts, owners)


@pytest.mark.parametrize("folds", [0, 3, 5])
def test_folds_must_divide_the_image_count(folds: int) -> None:
    with pytest.raises(ValueError, match="folds must be a positive divisor"):
        evaluate_folds(torch.eye(4), torch.eye(4), torch.arange(4), folds=folds)


# --- input validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "texts", "owners", "message"),
    [
        (HAND_IMAGES, torch.ones(6, 3), HAND_OWNERS, "embedding dims differ"),
        (HAND_IMAGES[0], HAND_TEXTS, HAND_OWNERS, "must be 2-D"),
        (HAND_IMAGES, HAND_TEXTS, HAND_OWNERS[:5], r"caption_image must have shape \(6,\)"),
        (HAND_IMAGES, HAND_TEXTS, HAND_OWNERS[:, None], r"caption_image must have shape \(6,\)"),
        (HAND_IMAGES, HAND_TEXTS, HAND_OWNERS.float(), "integer image indices"),
        (HAND_IMAGES, HAND_TEXTS, torch.tensor([0, 0, 1, 1, 2, 3]), r"must lie in \[0, 3\)"),
        (HAND_IMAGES, HAND_TEXTS, torch.tensor([0, -1, 1, 1, 2, 2]), r"must lie in \[0, 3\)"),
        (HAND_IMAGES, HAND_TEXTS, torch.tensor([0, 0, 1, 1, 1, 1]), "no caption, e.g. image 2"),
        (torch.empty(0, 2), torch.empty(0, 2), torch.empty(0, dtype=torch.int64), "empty input"),
        (HAND_IMAGES, torch.empty(0, 2), torch.empty(0, dtype=torch.int64), "empty input"),
        (torch.tensor([[1.0, float("nan")], [0.0, 1.0], [1.0, 1.0]]), HAND_TEXTS, HAND_OWNERS, "NaN or inf"),
        (HAND_IMAGES, HAND_TEXTS * torch.tensor([float("inf"), 1.0]), HAND_OWNERS, "NaN or inf"),
    ],
)
def test_invalid_input_raises(images: Tensor, texts: Tensor, owners: Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(images, texts, owners)
    with pytest.raises(ValueError, match=message):
        evaluate_folds(images, texts, owners, folds=1)


def test_invalid_block_size_raises() -> None:
    with pytest.raises(ValueError, match="block_size must be a positive integer"):
        retrieval_metrics(HAND_IMAGES, HAND_TEXTS, HAND_OWNERS, block_size=0)


@pytest.mark.parametrize("ks", [(0, 5, 10), (1, 5)])
def test_invalid_ks_raises(ks: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="ks must be three positive cutoffs"):
        retrieval_metrics(HAND_IMAGES, HAND_TEXTS, HAND_OWNERS, ks=ks)


def test_a_5000_image_set_adds_the_coco_1k_protocol_and_the_four_term_r1_sum() -> None:
    # Prepare: COCO's 5K test-set shape (5,000 images), and a smaller held-out set
    images, texts, owners = random_case(5000, 16, seed=3)
    small = random_case(999, 16, seed=4)

    # Execute
    coco = heldout_metrics(images, texts, owners)
    plain = heldout_metrics(*small)

    # Assert: the 1K figures are the five folds' mean; the R@1 sum adds 1K and 5K R@1 both ways
    folds = evaluate_folds(images, texts, owners, folds=5)
    assert coco.one_k == folds
    assert coco.r1_sum == pytest.approx(folds.i2t_r1 + folds.t2i_r1 + coco.i2t_r1 + coco.t2i_r1)
    reported = coco.as_dict()
    assert reported["1k_t2i_r5"] == folds.t2i_r5 and reported["r1_sum"] == coco.r1_sum
    assert reported["rsum"] == coco.i2t_r1 + coco.t2i_r1
    assert plain.one_k is None and plain.r1_sum is None and "r1_sum" not in plain.as_dict()
