"""Enrollment and the client registry."""

from __future__ import annotations

import secrets

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from coordinator_service import repositories as repo
from coordinator_service.db.models import Client, Upload
from coordinator_service.errors import Conflict, Invalid
from coordinator_service.security import new_token, token_hash
from coordinator_service.services.rounds import close_if_complete
from creamfl.models import CLIENT_MODELS
from creamfl.models.registry import client_model_modalities
from shared_schemas.client import ClientCreate, ClientEnrolled, ClientPublic


def enroll(session: Session, *, federation_id: str, request: ClientCreate) -> ClientEnrolled:
    """A new client of the federation (its join token was checked: coordinator_service/api/deps.py)."""
    federation = repo.get_federation(session, federation_id=federation_id)
    if federation.state in ("stopped", "completed", "failed"):
        raise Conflict(f"federation {federation_id} is {federation.state}; it takes no new clients")
    if request.model in CLIENT_MODELS and set(client_model_modalities(request.model)) != set(request.modalities):
        raise Invalid(
            f"model {request.model} represents {list(client_model_modalities(request.model))}, "
            f"not {request.modalities}",
            model=request.model,
        )
    token = new_token("client")
    client = Client(
        id=f"cl-{secrets.token_hex(6)}",
        federation_id=federation.id,
        name=request.name,
        modalities=list(request.modalities),
        model=request.model,
        samples=request.samples,
        token_hash=token_hash(token),
        status="active",
    )
    session.add(client)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise Conflict(f"a client named {request.name!r} is already enrolled", name=request.name) from exc
    return ClientEnrolled(**describe(session, client).model_dump(), token=token)


def revoke(session: Session, *, federation_id: str, client_id: str) -> ClientPublic:
    """Revoke a client's token; an open round stops waiting for it (its accepted uploads still count)."""
    federation = repo.get_federation(session, federation_id=federation_id, lock=True)
    client = repo.get_client(session, federation_id=federation_id, client_id=client_id)
    client.status = "revoked"
    session.flush()
    current = repo.current_round(session, federation=federation)
    if current is not None:
        close_if_complete(session, federation, current)
    return describe(session, client)


def describe(session: Session, client: Client) -> ClientPublic:
    count, mean_weight = session.execute(
        select(func.count(Upload.id), func.avg(Upload.weight)).where(Upload.client_id == client.id)
    ).one()
    return ClientPublic(
        id=client.id,
        federation_id=client.federation_id,
        name=client.name,
        modalities=client.modalities,
        model=client.model,
        samples=client.samples,
        status=client.status,
        enrolled_at=client.enrolled_at,
        last_seen_at=client.last_seen_at,
        uploads=count or 0,
        mean_weight=float(mean_weight) if mean_weight is not None else None,
    )
