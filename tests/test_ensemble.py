"""Global-local cross-modal ensemble: a naive float64 reference, blocking, overflow, dtypes, hand case, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.nn.functional import normalize

from creamfl.ensemble import contrastive_ensemble, ensemble_weights, mean_ensemble, unit_rows, weighted_aggregate


def naive_reference_weights(local_reps: list[Tensor], global_other: Tensor, *, exclude_self: bool) -> Tensor:
    """The reference code's way, in float64: the full N x N logits per client, logsumexp, diagonal."""
    glob = global_other.to(torch.float64)
    scores = []
    for reps in local_reps:
        logits = reps.to(torch.float64) @ glob.T  # [N, N]
        positive = logits.diagonal().clone()  # [N]
        if exclude_self:
            logits.fill_diagonal_(float("-inf"))
        scores.append(positive - torch.logsumexp(logits, dim=1))
    return torch.softmax(torch.stack(scores), dim=0)  # [K, N]


def make_case(
    num_clients: int = 3, n: int = 40, dim: int = 8, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[list[Tensor], Tensor]:
    """Unit global reps and clients that are noisy copies of them, each with its own noise level."""
    generator = torch.Generator().manual_seed(seed)
    global_other = normalize(torch.randn(n, dim, generator=generator, dtype=torch.float64))
    local_reps = []
    for client in range(num_clients):
        noise = torch.randn(n, dim, generator=generator, dtype=torch.float64)
        local_reps.append(normalize(global_other + (0.3 + 0.5 * client) * noise).to(dtype))
    return local_reps, global_other.to(dtype)


# --- against the naive reference ----------------------------------------------------------------


@pytest.mark.parametrize("exclude_self", [False, True])
def test_weights_match_naive_float64_reference(exclude_self: bool) -> None:
    # Prepare
    local_reps, global_other = make_case()
    expected = naive_reference_weights(local_reps, global_other, exclude_self=exclude_self)

    # Execute
    weights = ensemble_weights(local_reps, global_other, exclude_self=exclude_self)

    # Assert
    assert weights.shape == (3, 40)
    assert weights.dtype == torch.float32
    assert (weights.to(torch.float64) - expected).abs().max().item() <= 1e-5
    # The case is not degenerate: weights really vary between clients and samples.
    assert expected.max().item() - expected.min().item() > 0.1


@pytest.mark.parametrize("exclude_self", [False, True])
def test_float64_inputs_stay_float64_and_match_reference_tightly(exclude_self: bool) -> None:
    # Prepare
    local_reps, global_other = make_case(dtype=torch.float64)
    expected = naive_reference_weights(local_reps, global_other, exclude_self=exclude_self)

    # Execute
    weights = ensemble_weights(local_reps, global_other, exclude_self=exclude_self, block_size=7)

    # Assert
    assert weights.dtype == torch.float64
    assert (weights - expected).abs().max().item() <= 1e-12


def test_exclude_self_changes_the_weights() -> None:
    # Prepare
    local_reps, global_other = make_case()

    # Execute
    included = ensemble_weights(local_reps, global_other, exclude_self=False)
    excluded = ensemble_weights(local_reps, global_other, exclude_self=True)

    # Assert: the flag is not ignored.
    assert (included - excluded).abs().max().item() > 1e-3


@pytest.mark.parametrize("exclude_self", [False, True])
def test_block_sizes_agree(exclude_self: bool) -> None:
    # Prepare: 16 rows; block size 3 leaves a last block of a single row.
    local_reps, global_other = make_case(n=16)
    n = global_other.shape[0]
    reference = ensemble_weights(local_reps, global_other, exclude_self=exclude_self, block_size=None)

    # Execute
    results = {
        size: ensemble_weights(local_reps, global_other, exclude_self=exclude_self, block_size=size)
        for size in (1, 3, n, n + 5)
    }

    # Assert
    for size, weights in results.items():
        assert weights.shape == reference.shape
        assert (weights - reference).abs().max().item() <= 1e-6, f"block_size={size}"


@pytest.mark.parametrize("exclude_self", [False, True])
def test_large_norm_features_do_not_overflow(exclude_self: bool) -> None:
    # Prepare: unit vectors scaled by 100, so logits reach about 1e4 and exp(logits) overflows float32.
    local_unit, global_unit = make_case(num_clients=2, n=24, dim=8, seed=1)
    local_reps = [100.0 * reps for reps in local_unit]
    global_other = 100.0 * global_unit
    naive_logits = local_reps[0] @ global_other.T  # float32 [N, N]
    naive_lse = torch.exp(naive_logits).sum(dim=1).log()  # the non-max-shifted way, in float32
    expected = naive_reference_weights(local_reps, global_other, exclude_self=exclude_self)

    # Execute
    weights = ensemble_weights(local_reps, global_other, exclude_self=exclude_self, block_size=5)

    # Assert
    assert torch.isinf(naive_lse).any(), "the case must overflow a naive float32 implementation"
    assert torch.isfinite(expected).all()
    assert torch.isfinite(weights).all()
    assert torch.allclose(weights.sum(dim=0), torch.ones(24), atol=1e-6)
    # Scores near 1e4 carry float32 rounding of about 1e-3, which the softmax can pass on.
    assert (weights.to(torch.float64) - expected).abs().max().item() <= 2e-3


@pytest.mark.parametrize("exclude_self", [False, True])
def test_large_norm_block_falls_back_alone(exclude_self: bool) -> None:
    # Prepare: unit vectors except rows 8-11 of every client, scaled by 200 (logits near 200: exp overflows).
    # With block_size 4 exactly one block needs the row-max shift; the unshifted blocks around it must not change.
    local_reps, global_other = make_case(num_clients=3, n=20, seed=9)
    for reps in local_reps:
        reps[8:12] *= 200.0
    naive_lse = torch.exp(local_reps[0][8:12] @ global_other.T).sum(dim=1).log()
    expected = naive_reference_weights(local_reps, global_other, exclude_self=exclude_self)

    # Execute
    weights = ensemble_weights(local_reps, global_other, exclude_self=exclude_self, block_size=4)

    # Assert
    assert torch.isinf(naive_lse).any(), "the scaled block must overflow an unshifted float32 log-sum-exp"
    assert (weights.to(torch.float64) - expected).abs().max().item() <= 1e-5


def test_moderately_large_norm_matches_reference_closely() -> None:
    # Prepare: scaled by 10 (logits up to 100, still beyond float32's exp range of about 88.7).
    local_unit, global_unit = make_case(num_clients=3, n=30, dim=8, seed=2)
    local_reps = [10.0 * reps for reps in local_unit]
    global_other = 10.0 * global_unit
    naive_lse = torch.exp(local_reps[0] @ global_other.T).sum(dim=1).log()
    expected = naive_reference_weights(local_reps, global_other, exclude_self=False)

    # Execute
    weights = ensemble_weights(local_reps, global_other, block_size=4)

    # Assert
    assert torch.isinf(naive_lse).any()
    assert (weights.to(torch.float64) - expected).abs().max().item() <= 1e-4


@pytest.mark.parametrize("exclude_self", [False, True])
def test_float16_inputs_give_float32_close_to_reference_of_the_float16_values(exclude_self: bool) -> None:
    # Prepare
    local_reps, global_other = make_case(dtype=torch.float16)
    expected = naive_reference_weights(local_reps, global_other, exclude_self=exclude_self)

    # Execute
    weights = ensemble_weights(local_reps, global_other, exclude_self=exclude_self, block_size=6)
    aggregate = contrastive_ensemble(local_reps, global_other, exclude_self=exclude_self)

    # Assert
    assert weights.dtype == torch.float32
    assert aggregate.dtype == torch.float32
    assert (weights.to(torch.float64) - expected).abs().max().item() <= 1e-5


def test_weights_sum_to_one_over_clients_and_are_positive() -> None:
    # Prepare
    local_reps, global_other = make_case(num_clients=5, n=33, seed=3)

    # Execute
    weights = ensemble_weights(local_reps, global_other, block_size=8)

    # Assert
    assert weights.shape == (5, 33)
    assert (weights > 0).all()
    assert (weights.sum(dim=0) - 1.0).abs().max().item() <= 1e-6


@pytest.mark.parametrize("exclude_self", [False, True])
def test_single_client_gets_all_the_weight(exclude_self: bool) -> None:
    # Prepare
    local_reps, global_other = make_case(num_clients=1, n=10)

    # Execute
    weights = ensemble_weights(local_reps, global_other, exclude_self=exclude_self)
    aggregate = contrastive_ensemble(local_reps, global_other, exclude_self=exclude_self)

    # Assert
    assert torch.equal(weights, torch.ones(1, 10))
    assert torch.allclose(aggregate, local_reps[0], atol=1e-6)


# --- aggregates ------------------------------------------------------------------------------------


def test_contrastive_ensemble_is_weighted_sum_renormalised() -> None:
    # Prepare
    local_reps, global_other = make_case(num_clients=4, n=20, seed=4)
    weights = naive_reference_weights(local_reps, global_other, exclude_self=True)
    raw = sum(weights[c].unsqueeze(1) * local_reps[c].to(torch.float64) for c in range(4))
    assert isinstance(raw, Tensor)

    # Execute
    unit = contrastive_ensemble(local_reps, global_other, exclude_self=True)
    unnormalised = contrastive_ensemble(local_reps, global_other, exclude_self=True, normalize=False)

    # Assert
    assert unit.shape == (20, 8)
    assert (unit.to(torch.float64) - normalize(raw)).abs().max().item() <= 1e-5
    assert torch.allclose(unit.norm(dim=1), torch.ones(20), atol=1e-5)
    assert (unnormalised.to(torch.float64) - raw).abs().max().item() <= 1e-5
    # A mix of differing unit vectors is shorter than one, so the two modes really differ.
    assert unnormalised.norm(dim=1).max().item() < 0.999


def test_mean_ensemble_is_normalised_mean() -> None:
    # Prepare
    local_reps, _ = make_case(num_clients=3, n=15, seed=5)
    mean = torch.stack(local_reps).mean(dim=0)

    # Execute
    unit = mean_ensemble(local_reps)
    raw = mean_ensemble(local_reps, normalize=False)

    # Assert
    assert torch.allclose(unit, normalize(mean), atol=1e-6)
    assert torch.allclose(raw, mean, atol=1e-6)


def test_weighted_aggregate_hand_case() -> None:
    # Prepare: two clients, two samples, d = 2.
    local_reps = [torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[0.0, 1.0], [4.0, 0.0]])]
    weights = torch.tensor([[0.25, 0.5], [0.75, 0.5]])

    # Execute
    raw = weighted_aggregate(local_reps, weights, normalize=False)
    unit = weighted_aggregate(local_reps, weights, normalize=True)

    # Assert: row 0 = 0.25*(1,0) + 0.75*(0,1); row 1 = 0.5*(0,2) + 0.5*(4,0) = (2,1).
    assert torch.allclose(raw, torch.tensor([[0.25, 0.75], [2.0, 1.0]]))
    norm0, norm1 = math.sqrt(0.25**2 + 0.75**2), math.sqrt(5.0)
    assert torch.allclose(unit, torch.tensor([[0.25 / norm0, 0.75 / norm0], [2.0 / norm1, 1.0 / norm1]]))


