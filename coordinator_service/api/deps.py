"""FastAPI dependencies, as ``Annotated`` aliases (DESIGN.md section 8)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Header, Path, Request
from sqlalchemy.orm import Session, sessionmaker

from coordinator_service import repositories as repo
from coordinator_service.artifacts import ArtifactStore
from coordinator_service.dashboard.sessions import CSRF_HEADER, SESSION_COOKIE, DashboardSessions
from coordinator_service.db.engine import transaction
from coordinator_service.db.models import Client, utcnow
from coordinator_service.errors import Forbidden, Invalid, Unauthorized
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
    dashboard_sessions: DashboardSessions = field(init=False)

    def __post_init__(self) -> None:
        self.dashboard_sessions = DashboardSessions(self.admin_token_hash, self.db)


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
# Ids are short and plain: anything else (a NUL byte, say, which PostgreSQL refuses) is a 422, not a 500.
ID_PATTERN = r"^[A-Za-z0-9_-]+$"
ID_MAX_LENGTH = 32
FederationId = Annotated[str, Path(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]
ClientId = Annotated[str, Path(min_length=1, max_length=ID_MAX_LENGTH, pattern=ID_PATTERN)]
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


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def require_admin(
    request: Request, services: ServicesDep, authorization: Annotated[str | None, Header()] = None
) -> None:
    """The admin token as ``Authorization: Bearer``, or else a dashboard login session (its cookie)."""
    if authorization is not None or SESSION_COOKIE not in request.cookies:
        if not token_matches(bearer_token(authorization), services.admin_token_hash):
            raise Unauthorized("this route needs the admin token")
        return
    if not services.dashboard_sessions.verify(request.cookies[SESSION_COOKIE]):
        raise Unauthorized("the dashboard session has expired or is not valid: log in again")
    if request.method not in SAFE_METHODS and request.headers.get(CSRF_HEADER) != "1":
        raise Forbidden(f"a change made with the dashboard session needs the header {CSRF_HEADER}: 1")


AdminDep = Annotated[None, Depends(require_admin)]


def require_join_token(services: ServicesDep, token: BearerToken, federation_id: FederationId) -> None:
    """The federation's join token (enrollment); an unknown federation is a 404."""
    with transaction(services.db) as session:
        federation = repo.get_federation(session, federation_id=federation_id)
        if not token_matches(token, federation.join_token_hash):
            raise Unauthorized("the join token is not valid for this federation")


JoinTokenDep = Annotated[None, Depends(require_join_token)]


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


# The credential dependencies, each as a check of a bare request (its headers and path, never its
# body): coordinator_service/api/before_body.py runs a route's before FastAPI reads the route's JSON body.
CredentialCheck = Callable[[Request, Services], object]


def _authorization(request: Request) -> str | None:
    return request.headers.get("authorization")


def _federation_id(request: Request) -> str:
    """The path's federation id, checked as the route would before it reaches the database."""
    value = str(request.path_params["federation_id"])
    if len(value) > ID_MAX_LENGTH or not re.fullmatch(ID_PATTERN, value):
        raise Invalid("the federation id is not valid")
    return value


CREDENTIAL_CHECKS: dict[Callable[..., object], CredentialCheck] = {
    require_admin: lambda request, services: require_admin(request, services, _authorization(request)),
    current_client: lambda request, services: current_client(
        services, bearer_token(_authorization(request)), _federation_id(request)
    ),
    require_join_token: lambda request, services: require_join_token(
        services, bearer_token(_authorization(request)), _federation_id(request)
    ),
}
