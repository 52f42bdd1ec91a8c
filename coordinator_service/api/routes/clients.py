"""Client-facing routes: enroll, the long-polled task, downloads, uploads, reports (the public set: public_set.py)."""

from __future__ import annotations

import re
import time
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from sqlalchemy import update
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from coordinator_service import repositories as repo
from coordinator_service.api.before_body import CredentialsFirstRoute
from coordinator_service.api.deps import (
    CurrentClient,
    FederationId,
    JoinTokenDep,
    RoundNumber,
    Services,
    ServicesDep,
    SessionDep,
)
from coordinator_service.api.downloads import ConditionsDep, artifact_response
from coordinator_service.artifacts import StagedArtifact
from coordinator_service.db.engine import transaction
from coordinator_service.db.models import Client, Participant, Report, Upload
from coordinator_service.errors import (
    Forbidden,
    Invalid,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from coordinator_service.metrics import DOWNLOAD_BYTES, LONG_POLLS, UPLOAD_BYTES, UPLOADS
from coordinator_service.payloads import PayloadInfo
from coordinator_service.services import clients as client_service
from coordinator_service.services import uploads as upload_service
from coordinator_service.services.tasks import next_task
from shared_schemas.client import ClientCreate, ClientEnrolled, Modality
from shared_schemas.rounds import DoneTask, ReportCreate, ReportPublic, TrainTask, UploadPublic, WaitTask

router = APIRouter(tags=["clients"], route_class=CredentialsFirstRoute)
ModalityPath = Annotated[Modality, PathParam()]
SHA256 = re.compile(r"^[0-9a-f]{64}$")
UPLOAD_TYPES = ("application/octet-stream", "application/vnd.safetensors")
DISCONNECT_CHECK_S = 5.0


@router.post("/federations/{federation_id}/clients", status_code=status.HTTP_201_CREATED)
def enroll(federation_id: FederationId, request: ClientCreate, _: JoinTokenDep, db: SessionDep) -> ClientEnrolled:
    """Enroll with the federation's join token; the returned client token is shown once."""
    with transaction(db) as session:
        return client_service.enroll(session, federation_id=federation_id, request=request)


@router.get(
    "/federations/{federation_id}/tasks/next",
    response_model=TrainTask | WaitTask | DoneTask,
    responses={200: {"description": "train, wait or done"}},
)
async def next_task_route(
    federation_id: FederationId,
    request: Request,
    client: CurrentClient,
    services: ServicesDep,
    wait: Annotated[float, Query(ge=0, le=300, description="long-poll up to this many seconds")] = 0.0,
) -> TrainTask | WaitTask | DoneTask:
    """Train, wait or done; with ``wait``, holds the request until there is work (or the time is up)."""
    deadline = time.monotonic() + min(wait, services.settings.long_poll_max_s)
    LONG_POLLS.inc()
    try:
        while True:
            task = await run_in_threadpool(_task_now, services, client)
            remaining = deadline - time.monotonic()
            if task is not None or remaining <= 0 or services.watcher.closing:
                return task or WaitTask(retry_after=1.0)
            # Wake on a change, and every few seconds to notice a client that hung up.
            await services.watcher.wait(min(remaining, DISCONNECT_CHECK_S))
            if await request.is_disconnected():
                return WaitTask(retry_after=1.0)
    finally:
        LONG_POLLS.dec()


def _task_now(services: Services, client: Client) -> TrainTask | DoneTask | None:
    with transaction(services.db) as session:
        return next_task(session, client=client)


@router.get(
    "/federations/{federation_id}/rounds/{number}/global/{modality}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}, 206: {}, 304: {}},
)
def download_global(
    federation_id: FederationId,
    number: RoundNumber,
    modality: ModalityPath,
    client: CurrentClient,
    services: ServicesDep,
    conditions: ConditionsDep,
) -> Response:
    """The round's global representations of one modality (safetensors), with ETag and Range."""
    with transaction(services.db) as session:
        round_ = repo.get_round(session, federation_id=federation_id, number=number)
        if not round_.global_reps or modality not in round_.global_reps:
            raise NotFound(f"round {number} has not published its {modality} representations yet")
        sha = round_.global_reps[modality]
        participant = repo.participant(session, round_=round_, client_id=client.id)
        size = services.store.size(sha)
        whole = conditions.whole(sha)  # only a whole download counts
        if participant is not None and whole:
            # Incremented in SQL: concurrent downloads must not lose a count.
            session.execute(
                update(Participant)
                .where(Participant.id == participant.id)
                .values(downloaded_bytes=Participant.downloaded_bytes + size)
            )
    response = artifact_response(
        services.store,
        sha,
        size=size,
        conditions=conditions,
        headers={"cache-control": "private, max-age=86400, immutable"},
    )
    if whole:
        DOWNLOAD_BYTES.inc(size)
    return response


@router.put(
    "/federations/{federation_id}/rounds/{number}/uploads/{modality}",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": UploadPublic, "description": "the same content was already stored (a repeat)"}},
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string"}}}}
    },
)
async def upload(
    federation_id: FederationId,
    number: RoundNumber,
    modality: ModalityPath,
    request: Request,
    response: Response,
    client: CurrentClient,
    services: ServicesDep,
    content_sha256: Annotated[str, Header(description="hex sha256 of the body")],
    content_type: Annotated[str | None, Header()] = None,
    content_length: Annotated[int | None, Header(ge=0)] = None,
) -> UploadPublic:
    """A safetensors payload ``[n, d]`` of this client's representations; idempotent."""
    declared = content_sha256.strip().lower()
    if not SHA256.match(declared):
        raise Invalid("Content-SHA256 must be 64 hex digits")
    if (content_type or "").split(";")[0].strip().lower() not in UPLOAD_TYPES:
        raise UnsupportedMediaType(f"send the payload as one of {', '.join(UPLOAD_TYPES)}")
    limit = services.settings.max_upload_bytes
    if content_length is not None and content_length > limit:
        raise PayloadTooLarge(f"the upload exceeds {limit} bytes", limit=limit)
    target, existing = await run_in_threadpool(_precheck, services, client, number, modality, declared)
    if existing is not None:
        response.status_code = status.HTTP_200_OK
        return _upload_public(existing, number)
    try:
        staged = await upload_service.receive_body(request.stream(), services.store, max_bytes=limit)
    except ClientDisconnect:  # nothing was stored: the staged bytes are discarded
        UPLOADS.labels(modality=modality, outcome="disconnected").inc()
        raise
    with staged:  # discarded unless committed: refused, or a repeat
        if staged.sha256 != declared:
            raise Invalid("the body's sha256 does not match Content-SHA256", declared=declared, actual=staged.sha256)
        info = await run_in_threadpool(upload_service.validate_staged, staged, target, modality)
        outcome = await run_in_threadpool(_store, services, client, number, modality, staged, info)
    UPLOADS.labels(modality=modality, outcome="created" if outcome.created else "repeat").inc()
    if outcome.created:
        UPLOAD_BYTES.inc(staged.size)
        services.watcher.notify()
    else:
        response.status_code = status.HTTP_200_OK
    return _upload_public(outcome.upload, number)


