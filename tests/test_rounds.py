"""The round engine's pieces: seeds, the public subset, client selection, configs, payload wiring."""

from dataclasses import replace

import pytest
import torch

from coordinator_service.round_config import federation_fields, round_config
from creamfl import rounds
from creamfl.rounds.seeds import client_purpose, generator, seeded_global_rng, selection_purpose
from creamfl.sim_config import SimulationConfig
from shared_schemas.federation import FederationCreate

CONFIG = rounds.RoundConfig(seed=5, public_size=100, subset_size=30, clients_per_round=3)


def test_derived_seeds_differ_by_every_part_and_are_stable() -> None:
    # Execute
    seeds = {
        rounds.derive_seed(seed, number, purpose)
        for seed in (0, 1)
        for number in (1, 2)
        for purpose in ("server-retrieval", "server-distillation", client_purpose("a"), selection_purpose(0))
    }

    # Assert: 16 distinct 63-bit seeds, and the derivation is a pure function (the agent and the
    # coordinator compute it on different machines)
    assert len(seeds) == 16
    assert all(0 <= s < 2**63 for s in seeds)
    assert rounds.derive_seed(0, 1, "server-retrieval") == rounds.derive_seed(0, 1, "server-retrieval")
    assert rounds.derive_seed(1, 12, "x") != rounds.derive_seed(11, 2, "x")  # no concatenation collisions


def test_public_subset_is_sorted_sized_and_seeded_per_round() -> None:
    # Execute
    first, again, second = (rounds.public_subset(CONFIG, n) for n in (1, 1, 2))

    # Assert
    assert first.shape == (30,) and bool((first[1:] > first[:-1]).all())
    assert int(first.min()) >= 0 and int(first.max()) < 100
    assert torch.equal(first, again)
    assert not torch.equal(first, second)
    whole = rounds.public_subset(replace(CONFIG, subset_size=100), 1)
    assert torch.equal(whole, torch.arange(100))


def test_selection_keeps_the_kept_fills_the_seats_and_redraws_per_attempt() -> None:
    # Prepare
    candidates = [f"c{i}" for i in range(10)]

    # Execute
    draws = [rounds.select_clients(CONFIG, 1, candidates, attempt=a) for a in range(4)]
    kept = rounds.select_clients(CONFIG, 1, candidates, attempt=1, keep=["c7", "gone"])
    everyone = rounds.select_clients(replace(CONFIG, clients_per_round=None), 1, candidates)

    # Assert
    assert all(len(d) == 3 and len(set(d)) == 3 and set(d) <= set(candidates) for d in draws)
    assert len({tuple(d) for d in draws}) > 1  # a re-opened round draws afresh
    assert draws[0] == rounds.select_clients(CONFIG, 1, candidates, attempt=0)
    assert kept[0] == "c7" and len(kept) == 3 and "gone" not in kept
    assert sorted(everyone) == sorted(candidates)


def test_a_federation_config_and_the_round_config_convert_both_ways() -> None:
    # Prepare: the simulator's scenario, with every round-relevant field off its default
    scenario = SimulationConfig(
        seed=9,
        public_size=80,
        public_subset=40,
        embed_dim=48,
        kd_weight=0.7,
        exclude_self=True,
        normalize_aggregate=False,
        payload_dtype="int8",
        local_epochs=2,
        client_lr=2e-3,
        client_batch_size=8,
        gamma=0.25,
        tau=0.3,
        inter=False,
        server_image_widths=(8, 16),
        server_lr=1e-3,
        server_batch_size=32,
        server_schedule="separate",
        strategy="mean",
    )
    engine_config = scenario.round_config()

    # Execute
    federation = FederationCreate.model_validate(
        {"name": "x", "public_set": {"size": 80}, "clients_per_round": 6, **federation_fields(engine_config)}
    )
    back = round_config(federation)

    # Assert: only the seats differ (the simulator's "every client" is a number for a federation)
    assert back == replace(engine_config, clients_per_round=6)


def test_a_baseline_without_clients_has_no_federation() -> None:
    with pytest.raises(ValueError, match="baseline"):
        federation_fields(SimulationConfig(strategy="server-only").round_config())


def test_wire_rounds_through_the_payload_dtype() -> None:
    # Prepare
    reps = {"image": torch.randn(4, 8), "text": torch.randn(4, 8)}
    subset = torch.tensor([1, 3, 5, 7])

    # Execute
    wired = rounds.wire(reps, dtype="float16", subset=subset)

    # Assert: what the receiver holds is the float16 rounding, one payload per modality
    assert set(wired.payloads) == {"image", "text"}
    assert torch.equal(wired.reps["image"], reps["image"].half().float())
    assert wired.size == sum(len(b) for b in wired.payloads.values())
    assert torch.equal(rounds.decode_wire(wired.payloads)["text"], wired.reps["text"])


def test_seeded_global_rng_repeats_and_restores_the_callers_stream() -> None:
    # Prepare
    torch.manual_seed(0)
    expected_after = torch.rand(3)
    torch.manual_seed(0)

    # Execute
    with seeded_global_rng(42, torch.device("cpu")):
        inside = torch.rand(3)
    with seeded_global_rng(42, torch.device("cpu")):
        again = torch.rand(3)
    after = torch.rand(3)

    # Assert
    assert torch.equal(inside, again)
    assert torch.equal(after, expected_after)  # the caller's stream continues as if nothing happened
    assert generator(1, 2, "p").initial_seed() == rounds.derive_seed(1, 2, "p")
