"""Delivering a committed round: its outbox payloads uploaded, then its metrics reported, each step
recorded in the state dir so that a restarted agent does only what is left."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from client_agent.coordinator_client import CoordinatorClient
from client_agent.coordinator_errors import Rejected
from client_agent.errors import AgentError
from client_agent.progress import Reporter
from client_agent.refusals import Refusals
from client_agent.state import Record, RoundRecord, StateDir
from shared_schemas.rounds import TrainTask


@dataclass(frozen=True)
class Delivery:
    client: CoordinatorClient
    refusals: Refusals
    state: StateDir
    reporter: Reporter
    log: logging.Logger

    def deliver(self, task: TrainTask, record: Record, current: RoundRecord) -> None:
        """Upload what is not uploaded yet (a repeat is harmless), then report the metrics once."""
        started = time.perf_counter()
        for modality, name in sorted(current.outbox.items()):
            if modality in current.uploaded or current.closed:
                continue
            body = (self.state.outbox / name).read_bytes()
            url = task.upload_urls.get(modality)  # type: ignore[call-overload]
            if url is None:
                raise AgentError(f"round {task.round} takes no {modality} upload from this client")
            outcome = self._upload(task, modality, url, body, current)
            self.log.info("round=%d upload modality=%s outcome=%r", task.round, modality, outcome)
            if not current.closed:
                current.uploaded.append(modality)
            self.state.save_record(record)
        if current.reported or current.closed:
            return
        metrics = {**current.metrics, "upload_seconds": time.perf_counter() - started}
        dropped = sorted(name for name, value in metrics.items() if not math.isfinite(value))
        if dropped:  # JSON carries no NaN/Inf: a diverged loss is reported by its absence, and logged
            self.log.warning("round=%d non-finite metrics not reported: %s", task.round, ", ".join(dropped))
            metrics = {name: value for name, value in metrics.items() if name not in dropped}
        try:
            self.refusals.call(lambda: self.client.report(task.round, metrics))
        except Rejected as exc:
            self.log.warning("round=%d report refused: %s", task.round, exc)
        current.reported = True
        self.state.save_record(record)

    def _upload(self, task: TrainTask, modality: str, url: str, body: bytes, current: RoundRecord) -> str:
        with self.reporter.step("upload", len(body), "bytes", round=task.round, modality=modality) as update:
            try:
                result = self.refusals.call(lambda: self.client.upload(url, body, progress=update))
                return "created" if result.created else "already stored (repeat)"
            except Rejected as exc:
                return self._refused(task, modality, exc, current)

    def _refused(self, task: TrainTask, modality: str, exc: Rejected, current: RoundRecord) -> str:
        """The outcome of a refused upload: a closed round or a conflict ends its delivery; anything
        else is an incompatibility the operator must see."""
        if exc.status == 410:
            current.closed = True
            self.log.warning("round=%d closed before this upload (deadline passed?): %s", task.round, exc.reason)
            return "round closed"
        if exc.status == 409:
            self.log.warning("round=%d a different %s upload is stored; the coordinator keeps it", task.round, modality)
            return "conflict: the first upload stands"
        raise AgentError(
            f"the coordinator refused this client's {modality} representations for round {task.round}: "
            f"HTTP {exc.status} ({exc.code}): {exc.reason}; check that agent and coordinator versions match"
        ) from exc
