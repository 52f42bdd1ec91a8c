"""The in-process simulator end to end: a 1-round smoke run, determinism, the CLI, bad input.

Determinism: every random draw of a round comes from a stream derived from (seed, round, purpose),
and torch's global generator (dropout) is seeded per step, so nothing else in the process (another
run, a thread drawing random numbers, the machine's load) moves the numbers. Where the guarantee
stops (another torch build, device type or thread count) is in the README.
"""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from creamfl.cli import main
from creamfl.sim_config import SimulationConfig, preset_config
from creamfl.simulation import run_simulation

SMALL = {
    "rounds": 1,
    "public_size": 48,
    "test_size": 40,
    "private_per_client": 40,
    "embed_dim": 32,
    "image_clients": 1,
    "text_clients": 1,
    "multimodal_clients": 1,
}

SMALL_FLAGS = ["--public-size", "48", "--test-size", "40", "--private-per-client", "40", "--embed-dim", "32"]
SMALL_FLAGS += ["--image-clients", "1", "--text-clients", "1", "--multimodal-clients", "1"]


def rounds_without_timing(result: dict[str, Any]) -> list[dict[str, Any]]:
    rounds: list[dict[str, Any]] = result["rounds"]
    for r in rounds:
        r.pop("seconds")
    return rounds


def test_one_round_of_creamfl_runs_every_step() -> None:
    # Prepare
    config = preset_config("tiny", **SMALL)

    # Execute
    result = run_simulation(config)

    # Assert
    (only,) = result.rounds
    assert only.participants == ["image-0", "text-0", "multimodal-0"]
    # float16 payload: 48 rows x 32 dims x 2 bytes per modality; four modality uploads in all.
    assert only.upload_bytes > 4 * 48 * 32 * 2
    assert set(only.weights) == {"image", "text"}
    assert only.weights["image"].clients == ("image-0", "multimodal-0")
    assert sum(only.weights["image"].mean_weight) == pytest.approx(1.0, abs=1e-6)
    assert only.aggregate_public_rsum is not None
    assert 0.0 <= only.test.rsum <= 200.0
    assert set(only.client_public_rsum) == {"image-0", "text-0", "multimodal-0"}


def test_same_seed_same_result_and_another_seed_differs() -> None:
    # Prepare
    config = preset_config("tiny", **SMALL)

    # Execute
    first = rounds_without_timing(run_simulation(config).as_dict())
    second = rounds_without_timing(run_simulation(config).as_dict())
    other = rounds_without_timing(run_simulation(preset_config("tiny", **{**SMALL, "seed": 1})).as_dict())

    # Assert
    assert first == second
    assert other[0]["ensemble_weights"] != first[0]["ensemble_weights"]


@pytest.mark.parametrize("strategy", ["mean", "server-only", "centralized"])
def test_baselines_run(strategy: str) -> None:
    # Prepare
    config = preset_config("tiny", **{**SMALL, "strategy": strategy, "server_schedule": "separate"})

    # Execute
    result = run_simulation(config)

    # Assert
    (only,) = result.rounds
    federated = strategy == "mean"
    assert bool(only.participants) == federated
    assert (only.upload_bytes > 0) == federated
    if federated:
        assert only.weights["text"].mean_weight == (0.5, 0.5)


def test_config_rejects_bad_values_with_every_reason() -> None:
    with pytest.raises(ValueError, match=r"rounds must be at least 1.*public_subset must lie"):
        SimulationConfig(rounds=0, public_size=10, public_subset=11)


def test_cli_writes_the_promised_json(tmp_path: Path) -> None:
    # Prepare
    out = tmp_path / "run.json"
    # Execute
    code = main(["simulate", *SMALL_FLAGS, "--rounds", "1", "--no-intra", "--exclude-self", "--json", str(out)])

    # Assert
    assert code == 0
    written = json.loads(out.read_text())
    assert written["strategy"] == "creamfl"
    assert written["config"]["intra"] is False and written["config"]["exclude_self"] is True
    assert [r["round"] for r in written["rounds"]] == [1]
    assert set(written["rounds"][0]) >= {"rsum", "i2t_r1", "t2i_r1", "upload_bytes"}
    assert written["final"]["rsum"] == written["rounds"][0]["rsum"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rounds", "0"], "rounds must be at least 1"),
        (["--device", "cuda"], "CUDA is not available"),
        (["--strategy", "mean", "--image-clients", "0", "--text-clients", "0", "--multimodal-clients", "0"], "needs"),
    ],
)
def test_cli_bad_input_is_one_clear_line_and_exit_2(args: list[str], message: str) -> None:
    # Execute
    done = subprocess.run(
        [sys.executable, "-m", "creamfl.cli", "simulate", *args], capture_output=True, text=True, timeout=120
    )

    # Assert
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_two_processes_with_the_same_seed_write_identical_results(tmp_path: Path) -> None:
    # Prepare
    outputs = [tmp_path / "first.json", tmp_path / "second.json"]

    # Execute
    for out in outputs:
        subprocess.run(
            [sys.executable, "-m", "creamfl.cli", "simulate", *SMALL_FLAGS, "--rounds", "2", "--json", str(out)],
            check=True,
            capture_output=True,
            timeout=300,
        )

    # Assert
    first, second = (rounds_without_timing(json.loads(out.read_text())) for out in outputs)
    assert first == second
    assert [r["round"] for r in first] == [1, 2]


def test_draws_from_torchs_global_generator_between_runs_change_nothing() -> None:
    # Prepare
    config = preset_config("tiny", **{**SMALL, "rounds": 2})
    reference = rounds_without_timing(run_simulation(config).as_dict())

    # Execute: between every two steps, something else in the process draws from the global generator
    disturbed = rounds_without_timing(run_simulation(config, progress=lambda *_: torch.rand(7)).as_dict())

    # Assert
    assert disturbed == reference
