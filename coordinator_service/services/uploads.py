"""Client uploads: checked early, streamed into a staged artifact, validated, then stored and recorded at once.

The body never sits in memory whole: it is staged in the artifact store with its sha256 computed
on the way, and read back tensor by tensor to validate it. Idempotent: the same content again is a
200, different content for the same client, round and modality a 409.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.orm import Session

from coordinator_service import repositories as repo
from coordinator_service.artifacts import ArtifactStore, StagedArtifact
from coordinator_service.db.models import Client, Round, Upload
from coordinator_service.errors import Conflict, Forbidden, Gone, Invalid, PayloadTooLarge
from coordinator_service.payloads import PayloadInfo, validate_payload
from coordinator_service.services.rounds import close_if_complete, config_of

# A paused federation still takes uploads for its open round: those clients trained already.
FINISHED_FEDERATION_STATES = ("stopped", "completed", "failed")


@dataclass(frozen=True)
class UploadTarget:
    round_id: int
    subset: list[int]
    dim: int


@dataclass(frozen=True)
class UploadOutcome:
    created: bool
    upload: Upload
    round_number: int


def check_can_upload(
    session: Session, *, client: Client, number: int, modality: str, declared_sha256: str
) -> tuple[UploadTarget, Upload | None]:
    """Everything that can be refused before reading the body; also returns an identical earlier upload."""
    round_ = _open_round_for(session, client=client, number=number, modality=modality, declared_sha256=declared_sha256)
    existing = repo.upload(session, round_id=round_.id, client_id=client.id, modality=modality)
    federation = repo.get_federation(session, federation_id=client.federation_id)
    target = UploadTarget(round_id=round_.id, subset=list(round_.subset), dim=config_of(federation).embed_dim)
    return target, existing


def _open_round_for(session: Session, *, client: Client, number: int, modality: str, declared_sha256: str) -> Round:
    if modality not in client.modalities:
        raise Invalid(f"this client has no {modality} modality", modalities=client.modalities)
    round_ = repo.get_round(session, federation_id=client.federation_id, number=number)
    existing = repo.upload(session, round_id=round_.id, client_id=client.id, modality=modality)
    if existing is not None:
        if existing.sha256 != declared_sha256:
            raise Conflict(
                f"a different {modality} upload is already stored for round {number}", sha256=existing.sha256
            )
        return round_
    if round_.state != "open":
        raise Gone(f"round {number} is {round_.state}; it takes no uploads", state=round_.state)
    federation = repo.get_federation(session, federation_id=client.federation_id)
    if federation.state in FINISHED_FEDERATION_STATES:
        raise Gone(f"the federation is {federation.state}; it takes no uploads", state=federation.state)
    if repo.participant(session, round_=round_, client_id=client.id) is None:
        raise Forbidden(f"this client is not selected for round {number}")
    return round_


async def receive_body(chunks: AsyncIterator[bytes], store: ArtifactStore, *, max_bytes: int) -> StagedArtifact:
    """Stream into a staged artifact and finish it; on any error it is discarded."""
    staged = store.stage()
    try:
        async for chunk in chunks:
            if staged.size + len(chunk) > max_bytes:
                raise PayloadTooLarge(f"the upload exceeds {max_bytes} bytes", limit=max_bytes)
            staged.write(chunk)
        staged.finish()
    except BaseException:
        staged.discard()
        raise
    return staged


def validate_staged(staged: StagedArtifact, target: UploadTarget, modality: str) -> PayloadInfo:
    with staged.open() as handle:
        return validate_payload(handle, modality=modality, subset=target.subset, dim=target.dim)


def store_upload(
    session: Session,
    *,
    client: Client,
    number: int,
    modality: str,
    staged: StagedArtifact,
    info: PayloadInfo,
) -> UploadOutcome:
    """In one transaction: re-check under the federation lock, commit the staged artifact, record it,
    maybe close the round. The caller discards ``staged`` if it was not committed (refused, or a repeat)."""
    federation = repo.get_federation(session, federation_id=client.federation_id, lock=True)
    sha256 = staged.sha256
    round_ = _open_round_for(session, client=client, number=number, modality=modality, declared_sha256=sha256)
    existing = repo.upload(session, round_id=round_.id, client_id=client.id, modality=modality)
    if existing is not None:
        return UploadOutcome(created=False, upload=existing, round_number=number)
    staged.commit()
    repo.record_artifact(session, sha256=sha256, size=staged.size, kind="upload")
    upload = Upload(
        round_id=round_.id,
        client_id=client.id,
        modality=modality,
        sha256=sha256,
        size=staged.size,
        rows=info.rows,
        dim=info.dim,
        dtype=info.dtype,
    )
    session.add(upload)
    session.flush()
    close_if_complete(session, federation, round_)
    return UploadOutcome(created=True, upload=upload, round_number=number)
