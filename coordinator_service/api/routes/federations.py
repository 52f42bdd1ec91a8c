"""Admin: create, list, inspect and control federations; their rounds, clients and jobs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from coordinator_service import repositories as repo
from coordinator_service.api.before_body import CredentialsFirstRoute
from coordinator_service.api.deps import (
    ID_PATTERN,
    AdminDep,
    ClientId,
    FederationId,
    RoundNumber,
    ServicesDep,
    SessionDep,
)
from coordinator_service.api.downloads import ConditionsDep, artifact_response
from coordinator_service.db.engine import transaction
from coordinator_service.errors import NotFound
from coordinator_service.services import clients as client_service
from coordinator_service.services import federations as service
from coordinator_service.services.round_view import describe_round
from shared_schemas.client import ClientPublic
from shared_schemas.federation import FederationCreate, FederationCreated, FederationPublic
from shared_schemas.rounds import JobPublic, RoundPublic

router = APIRouter(tags=["federations (admin)"], route_class=CredentialsFirstRoute)


@router.post("/federations", status_code=status.HTTP_201_CREATED)
def create_federation(config: FederationCreate, services: ServicesDep, _: AdminDep) -> FederationCreated:
    """Create a federation; its datasets must be ready, and a trained tokenizer is trained here."""
    return service.create_federation(services.db, services.store, config)


@router.get("/federations")
def list_federations(db: SessionDep, _: AdminDep) -> list[FederationPublic]:
    with transaction(db) as session:
        return [service.describe(session, f) for f in repo.list_federations(session)]


@router.get("/federations/{federation_id}")
def get_federation(federation_id: FederationId, db: SessionDep, _: AdminDep) -> FederationPublic:
    with transaction(db) as session:
        return service.describe(session, repo.get_federation(session, federation_id=federation_id))


def _control(action: str) -> Callable[[str, sessionmaker[Session], None], FederationPublic]:
    def control(federation_id: FederationId, db: SessionDep, _: AdminDep) -> FederationPublic:
        with transaction(db) as session:
            return service.control(session, federation_id=federation_id, action=action)

    control.__name__ = f"{action}_federation"
    control.__doc__ = f"{action.capitalize()} the federation."
    return control


for _action in ("start", "pause", "stop", "resume"):
    router.add_api_route(f"/federations/{{federation_id}}/{_action}", _control(_action), methods=["POST"])


@router.get(
    "/federations/{federation_id}/checkpoints/{which}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, 206: {}, 304: {}},
)
def download_checkpoint(
    federation_id: FederationId,
    which: Literal["latest", "best"],
    services: ServicesDep,
    _: AdminDep,
    conditions: ConditionsDep,
) -> Response:
    """The server model and its optimizer state (safetensors; load with creamfl.checkpoint.load_training_state)."""
    with transaction(services.db) as session:
        federation = repo.get_federation(session, federation_id=federation_id)
        sha = federation.latest_checkpoint if which == "latest" else federation.best_checkpoint
    if sha is None:
        raise NotFound(f"federation {federation_id} has no {which} checkpoint yet: no round completed")
    return artifact_response(
        services.store,
        sha,
        size=services.store.size(sha),
        conditions=conditions,
        # The id is [A-Za-z0-9_-]: safe in a quoted filename.
        headers={"content-disposition": f'attachment; filename="{federation_id}-{which}.safetensors"'},
    )


@router.get("/federations/{federation_id}/rounds")
def list_rounds(federation_id: FederationId, db: SessionDep, _: AdminDep) -> list[RoundPublic]:
    with transaction(db) as session:
        repo.get_federation(session, federation_id=federation_id)
        return [describe_round(session, r) for r in repo.list_rounds(session, federation_id=federation_id)]


@router.get("/federations/{federation_id}/rounds/{number}")
def get_round(federation_id: FederationId, number: RoundNumber, db: SessionDep, _: AdminDep) -> RoundPublic:
    with transaction(db) as session:
        return describe_round(session, repo.get_round(session, federation_id=federation_id, number=number))


@router.get("/federations/{federation_id}/clients")
def list_clients(federation_id: FederationId, db: SessionDep, _: AdminDep) -> list[ClientPublic]:
    with transaction(db) as session:
        repo.get_federation(session, federation_id=federation_id)
        return [client_service.describe(session, c) for c in repo.list_clients(session, federation_id=federation_id)]


@router.post("/federations/{federation_id}/clients/{client_id}/revoke")
def revoke_client(federation_id: FederationId, client_id: ClientId, db: SessionDep, _: AdminDep) -> ClientPublic:
    with transaction(db) as session:
        return client_service.revoke(session, federation_id=federation_id, client_id=client_id)


@router.get("/jobs")
def list_jobs(
    db: SessionDep,
    _: AdminDep,
    federation_id: Annotated[str | None, Query(min_length=1, max_length=32, pattern=ID_PATTERN)] = None,
) -> list[JobPublic]:
    with transaction(db) as session:
        return [
            JobPublic(
                id=job.id,
                federation_id=job.federation_id,
                round=number,
                kind=job.kind,
                state=job.state,
                attempts=job.attempts,
                lease_losses=job.lease_losses,
                holds=job.holds,
                lease_owner=job.lease_owner,
                lease_expires_at=job.lease_expires_at,
                not_before=job.not_before,
                held_reason=job.held_reason,
                error=job.error,
                created_at=job.created_at,
                finished_at=job.finished_at,
            )
            for job, number in repo.list_jobs(session, federation_id=federation_id)
        ]
