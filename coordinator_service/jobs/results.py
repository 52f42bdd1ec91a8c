"""What each job hands back: a typed result the worker passes to
:func:`coordinator_service.services.job_results.record_job_result`, committed with the round's
transition. ``summary()`` is what the job row keeps of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from creamfl.evaluation import RetrievalMetrics
from creamfl.rounds import Exclusion, WeightStats
from shared_schemas.vocabulary import Modality


@dataclass(frozen=True)
class PublishResult:
    """Steps 1-2: the server after its retrieval pass, and its global representations (sha256 each)."""

    checkpoint: str
    global_reps: dict[Modality, str]
    retrieval_loss: float
    retrieval_seconds: float

    def server_stats(self) -> dict[str, float]:
        return {"retrieval_loss": self.retrieval_loss, "retrieval_seconds": self.retrieval_seconds}

    def summary(self) -> dict[str, Any]:
        """What the job row keeps of it (the job list shows it)."""
        return {"checkpoint": self.checkpoint, "global_reps": self.global_reps, "server": self.server_stats()}


@dataclass(frozen=True)
class AggregateResult:
    """Step 6: the targets (sha256 per modality), the ensemble weights and the uploads left out, clients named by id."""

    aggregates: dict[Modality, str]
    weights: dict[Modality, WeightStats]
    excluded: tuple[Exclusion, ...] = ()

    def excluded_records(self) -> list[dict[str, str]]:
        return [exclusion.as_dict() for exclusion in self.excluded]

    def summary(self) -> dict[str, Any]:
        return {"aggregates": self.aggregates, "excluded": self.excluded_records()}


@dataclass(frozen=True)
class TrainResult:
    """Step 7: the distilled server; no statistics when the schedule ran no second pass."""

    checkpoint: str
    distillation_loss: float | None = None
    distillation_seconds: float | None = None

    def server_stats(self) -> dict[str, float]:
        if self.distillation_loss is None or self.distillation_seconds is None:
            return {}
        return {"distillation_loss": self.distillation_loss, "distillation_seconds": self.distillation_seconds}

    def summary(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "server": self.server_stats()}


@dataclass(frozen=True)
class EvaluateResult:
    """Step 8: retrieval on the held-out set."""

    metrics: RetrievalMetrics

    def summary(self) -> dict[str, Any]:
        return {"metrics": self.metrics.as_dict()}


JobResult = PublishResult | AggregateResult | TrainResult | EvaluateResult


@dataclass(frozen=True)
class JobOutput:
    """A job's result and the artifacts it wrote (sha256 -> kind), recorded in the same transaction."""

    result: JobResult
    written: dict[str, str] = field(default_factory=dict)