def test_hand_example_two_clients() -> None:
    # Prepare: G = identity. Client 0 matches G (L0 = I), client 1 swaps the two rows (L1 = [[0,1],[1,0]]).
    global_other = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    local_reps = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]])]
    # exclude_self = False, sample 0 (sample 1 is symmetric):
    #   client 0 logits L0[0].G = (1, 0): s0 = 1 - log(e^1 + e^0)
    #   client 1 logits L1[0].G = (0, 1): s1 = 0 - log(e^0 + e^1)
    #   alpha0 = e^s0 / (e^s0 + e^s1) = e / (e + 1) = sigmoid(1) ~ 0.7311
    s0 = 1.0 - math.log(math.exp(1.0) + 1.0)
    s1 = 0.0 - math.log(1.0 + math.exp(1.0))
    alpha0 = math.exp(s0) / (math.exp(s0) + math.exp(s1))
    assert alpha0 == pytest.approx(math.e / (math.e + 1.0))
    # exclude_self = True: the denominators keep only j != i:
    #   client 0: s0 = 1 - log(e^0) = 1; client 1: s1 = 0 - log(e^1) = -1
    #   alpha0 = e^1 / (e^1 + e^-1) = e^2 / (e^2 + 1) = sigmoid(2) ~ 0.8808
    alpha0_excl = math.exp(1.0) / (math.exp(1.0) + math.exp(-1.0))
    # The aggregate of sample 0: alpha0*(1,0) + (1-alpha0)*(0,1), then unit length.
    expected_raw0 = torch.tensor([alpha0, 1.0 - alpha0])

    # Execute
    weights = ensemble_weights(local_reps, global_other)
    weights_excl = ensemble_weights(local_reps, global_other, exclude_self=True)
    raw = contrastive_ensemble(local_reps, global_other, normalize=False)
    unit = contrastive_ensemble(local_reps, global_other)

    # Assert
    expected = torch.tensor([[alpha0, alpha0], [1.0 - alpha0, 1.0 - alpha0]])
    expected_excl = torch.tensor([[alpha0_excl, alpha0_excl], [1.0 - alpha0_excl, 1.0 - alpha0_excl]])
    assert torch.allclose(weights, expected, atol=1e-6)
    assert weights[0, 0].item() == pytest.approx(0.7310586, abs=1e-6)
    assert torch.allclose(weights_excl, expected_excl, atol=1e-6)
    assert weights_excl[0, 0].item() == pytest.approx(0.8807971, abs=1e-6)
    assert torch.allclose(raw[0], expected_raw0, atol=1e-6)
    assert torch.allclose(unit[0], expected_raw0 / expected_raw0.norm(), atol=1e-6)


