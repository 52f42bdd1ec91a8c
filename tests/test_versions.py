"""One version, ``creamfl.__version__``: every console script reports it and the installed metadata agrees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import creamfl

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("script", ["creamfl", "creamfl-coordinator", "creamfl-agent"])
def test_console_script_prints_its_name_and_the_version(script: str) -> None:
    # Execute: --version alone, as an operator checking an install would type it
    answer = subprocess.run([str(BIN / script), "--version"], capture_output=True, text=True, timeout=120)

    # Assert
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout == f"{script} {creamfl.__version__}\n"


def test_installed_metadata_is_the_package_version(tmp_path: Path) -> None:
    # Prepare: outside the checkout, whose creamfl.egg-info (rewritten by any build there) would otherwise be
    # read instead of what is installed in this environment
    probe = "import importlib.metadata; print(importlib.metadata.version('creamfl'))"

    # Execute
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)

    # Assert: pyproject.toml reads the version from creamfl/__init__.py, so only a stale install (pip install
    # not re-run since the bump) fails here
    assert out.stdout.strip() == creamfl.__version__


def test_agent_version_pulls_in_no_server_stack() -> None:
    # Prepare: a fresh interpreter, so modules imported by other tests cannot mask a leak. The agent is installed
    # without the coordinator's stack or transformers, and reports a bad setting before it loads torch.
    heavy = ("fastapi", "sqlalchemy", "transformers", "torch")
    probe = (
        "import sys\nfrom client_agent.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )

    # Execute
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    leaked = out.stdout.splitlines()[-1]  # after the version line

    # Assert
    assert leaked == "", f"creamfl-agent --version imported {leaked}"
