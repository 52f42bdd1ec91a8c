"""Step progress: log lines with key=value fields when not on a terminal, bars when on one."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from client_agent.errors import AgentStopped
from client_agent.progress import Reporter


def test_plain_mode_logs_each_step_start_and_end(caplog: pytest.LogCaptureFixture) -> None:
    # Prepare
    reporter = Reporter("plain", logger=logging.getLogger("client_agent.test.progress"))

    # Execute
    with caplog.at_level(logging.INFO, logger="client_agent.test.progress"):
        with reporter.step("upload", 2048, "bytes", round=3, modality="text") as update:
            update(1024, 2048)
        with pytest.raises(AgentStopped), reporter.step("train", 10, "steps", round=3):
            raise AgentStopped("SIGTERM")

    # Assert
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "upload round=3 modality=text started total=2048 unit=bytes"
    assert lines[1].startswith("upload round=3 modality=text done seconds=")
    assert lines[2] == "train round=3 started total=10 unit=steps"
    assert lines[3].startswith("train round=3 abandoned seconds=") and lines[3].endswith("reason=AgentStopped")


def test_bar_mode_draws_a_bar_on_a_terminal() -> None:
    # Prepare
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=100)
    reporter = Reporter("bar", logger=logging.getLogger("client_agent.test.progress"), console=console)

    # Execute
    with reporter.step("download", 4096, "bytes", round=1, modality="image") as update:
        update(2048, 4096)
        console.file.flush()

    # Assert
    assert "download round=1 modality=image" in screen.getvalue()