def test_client_matching_global_gets_more_weight_than_random_client() -> None:
    # Prepare: client 0 sends exactly the global other-modality reps; client 1 sends random unit vectors.
    generator = torch.Generator().manual_seed(7)
    global_other = normalize(torch.randn(64, 32, generator=generator))
    random_client = normalize(torch.randn(64, 32, generator=generator))

    # Execute
    weights = ensemble_weights([global_other.clone(), random_client], global_other)
    weights_excl = ensemble_weights([global_other.clone(), random_client], global_other, exclude_self=True)

    # Assert
    assert (weights[0] > weights[1]).all()
    assert (weights_excl[0] > weights_excl[1]).all()
    assert weights[0].mean().item() > 0.6


def test_weights_do_not_depend_on_client_order_beyond_permutation() -> None:
    # Prepare
    local_reps, global_other = make_case(num_clients=3, n=12, seed=8)

    # Execute
    forward = ensemble_weights(local_reps, global_other)
    backward = ensemble_weights(local_reps[::-1], global_other)

    # Assert
    assert torch.allclose(forward, backward.flip(0), atol=1e-7)


# --- errors -------------------------------------------------------------------------------------


def test_empty_client_list_raises() -> None:
    with pytest.raises(ValueError):
        ensemble_weights([], torch.zeros(3, 2))
    with pytest.raises(ValueError):
        mean_ensemble([])


