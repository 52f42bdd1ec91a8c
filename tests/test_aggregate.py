"""Step 6 of the round engine against bad and adversarial uploads: a norm buys no weight and no pull,
and an upload that cannot be aggregated is left out with the reason, never failing the round."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.nn.functional import normalize

from creamfl import rounds
from creamfl.payload import MAX_ROW_NORM
from shared_schemas.vocabulary import AggregationStrategy, Modality

N, DIM = 40, 8


def unit(seed: int, n: int = N) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return normalize(torch.randn(n, DIM, generator=generator))  # [n, d]


GLOBAL: dict[Modality, Tensor] = {"image": unit(100), "text": unit(101)}


def noisy_copy(reference: Tensor, noise: float, seed: int) -> Tensor:
    """Unit rows near ``reference``: a client whose space is roughly aligned with the server's."""
    return normalize(reference + noise * unit(seed))


def aggregate(
    uploads: dict[Modality, list[tuple[str, Tensor]]], strategy: AggregationStrategy = "creamfl"
) -> rounds.AggregationResult:
    return rounds.aggregate_uploads(uploads, GLOBAL, strategy=strategy)


def mean_weights(result: rounds.AggregationResult, modality: Modality) -> dict[str, float]:
    stats = result.weights[modality]
    return dict(zip(stats.clients, stats.mean_weight, strict=True))


@pytest.mark.parametrize("strategy", ["creamfl", "mean"])
@pytest.mark.parametrize("factor", [1024.0, 0.5, 3.0, 1e-3, MAX_ROW_NORM / 2])
def test_a_scaled_copy_of_a_clients_rows_gets_the_same_weight_and_pull(
    factor: float, strategy: AggregationStrategy
) -> None:
    # Prepare: two clients with the same directions, one of them scaled; a third client elsewhere
    directions = noisy_copy(GLOBAL["text"], 0.6, seed=1)
    other = noisy_copy(GLOBAL["text"], 0.9, seed=2)
    scaled = [("a", directions), ("b", directions * factor), ("c", other)]
    same = [("a", directions), ("b", directions), ("c", other)]

    # Execute
    attacked = aggregate({"image": scaled}, strategy)
    honest = aggregate({"image": same}, strategy)

    # Assert: b weighs and pulls exactly as much as a; bit for bit where the scaling is exact in float
    weights = mean_weights(attacked, "image")
    exact = factor in (1024.0, 0.5)
    tolerance = 0.0 if exact else 1e-6
    assert weights["b"] == pytest.approx(weights["a"], abs=tolerance)
    assert weights == pytest.approx(mean_weights(honest, "image"), abs=tolerance)
    assert attacked.weights["image"].max_weight == pytest.approx(honest.weights["image"].max_weight, abs=tolerance)
    assert torch.allclose(attacked.targets["image"], honest.targets["image"], rtol=0.0, atol=tolerance or 1e-6)
    assert attacked.excluded == ()


def test_rows_pointing_at_the_other_modalitys_global_reps_earn_no_more_than_those_directions_unscaled() -> None:
    # Prepare: an adversary uploads the server's own text representations as its image rows, scaled up
    honest = ("honest", noisy_copy(GLOBAL["text"], 0.6, seed=3))
    adversary = [honest, ("adversary", GLOBAL["text"] * 50.0)]
    same_directions = [honest, ("adversary", GLOBAL["text"].clone())]

    # Execute
    attacked = mean_weights(aggregate({"image": adversary}), "image")
    reference = mean_weights(aggregate({"image": same_directions}), "image")

    # Assert: the scale bought nothing beyond what the directions themselves earn
    assert attacked["adversary"] <= reference["adversary"] + 1e-6
    assert attacked["honest"] >= reference["honest"] - 1e-6


def bad_uploads() -> dict[str, tuple[Tensor, str]]:
    """Name -> (representations, what the reason says)."""
    nan = unit(4).index_fill(0, torch.tensor([5]), float("nan"))
    inf = unit(5).index_fill(1, torch.tensor([2]), float("inf"))
    return {
        "nan": (nan, "NaN or Inf"),
        "inf": (inf, "NaN or Inf"),
        "huge": (unit(6) * 3e38, "above"),  # finite float32 values, a norm that float32 cannot hold
        "large": (unit(7) * (MAX_ROW_NORM * 2), "above"),
        "short": (unit(8, n=N - 1), "expected shape"),
    }


@pytest.mark.parametrize("strategy", ["creamfl", "mean"])
def test_uploads_that_cannot_be_aggregated_are_left_out_with_the_reason(strategy: AggregationStrategy) -> None:
    # Prepare: two honest image clients, the bad uploads beside them; text has only bad uploads
    good = [("g1", noisy_copy(GLOBAL["text"], 0.5, seed=9)), ("g2", noisy_copy(GLOBAL["text"], 0.8, seed=10))]
    bad = bad_uploads()
    uploads: dict[Modality, list[tuple[str, Tensor]]] = {
        "image": [*((name, reps) for name, (reps, _) in bad.items()), *good],
        "text": [("t-nan", bad["nan"][0])],
    }

    # Execute
    result = aggregate(uploads, strategy)
    clean = aggregate({"image": good}, strategy)

    # Assert: the rest aggregate exactly as if the bad uploads had never come; text has no target
    assert torch.equal(result.targets["image"], clean.targets["image"])
    assert result.weights == clean.weights
    assert set(result.targets) == {"image"} and set(result.weights) == {"image"}
    left_out = {(e.client, e.modality): e.reason for e in result.excluded}
    assert set(left_out) == {*((name, "image") for name in bad), ("t-nan", "text")}
    for name, (_, reason) in bad.items():
        assert reason in left_out[name, "image"], (name, left_out[name, "image"])
    assert [e.client for e in result.excluded if e.modality == "image"] == sorted(bad)
