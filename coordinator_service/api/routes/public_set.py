"""Client routes of the public set: its manifest, its shards and the federation's tokenizer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse

from coordinator_service import repositories as repo
from coordinator_service.api.before_body import CredentialsFirstRoute
from coordinator_service.api.deps import CurrentClient, FederationId, ServicesDep
from coordinator_service.api.downloads import ConditionsDep, artifact_response
from coordinator_service.db.engine import transaction
from coordinator_service.services import public_set as service
from shared_schemas.datasets import SHA256_PATTERN, PublicSetManifest

router = APIRouter(tags=["clients"], route_class=CredentialsFirstRoute)
Sha256Path = Annotated[str, PathParam(pattern=SHA256_PATTERN)]
DOWNLOAD = {
    "response_class": StreamingResponse,
    "responses": {200: {"content": {"application/octet-stream": {}}}, 206: {}, 304: {}},
}
# Content-addressed: a shard's or a tokenizer's bytes never change under its name.
IMMUTABLE = {"cache-control": "private, max-age=31536000, immutable"}


@router.get("/federations/{federation_id}/public-set")
def public_set(federation_id: FederationId, client: CurrentClient, services: ServicesDep) -> PublicSetManifest:
    """The public set's manifest: the built-in spec to regenerate (and its hashes), or the shards to
    download; the federation's dimension, image size and client tokenizer."""
    with transaction(services.db) as session:
        federation = repo.get_federation(session, federation_id=federation_id)
        return service.manifest(session, services.store, federation)


@router.get("/federations/{federation_id}/public-set/shards/{sha256}", **DOWNLOAD)  # type: ignore[arg-type]
def download_shard(
    federation_id: FederationId,
    sha256: Sha256Path,
    client: CurrentClient,
    services: ServicesDep,
    conditions: ConditionsDep,
) -> Response:
    """One shard of the public dataset, with ETag and Range (resumable)."""
    with transaction(services.db) as session:
        size = service.shard_size(session, repo.get_federation(session, federation_id=federation_id), sha256)
    return artifact_response(
        services.store,
        sha256,
        size=size,
        conditions=conditions,
        headers=IMMUTABLE,
    )


@router.get("/federations/{federation_id}/public-set/tokenizer", **DOWNLOAD)  # type: ignore[arg-type]
def download_tokenizer(
    federation_id: FederationId,
    client: CurrentClient,
    services: ServicesDep,
    conditions: ConditionsDep,
) -> Response:
    """The federation's WordPiece client tokenizer (JSON of the ``tokenizers`` library); 404 for the built-in words."""
    with transaction(services.db) as session:
        sha = service.tokenizer_artifact(repo.get_federation(session, federation_id=federation_id))
    return artifact_response(
        services.store,
        sha,
        size=services.store.size(sha),
        conditions=conditions,
        headers=IMMUTABLE,
    )