def test_mismatched_client_shapes_raise() -> None:
    # Prepare
    local_reps = [torch.ones(4, 3), torch.ones(5, 3)]

    # Execute / Assert
    with pytest.raises(ValueError):
        ensemble_weights(local_reps, torch.ones(4, 3))
    with pytest.raises(ValueError):
        mean_ensemble([torch.ones(4, 3), torch.ones(4, 2)])


def test_one_dimensional_input_raises() -> None:
    with pytest.raises(ValueError):
        ensemble_weights([torch.ones(4)], torch.ones(4))
    with pytest.raises(ValueError):
        mean_ensemble([torch.ones(4)])


def test_empty_matrices_raise() -> None:
    with pytest.raises(ValueError):
        ensemble_weights([torch.ones(0, 3)], torch.ones(0, 3))
    with pytest.raises(ValueError):
        ensemble_weights([torch.ones(3, 0)], torch.ones(3, 0))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_local_raises(bad: float) -> None:
    # Prepare
    local_reps, global_other = make_case(num_clients=2, n=5)
    local_reps[1][2, 1] = bad

    # Execute / Assert
    with pytest.raises(ValueError):
        ensemble_weights(local_reps, global_other)
    with pytest.raises(ValueError):
        mean_ensemble(local_reps)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_global_raises(bad: float) -> None:
    # Prepare
    local_reps, global_other = make_case(num_clients=2, n=5)
    global_other[4, 0] = bad

    # Execute / Assert
    with pytest.raises(ValueError):
        ensemble_weights(local_reps, global_other)


