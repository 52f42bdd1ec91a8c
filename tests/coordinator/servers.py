"""Real coordinator processes for tests: :class:`coordinator_service.launcher.CoordinatorProcess`
configured the same way in every test that needs ``creamfl-coordinator serve`` as a subprocess."""

from __future__ import annotations

from pathlib import Path

from coordinator_service.launcher import CoordinatorProcess
from tests.coordinator.helpers import ADMIN_TOKEN


def coordinator_process(data_dir: Path, **settings: object) -> CoordinatorProcess:
    """A coordinator (not started; ``with`` starts it and always stops it) with the tests' admin
    token and only these ``CREAMFL_*`` settings, logging (INFO) to ``coordinator.log`` beside ``data_dir``."""
    return CoordinatorProcess(
        data_dir,
        settings={"admin_token": ADMIN_TOKEN, **settings},
        inherit_creamfl=False,
        log_path=data_dir.parent / "coordinator.log",
        log_level="info",
    )