def _precheck(
    services: Services, client: Client, number: int, modality: str, declared: str
) -> tuple[upload_service.UploadTarget, Upload | None]:
    with transaction(services.db) as session:
        return upload_service.check_can_upload(
            session, client=client, number=number, modality=modality, declared_sha256=declared
        )


def _store(
    services: Services, client: Client, number: int, modality: str, staged: StagedArtifact, info: PayloadInfo
) -> upload_service.UploadOutcome:
    with transaction(services.db) as session:
        return upload_service.store_upload(
            session, client=client, number=number, modality=modality, staged=staged, info=info
        )


def _upload_public(upload: Upload, number: int) -> UploadPublic:
    return UploadPublic(
        round=number,
        client_id=upload.client_id,
        modality=upload.modality,
        sha256=upload.sha256,
        size=upload.size,
        rows=upload.rows,
        dim=upload.dim,
        dtype=upload.dtype,
        created_at=upload.created_at,
    )


@router.post("/federations/{federation_id}/rounds/{number}/reports", status_code=status.HTTP_201_CREATED)
def report(
    federation_id: FederationId, number: RoundNumber, body: ReportCreate, client: CurrentClient, db: SessionDep
) -> ReportPublic:
    """Local metrics of this client for a round it takes part in (a repeat replaces the earlier report)."""
    with transaction(db) as session:
        round_ = repo.get_round(session, federation_id=federation_id, number=number)
        if repo.participant(session, round_=round_, client_id=client.id) is None and not any(
            u.client_id == client.id for u in repo.uploads(session, round_id=round_.id)
        ):
            raise Forbidden(f"this client does not take part in round {number}")
        stored = repo.report(session, round_id=round_.id, client_id=client.id)
        if stored is None:
            stored = Report(round_id=round_.id, client_id=client.id, metrics=body.metrics)
            session.add(stored)
        else:
            stored.metrics = body.metrics
        session.flush()
        return ReportPublic(round=number, client_id=client.id, metrics=stored.metrics, created_at=stored.created_at)
