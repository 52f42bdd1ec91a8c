"""FastAPI dependencies, as ``Annotated`` aliases (DESIGN.md section 8)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Header, Path, Request
from sqlalchemy.orm import Session, sessionmaker

from coordinator_service import repositories as repo
from coordinator_service.artifacts import ArtifactStore
from coordinator_service.db.engine import transaction
from coordinator_service.db.models import Client, utcnow
from coordinator_service.errors import Forbidden, Unauthorized
from coordinator_service.security import token_hash, token_matches
from coordinator_service.settings import Settings
from coordinator_service.watcher import ChangeWatcher

LAST_SEEN_GRANULARITY = timedelta(seconds=10)


@dataclass
class Services:
    settings: Settings
    db: sessionmaker[Session]
    store: ArtifactStore
    admin_token_hash: str
    watcher: ChangeWatcher


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
FederationId = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")]
RoundNumber = Annotated[int, Path(ge=1, le=1_000_000)]


def get_db(services: ServicesDep) -> sessionmaker[Session]:
    return services.db


SessionDep = Annotated[sessionmaker[Session], Depends(get_db)]


def bearer_token(authorization: Annotated[str | None, Header()] = None) -> str:
    if not authorization:
        raise Unauthorized("missing Authorization: Bearer <token>")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return token.strip()


BearerToken = Annotated[str, Depends(bearer_token)]


def require_admin(services: ServicesDep, token: BearerToken) -> None:
    if not token_matches(token, services.admin_token_hash):
        raise Unauthorized("this route needs the admin token")


AdminDep = Annotated[None, Depends(require_admin)]


def current_client(services: ServicesDep, token: BearerToken, federation_id: FederationId) -> Client:
    """The client owning the token; it may act only inside its own federation."""
    with transaction(services.db) as session:
        client = repo.client_by_token_hash(session, token_hash=token_hash(token))
        if client is None or not token_matches(token, client.token_hash):
            raise Unauthorized("unknown client token")
        if client.federation_id != federation_id:
            raise Forbidden("this client belongs to another federation")
        if client.status != "active":
            raise Forbidden("this client was revoked")
        now = utcnow()
        if client.last_seen_at is None or now - client.last_seen_at > LAST_SEEN_GRANULARITY:
            client.last_seen_at = now
        return client


CurrentClient = Annotated[Client, Depends(current_client)]
