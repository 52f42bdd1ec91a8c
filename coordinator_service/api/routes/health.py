"""Liveness, readiness and Prometheus metrics (no auth: they reveal nothing about federations)."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import select, text

from coordinator_service.api.deps import SessionDep
from coordinator_service.db.engine import transaction
from coordinator_service.db.models import Round
from coordinator_service.errors import CoordinatorError, ErrorResponse
from coordinator_service.metrics import ROUNDS_BY_STATE

router = APIRouter(tags=["health"])
ROUND_STATES = ("pending", "open", "aggregating", "training", "evaluating", "completed", "failed")


class NotReady(CoordinatorError):
    status, code = 503, "not_ready"


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorResponse, "description": "the database is not reachable"}})
def readyz(db: SessionDep) -> dict[str, str]:
    try:
        with transaction(db) as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:
        raise NotReady(f"the database is not reachable: {type(exc).__name__}") from exc
    return {"status": "ready"}


@router.get("/metrics", response_class=Response)
def metrics(db: SessionDep) -> Response:
    with transaction(db) as session:
        counts = Counter(session.scalars(select(Round.state)).all())
    for state in ROUND_STATES:
        ROUNDS_BY_STATE.labels(state=state).set(counts.get(state, 0))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
