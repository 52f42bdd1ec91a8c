"""Recording a job's result: on its round and federation, then the round's next transition, all in
the caller's transaction (the worker's commit)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from coordinator_service import repositories as repo
from coordinator_service.db.models import Federation, Round
from coordinator_service.jobs.results import AggregateResult, EvaluateResult, JobResult, PublishResult, TrainResult
from coordinator_service.services.rounds import advance_after_job


def record_job_result(session: Session, federation: Federation, round_: Round, kind: str, result: JobResult) -> None:
    match result:
        case PublishResult():
            round_.checkpoint_published = result.checkpoint
            round_.global_reps = {str(m): sha for m, sha in result.global_reps.items()}
            round_.server_stats = result.server_stats()
        case AggregateResult():
            _record_weights(session, round_, result)
        case TrainResult():
            round_.checkpoint_trained = result.checkpoint
            round_.server_stats = {**(round_.server_stats or {}), **result.server_stats()}
        case EvaluateResult():
            round_.metrics = result.metrics.as_dict()
            federation.latest_checkpoint = round_.checkpoint_trained
            if federation.best_rsum is None or result.metrics.rsum > federation.best_rsum:
                federation.best_rsum = result.metrics.rsum
                federation.best_checkpoint = round_.checkpoint_trained
    advance_after_job(session, federation, round_, kind)


def _record_weights(session: Session, round_: Round, result: AggregateResult) -> None:
    """The targets, the weight summary, the uploads left out, and each upload's mean weight."""
    round_.aggregates = {str(m): sha for m, sha in result.aggregates.items()}
    round_.weights = {modality: stats.as_dict() for modality, stats in result.weights.items()}
    round_.excluded = result.excluded_records()
    for upload in repo.uploads(session, round_id=round_.id):
        stats = result.weights.get(upload.modality)  # type: ignore[call-overload]
        if stats is not None and upload.client_id in stats.clients:
            upload.weight = stats.mean_weight[stats.clients.index(upload.client_id)]