@pytest.mark.parametrize("shape", [(5, 7), (6, 8), (8, 5), (5,)])
def test_wrong_global_shape_raises(shape: tuple[int, ...]) -> None:
    # Prepare
    local_reps, _ = make_case(num_clients=2, n=5)

    # Execute / Assert
    with pytest.raises(ValueError):
        ensemble_weights(local_reps, torch.ones(shape))


@pytest.mark.parametrize("block_size", [0, -1, -40])
def test_non_positive_block_size_raises(block_size: int) -> None:
    # Prepare
    local_reps, global_other = make_case(num_clients=2, n=5)

    # Execute / Assert
    with pytest.raises(ValueError):
        ensemble_weights(local_reps, global_other, block_size=block_size)
    with pytest.raises(ValueError):
        contrastive_ensemble(local_reps, global_other, block_size=block_size)


def test_exclude_self_with_one_sample_raises() -> None:
    # Prepare
    local_reps = [normalize(torch.ones(1, 3))]
    global_other = normalize(torch.ones(1, 3))

    # Execute
    weights = ensemble_weights(local_reps, global_other, exclude_self=False)

    # Assert: allowed without exclude_self, refused with it (the log-sum-exp would be over nothing).
    assert torch.equal(weights, torch.ones(1, 1))
    with pytest.raises(ValueError):
        ensemble_weights(local_reps, global_other, exclude_self=True)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_integer_dtype_raises(dtype: torch.dtype) -> None:
    # Prepare
    local_reps = [torch.ones(4, 3, dtype=dtype), torch.ones(4, 3, dtype=dtype)]

    # Execute / Assert
    with pytest.raises(ValueError):
        ensemble_weights(local_reps, torch.ones(4, 3))
    with pytest.raises(ValueError):
        mean_ensemble(local_reps)


# --- unit rows ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1e-30, 1e-3, 1.0, 1e3, 1e30, 3e38 / 4])
def test_unit_rows_gives_the_directions_of_any_finite_rows_without_overflow(scale: float) -> None:
    # Prepare: unit directions scaled so far that float32's plain norm overflows (or underflows)
    directions = normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)))

    # Execute
    rows = unit_rows(directions * scale)

    # Assert
    assert rows.dtype == torch.float32
    assert torch.allclose(rows, directions, rtol=0.0, atol=1e-6)


def test_unit_rows_keeps_zero_rows_zero() -> None:
    # Prepare
    reps = torch.tensor([[0.0, 0.0], [3.0, -4.0]])

    # Execute
    rows = unit_rows(reps)

    # Assert
    assert torch.equal(rows, torch.tensor([[0.0, 0.0], [0.6, -0.8]]))
