"""Run ``creamfl-coordinator serve`` as a child process on 127.0.0.1 and wait until it is ready.

The one way the one-machine demo, the benchmarks and the tests start a real server over real HTTP.
A :class:`CoordinatorProcess` keeps its port, data dir and database, so it can be killed (SIGKILL,
a crash: no shutdown code runs) and started again on the same data. As a context manager it is
started on entry and always stopped on exit (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import httpx

HOST = "127.0.0.1"


def free_port() -> int:
    """A port nothing listens on now (the kernel's choice, released at once)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def cli_command(*args: str) -> list[str]:
    """``creamfl-coordinator ARGS``, run by this interpreter."""
    return [sys.executable, "-m", "coordinator_service.cli", *args]


def child_env(settings: Mapping[str, object] | None = None, *, inherit_creamfl: bool = True) -> dict[str, str]:
    """This process's environment for a child process, plus ``settings`` as ``CREAMFL_<KEY>``
    (keys without the prefix, e.g. ``lease_s``); without ``inherit_creamfl`` no ``CREAMFL_*``
    variable of this process reaches the child, so only ``settings`` configure it."""
    env = {key: value for key, value in os.environ.items() if inherit_creamfl or not key.startswith("CREAMFL_")}
    env.update({f"CREAMFL_{key.upper()}": str(value) for key, value in (settings or {}).items()})
    return env


@dataclass
class CoordinatorProcess:
    """``creamfl-coordinator serve`` (API + in-process worker) on ``HOST:port``, one process at a time."""

    data_dir: Path
    settings: dict[str, object] = field(default_factory=dict)  # CREAMFL_* without the prefix, e.g. lease_s
    port: int = field(default_factory=free_port)
    inherit_creamfl: bool = True  # False: this process's CREAMFL_* variables do not reach the server
    log_path: Path | None = None  # appended to on every start; None: the server writes to our stdout/stderr
    log_level: str = "warning"
    serve_args: Sequence[str] = ()  # more ``serve`` options, e.g. ("--no-migrate", "--no-worker")
    program: Sequence[str] = field(default_factory=cli_command)  # e.g. another environment's creamfl-coordinator
    ready_timeout_s: float = 120.0
    stop_timeout_s: float = 20.0
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    starts: int = field(default=0, init=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the coordinator was never started")
        return self.process.pid

    @property
    def database_url(self) -> str:
        """The database the server uses: CREAMFL_DATABASE_URL, else the SQLite file in the data dir."""
        url = self.env().get("CREAMFL_DATABASE_URL")
        return url or f"sqlite:///{(self.data_dir / 'coordinator.db').resolve()}"

    def env(self) -> dict[str, str]:
        return child_env(self.settings, inherit_creamfl=self.inherit_creamfl)

    def http(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=timeout)

    def start(self, **settings: object) -> Self:
        """Start with these settings on top of the earlier ones; returns once ``/readyz`` answers 200."""
        if self.running:
            raise RuntimeError(f"the coordinator at {self.url} is already running")
        self.settings.update(settings)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        command = [*self.program, "serve", "--host", HOST, "--port", str(self.port), "--data-dir", str(self.data_dir)]
        command += ["--log-level", self.log_level, *self.serve_args]
        with contextlib.ExitStack() as stack:
            log: IO[bytes] | None = None
            if self.log_path is not None:
                log = stack.enter_context(self.log_path.open("ab"))
                log.write(f"\n===== start {self.starts}: {self.settings} =====\n".encode())
                log.flush()
            self.process = subprocess.Popen(
                command, env=self.env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT if log else None
            )
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        with httpx.Client(base_url=self.url, timeout=1.0) as http:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"the coordinator exited with code {self.process.returncode}{self._log_note()}")
                with contextlib.suppress(httpx.TransportError):
                    if http.get("/readyz").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"the coordinator at {self.url} was not ready in {self.ready_timeout_s:.0f} s{self._log_note()}"
                    )
                time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: the process dies at once, mid-request or mid-job, with no shutdown code."""
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"the coordinator at {self.url} is not running")
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """A graceful stop (SIGTERM), SIGKILL when it takes too long; nothing when not running."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)

    def restart(self, **settings: object) -> Self:
        """Stop (if running) and start again on the same port, data dir and database."""
        self.stop()
        return self.start(**settings)

    def log_tail(self, lines: int = 60) -> str:
        if self.log_path is None or not self.log_path.is_file():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _log_note(self) -> str:
        return f":\n{self.log_tail()}" if self.log_path is not None else " (its output is above)"

    def __enter__(self) -> Self:
        return self if self.running else self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
