"""Real coordinator processes for tests: ``creamfl-coordinator serve`` as a subprocess on 127.0.0.1.

A :class:`CoordinatorProcess` starts the server on a fixed free port, waits for ``/readyz``, can be
killed with SIGKILL (a crash: no shutdown code runs) and restarted on the same port, data dir and
database. :func:`coordinator_process` stops it in every case, also when the test fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.coordinator.helpers import ADMIN_TOKEN

HOST = "127.0.0.1"
READY_TIMEOUT_S = 90.0


def free_port() -> int:
    """A port nothing listens on now (the kernel's choice, released at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _command() -> list[str]:
    script = Path(sys.executable).with_name("creamfl-coordinator")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "coordinator_service.cli"]


@dataclass
class CoordinatorProcess:
    """One coordinator (API + in-process worker) at a time on ``port``; restartable after a kill."""

    data_dir: Path
    database_url: str
    port: int = field(default_factory=free_port)
    settings: dict[str, str] = field(default_factory=dict)  # CREAMFL_* without the prefix, e.g. lease_s
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"coordinator-{self.port}.log"

    @property
    def pid(self) -> int:
        assert self.process is not None, "the coordinator is not running"
        return self.process.pid

    def http(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=timeout)

    def start(self, **settings: object) -> None:
        """Start (or restart) with these settings on top of the earlier ones; returns once ready."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.settings.update({key: str(value) for key, value in settings.items()})
        env = {key: value for key, value in os.environ.items() if not key.startswith("CREAMFL_")}
        env.update(
            {
                "CREAMFL_ADMIN_TOKEN": ADMIN_TOKEN,
                "CREAMFL_DATABASE_URL": self.database_url,
                **{f"CREAMFL_{key.upper()}": value for key, value in self.settings.items()},
            }
        )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts}: {self.settings} =====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [*_command(), "serve", "--host", HOST, "--port", str(self.port), "--data-dir", str(self.data_dir)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(base_url=self.base_url, timeout=1.0) as http:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(f"the coordinator exited with {self.process.returncode}:\n{self.log_tail()}")
                with contextlib.suppress(httpx.TransportError):
                    if http.get("/readyz").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise AssertionError(f"the coordinator was not ready in {READY_TIMEOUT_S}s:\n{self.log_tail()}")
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: the process dies at once, mid-request or mid-job, with no shutdown code."""
        assert self.process is not None and self.process.poll() is None, "not running"
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """A graceful stop (SIGTERM), SIGKILL when it takes too long; nothing when not running."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.is_file():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@contextlib.contextmanager
def coordinator_process(data_dir: Path, database_url: str, **settings: object) -> Iterator[CoordinatorProcess]:
    """A coordinator, not yet started (call ``start``); always stopped afterwards, whatever happened."""
    coordinator = CoordinatorProcess(
        data_dir=data_dir, database_url=database_url, settings={k: str(v) for k, v in settings.items()}
    )
    try:
        yield coordinator
    finally:
        coordinator.stop()
