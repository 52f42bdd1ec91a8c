"""Dirichlet partitioning: a partition of the indices, deterministic per seed, min_size, label skew, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from creamfl.data.partition import dirichlet_partition

NUM_CLASSES = 10


def balanced_labels(per_class: int = 100, seed: int = 0) -> Tensor:
    """``per_class`` samples of each of 10 classes, shuffled."""
    labels = torch.arange(NUM_CLASSES).repeat_interleave(per_class)
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]


def distinct_classes(labels: Tensor, parts: list[Tensor]) -> list[int]:
    return [len(labels[part].unique()) for part in parts]


def mean_kl_to_global(labels: Tensor, parts: list[Tensor]) -> float:
    """Mean over clients of KL(client label distribution || global label distribution), in nats."""
    global_dist = torch.bincount(labels, minlength=NUM_CLASSES).double() / len(labels)
    total = 0.0
    for part in parts:
        local = torch.bincount(labels[part], minlength=NUM_CLASSES).double() / len(part)
        total += sum(p * math.log(p / q) for p, q in zip(local.tolist(), global_dist.tolist(), strict=True) if p > 0)
    return total / len(parts)


# --- structure -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("num_clients", "alpha"), [(1, 0.5), (4, 0.1), (8, 0.05), (7, 100.0)])
def test_every_index_exactly_once(num_clients: int, alpha: float) -> None:
    # Prepare
    labels = balanced_labels()

    # Execute
    parts = dirichlet_partition(labels, num_clients, alpha=alpha, seed=3)

    # Assert
    assert len(parts) == num_clients
    everything = torch.cat(parts)
    assert len(everything) == len(labels)
    assert torch.equal(everything.sort().values, torch.arange(len(labels)))
    for part in parts:
        assert part.dtype == torch.int64
        assert part.dim() == 1
        assert torch.equal(part, part.sort().values)


def test_single_client_gets_everything() -> None:
    # Prepare
    labels = balanced_labels(per_class=7)

    # Execute
    (only,) = dirichlet_partition(labels, 1, alpha=0.1, seed=0)

    # Assert
    assert torch.equal(only, torch.arange(70))


def test_non_contiguous_label_values() -> None:
    # Prepare: class ids 3 and 17 only, uneven sizes.
    labels = torch.tensor([17] * 30 + [3] * 11)

    # Execute
    parts = dirichlet_partition(labels, 3, alpha=1.0, seed=5)

    # Assert
    assert torch.equal(torch.cat(parts).sort().values, torch.arange(41))


# --- determinism -----------------------------------------------------------------------------------


def test_same_seed_same_partition() -> None:
    # Prepare
    labels = balanced_labels()

    # Execute
    first = dirichlet_partition(labels, 6, alpha=0.3, seed=11)
    torch.manual_seed(12345)  # the torch global RNG must play no part
    second = dirichlet_partition(labels, 6, alpha=0.3, seed=11)

    # Assert
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_different_seed_different_partition() -> None:
    # Prepare
    labels = balanced_labels()

    # Execute
    first = dirichlet_partition(labels, 6, alpha=0.3, seed=11)
    second = dirichlet_partition(labels, 6, alpha=0.3, seed=12)

    # Assert
    assert any(not torch.equal(a, b) for a, b in zip(first, second, strict=True))


# --- min_size --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_min_size_respected(seed: int) -> None:
    # Prepare: with alpha = 0.05 unconstrained draws often leave a client with a handful of samples.
    labels = balanced_labels()
    unconstrained = dirichlet_partition(labels, 8, alpha=0.05, seed=seed)

    # Execute
    parts = dirichlet_partition(labels, 8, alpha=0.05, seed=seed, min_size=40)

    # Assert
    assert min(len(p) for p in parts) >= 40
    assert torch.equal(torch.cat(parts).sort().values, torch.arange(len(labels)))
    assert min(len(p) for p in unconstrained) >= 1


def test_impossible_min_size_raises_after_max_tries() -> None:
    # Prepare: 8 clients x 120 = 960 of 1000 samples with alpha = 0.05 is practically never drawn.
    labels = balanced_labels()

    # Execute / Assert
    with pytest.raises(ValueError, match="tries"):
        dirichlet_partition(labels, 8, alpha=0.05, seed=0, min_size=120, max_tries=5)


# --- label skew ------------------------------------------------------------------------------------


def test_small_alpha_is_more_label_skewed_than_large_alpha() -> None:
    # Prepare
    labels = balanced_labels()

    # Execute
    skewed = [dirichlet_partition(labels, 8, alpha=0.05, seed=seed) for seed in range(5)]
    uniform = [dirichlet_partition(labels, 8, alpha=100.0, seed=seed) for seed in range(5)]

    # Assert: distinct classes per client, and KL to the global label distribution.
    skewed_classes = sum(sum(distinct_classes(labels, p)) for p in skewed) / 40
    uniform_classes = sum(sum(distinct_classes(labels, p)) for p in uniform) / 40
    assert uniform_classes == 10.0
    assert skewed_classes < 6.0
    skewed_kl = sum(mean_kl_to_global(labels, p) for p in skewed) / 5
    uniform_kl = sum(mean_kl_to_global(labels, p) for p in uniform) / 5
    assert uniform_kl < 0.05
    assert skewed_kl > 0.8
    # Client sizes: near 1000 / 8 each for alpha = 100.
    for part in uniform[0]:
        assert 90 <= len(part) <= 160


def test_last_client_is_as_label_skewed_as_the_others() -> None:
    # Prepare: Dir(alpha) is exchangeable, so no client position should be special.
    labels = balanced_labels()

    # Execute
    last, others = [], []
    for seed in range(20):
        counts = distinct_classes(labels, dirichlet_partition(labels, 8, alpha=0.05, seed=seed))
        last.append(counts[-1])
        others.extend(counts[:-1])

    # Assert
    assert sum(last) / len(last) <= sum(others) / len(others) + 2.0


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_clients", [0, -1])
def test_bad_num_clients_raises(num_clients: int) -> None:
    with pytest.raises(ValueError):
        dirichlet_partition(balanced_labels(), num_clients, alpha=1.0, seed=0)


@pytest.mark.parametrize("alpha", [0.0, -0.5])
def test_bad_alpha_raises(alpha: float) -> None:
    with pytest.raises(ValueError):
        dirichlet_partition(balanced_labels(), 4, alpha=alpha, seed=0)


def test_too_few_samples_raises() -> None:
    # Prepare
    labels = torch.tensor([0, 1, 0, 1, 2])

    # Execute / Assert: 5 samples cannot give 3 clients 2 each, nor 6 clients 1 each.
    with pytest.raises(ValueError):
        dirichlet_partition(labels, 3, alpha=1.0, seed=0, min_size=2)
    with pytest.raises(ValueError):
        dirichlet_partition(labels, 6, alpha=1.0, seed=0)
