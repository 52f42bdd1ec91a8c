"""`creamfl-agent run` refuses bad configuration with exit status 2 and one line saying what to change."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest
import torch

from client_agent.cli import main
from coordinator_service.launcher import child_env, free_port
from tests.agent.helpers import BIN
from tests.coordinator.helpers import create_federation


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["run", *argv])
    return code, capsys.readouterr().err


def base_args(url: str, federation_id: str, token: str, state_dir: Path, **flags: str) -> list[str]:
    values = {
        "--coordinator": url,
        "--federation": federation_id,
        "--join-token": token,
        "--modality": "image",
        "--data": "builtin:0:0/3?samples=40",
        "--state-dir": str(state_dir),
        "--device": "cpu",
        "--retry-for": "1",
        "--backoff-max": "0.2",
        "--progress": "plain",
        **flags,
    }
    return [part for pair in values.items() for part in pair]


def assert_one_line(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("creamfl-agent: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (
            {"--modality": "audio"},
            ["--modality (CREAMFL_AGENT_MODALITY)", "'image', 'text' or 'multimodal'", "'audio'"],
        ),
        ({"--coordinator": "coordinator:8080"}, ["--coordinator", "http:// or https:// URL"]),
        ({"--threads": "0"}, ["--threads", "greater than or equal to 1"]),
        ({"--data": "parquet:/x"}, ["--data 'parquet:/x': unknown data spec"]),
        ({"--data": "image-folder:/no/such/dir"}, ["cannot read the data", "/no/such/dir does not exist"]),
        ({"--data": "ag-news:/x.csv"}, ["ag-news data is text data, not image", "--modality text"]),
        ({"--model": "text-gru-s"}, ["--model text-gru-s represents text, but --modality is image"]),
        ({"--model": "resnet152"}, ["unknown client model", "image-cnn-s"]),
        ({"--join-token": ""}, ["has not enrolled yet", "--join-token"]),
    ],
)
def test_bad_flags_exit_2_before_any_request(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flags: dict[str, str], fragments: list[str]
) -> None:
    # Prepare: nothing listens at the URL, so any request would fail differently
    args = base_args(f"http://127.0.0.1:{free_port()}", "fed-x", "token", tmp_path / "state", **flags)
    if flags.get("--join-token") == "":
        args = args[: args.index("--join-token")] + args[args.index("--join-token") + 2 :]

    # Execute
    code, err = run_cli(capsys, *args)

    # Assert
    assert code == 2
    assert_one_line(err, *fragments)


def test_missing_settings_name_the_flag_and_the_environment_variable(capsys: pytest.CaptureFixture[str]) -> None:
    # Execute
    code, err = run_cli(capsys, "--modality", "text")

    # Assert
    assert code == 2
    assert_one_line(
        err, "--coordinator (CREAMFL_AGENT_COORDINATOR) is required", "--data (CREAMFL_AGENT_DATA) is required"
    )


def test_settings_come_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    monkeypatch.setenv("CREAMFL_AGENT_COORDINATOR", "http://127.0.0.1:1")
    monkeypatch.setenv("CREAMFL_AGENT_FEDERATION", "fed-x")
    monkeypatch.setenv("CREAMFL_AGENT_DATA", "builtin:0:0/1")
    monkeypatch.setenv("CREAMFL_AGENT_MODALITY", "video")

    # Execute
    code, err = run_cli(capsys)

    # Assert
    assert code == 2
    assert_one_line(err, "--modality (CREAMFL_AGENT_MODALITY)", "'video'")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # Execute
    code, err = run_cli(capsys, *base_args("http://127.0.0.1:1", "fed-x", "t", tmp_path / "s", **{"--device": "cuda"}))

    # Assert
    assert code == 2
    assert_one_line(err, "--device cuda, but no CUDA device", "--device cpu")


def test_an_unreachable_coordinator_after_retries(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # Prepare
    url = f"http://127.0.0.1:{free_port()}"

    # Execute
    code, err = run_cli(capsys, *base_args(url, "fed-x", "token", tmp_path / "state"))

    # Assert
    assert code == 2
    assert_one_line(err, f"cannot reach the coordinator at {url}", "attempts over", "check --coordinator")


def test_a_wrong_join_token(capsys: pytest.CaptureFixture[str], live_url: str, tmp_path: Path) -> None:
    # Prepare
    with httpx.Client(base_url=live_url) as http:
        federation = create_federation(http, rounds=1)

    # Execute
    code, err = run_cli(capsys, *base_args(live_url, federation["id"], "not-the-token", tmp_path / "state"))

    # Assert
    assert code == 2
    assert_one_line(err, f"refused the join token for federation {federation['id']}", "check --join-token")
    assert not (tmp_path / "state" / "identity.json").exists()


def test_an_unknown_federation(capsys: pytest.CaptureFixture[str], live_url: str, tmp_path: Path) -> None:
    # Execute
    code, err = run_cli(capsys, *base_args(live_url, "fed-nope", "token", tmp_path / "state"))

    # Assert
    assert code == 2
    assert_one_line(err, "federation fed-nope does not exist", "check --federation")


def test_a_model_dimension_other_than_the_federations(
    capsys: pytest.CaptureFixture[str], live_url: str, tmp_path: Path
) -> None:
    # Prepare
    with httpx.Client(base_url=live_url) as http:
        federation = create_federation(http, rounds=1)  # embed_dim 16
    args = base_args(live_url, federation["id"], federation["join_token"], tmp_path / "state")

    # Execute
    code, err = run_cli(capsys, *args, "--model", "image-cnn-s:32")

    # Assert
    assert code == 2
    assert_one_line(err, "has dimension 32", f"federation {federation['id']} uses 16", "--model image-cnn-s:16")


def test_a_state_dir_of_another_federation(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # Prepare: the state dir of a client of fed-a
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    identity = {
        "coordinator": "http://127.0.0.1:1",
        "federation_id": "fed-a",
        "client_id": "cl-1",
        "token": "client-token",
        "name": "gw",
        "modalities": ["image"],
        "model": "image-cnn-s",
    }
    (state_dir / "identity.json").write_text(json.dumps(identity))

    # Execute
    code, err = run_cli(capsys, *base_args("http://127.0.0.1:1", "fed-b", "token", state_dir))

    # Assert
    assert code == 2
    assert_one_line(err, "belongs to client cl-1 of federation fed-a, not fed-b", "another --state-dir")


def test_the_console_script_exits_2_with_one_line(tmp_path: Path) -> None:
    # Execute
    result = subprocess.run(
        [str(BIN / "creamfl-agent"), "run", "--modality", "audio"],
        env=child_env(inherit_creamfl=False),
        capture_output=True,
        text=True,
        timeout=60,
    )

    # Assert
    assert result.returncode == 2
    assert_one_line(result.stderr, "--modality (CREAMFL_AGENT_MODALITY)")
