"""AgentCommand: the command line it writes is read back by ``creamfl-agent run`` as the same settings."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from client_agent.cli import build_parser
from client_agent.command import FLAGS, AgentCommand
from client_agent.settings import AgentSettings, load_settings


def parsed(argv: list[str]) -> AgentSettings:
    args = build_parser().parse_args(argv)
    return load_settings({k: v for k, v in vars(args).items() if k not in ("command", "log_level")})


def test_every_setting_round_trips_through_the_cli(tmp_path: Path) -> None:
    # Prepare
    every_setting: dict[str, Any] = {
        "coordinator": "http://coordinator:8080",
        "federation": "fed-1",
        "join_token": "secret",
        "modality": "multimodal",
        "model": "dual-s:64",
        "data": "builtin:0:1/3?samples=40",
        "name": "gateway-7",
        "state_dir": tmp_path / "state",
        "device": "cpu",
        "threads": 2,
        "batch_size": 16,
        "poll_wait_s": 5,
        "retry_for_s": 0.5,
        "backoff_max_s": 2.5,
        "request_timeout_s": 30,
        "once": True,
        "progress": "plain",
    }

    # Execute
    argv = AgentCommand(**every_setting).argv("creamfl-agent")
    settings = parsed(argv[1:])

    # Assert
    assert argv[:4] == ["creamfl-agent", "run", "--coordinator", "http://coordinator:8080"]
    assert argv[argv.index("--poll-wait") + 1] == "5" and argv[argv.index("--retry-for") + 1] == "0.5"
    token = every_setting.pop("join_token")
    assert settings.join_token is not None and settings.join_token.get_secret_value() == token
    assert {name: getattr(settings, name) for name in every_setting} == every_setting


def test_unset_settings_stay_off_the_command_line(tmp_path: Path) -> None:
    command = AgentCommand(
        coordinator="http://c:1", federation="f", modality="text", data="builtin:0:0/1", state_dir=tmp_path
    )

    assert command.argv() == [
        "run",
        "--coordinator",
        "http://c:1",
        "--federation",
        "f",
        "--modality",
        "text",
        "--data",
        "builtin:0:0/1",
        "--state-dir",
        str(tmp_path),
    ]


def test_the_command_names_every_setting_and_imports_no_torch() -> None:
    assert set(FLAGS) == {field.name for field in fields(AgentCommand)} == set(AgentSettings.model_fields)
    probe = "import sys, client_agent.command; assert 'torch' not in sys.modules and 'pydantic' not in sys.modules"
    subprocess.run([sys.executable, "-c", probe], check=True)
