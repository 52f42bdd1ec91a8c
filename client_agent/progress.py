"""Progress of the steps of a round: bars on a terminal (rich), structured log lines otherwise.

Log lines are ``key=value`` pairs after the event name, one line per step start and end (and one
every ``PLAIN_EVERY_S`` seconds in a long step), so a collector can parse them.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Literal

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

Update = Callable[[float, float | None], None]  # (done, total or None)
Unit = Literal["bytes", "steps", "items"]
PLAIN_EVERY_S = 10.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
CONSOLE = Console(stderr=True)


class Reporter:
    """Reports the steps of a round; ``step`` yields an update function for its progress."""

    def __init__(
        self, mode: Literal["bar", "plain"], *, logger: logging.Logger | None = None, console: Console | None = None
    ) -> None:
        self.mode = mode
        self.log = logger or logging.getLogger("client_agent")
        self.console = console or CONSOLE

    @contextlib.contextmanager
    def step(self, name: str, total: float | None, unit: Unit, **fields: object) -> Iterator[Update]:
        label = " ".join([name, *(f"{k}={v}" for k, v in fields.items())])
        started = time.monotonic()
        try:
            if self.mode == "bar":
                with self._bar(unit) as bar:
                    task = bar.add_task(label, total=total)

                    def update(done: float, new_total: float | None) -> None:
                        bar.update(task, completed=done, total=new_total if new_total is not None else total)

                    yield update
            else:
                self.log.info("%s started total=%s unit=%s", label, _number(total), unit)
                last = [started]

                def update(done: float, new_total: float | None) -> None:
                    now = time.monotonic()
                    if now - last[0] >= PLAIN_EVERY_S:
                        last[0] = now
                        shown = new_total if new_total is not None else total
                        self.log.info(
                            "%s progress done=%s total=%s unit=%s", label, _number(done), _number(shown), unit
                        )

                yield update
        except BaseException as exc:
            self.log.info("%s abandoned seconds=%.2f reason=%s", label, time.monotonic() - started, type(exc).__name__)
            raise
        self.log.info("%s done seconds=%.2f", label, time.monotonic() - started)

    def _bar(self, unit: Unit) -> Progress:
        amount = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            amount,
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )


def _number(value: float | None) -> str:
    if value is None:
        return "?"
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def choose_mode(setting: Literal["auto", "bar", "plain"]) -> Literal["bar", "plain"]:
    if setting != "auto":
        return setting
    return "bar" if sys.stderr.isatty() else "plain"


def configure_logging(mode: Literal["bar", "plain"], level: int = logging.INFO) -> None:
    """Rich log lines above the bars on a terminal; plain ``time level logger key=value`` lines otherwise.

    Leaves logging alone where the embedding program (or a test runner) has configured it already."""
    root = logging.getLogger()
    root.setLevel(level)
    if root.handlers:
        return
    handler: logging.Handler
    if mode == "bar":
        handler = RichHandler(console=CONSOLE, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
