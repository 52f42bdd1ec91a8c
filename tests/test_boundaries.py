"""The library and the wire schemas must stay importable without the service stacks."""

import subprocess
import sys

import pytest

SERVICE_MODULES = ("fastapi", "httpx", "sqlalchemy")


@pytest.mark.parametrize(
    "package",
    [
        "creamfl",
        "creamfl.ensemble",
        "creamfl.simulation",
        "creamfl.cli",
        "creamfl.data.formats",
        "creamfl.evaluation",
        "shared_schemas",
    ],
)
def test_import_pulls_in_no_service_stack(package: str) -> None:
    # Prepare: a fresh interpreter, so modules imported by other tests cannot mask a leak.
    probe = f"import sys, {package}; print(','.join(m for m in {SERVICE_MODULES!r} if m in sys.modules))"

    # Execute
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)

    # Assert
    assert out.stdout.strip() == "", f"importing {package} imported {out.stdout.strip()}"
