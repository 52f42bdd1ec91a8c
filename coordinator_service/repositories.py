"""Queries, as keyword-only functions over a session. ``lock=True`` takes a row lock (FOR UPDATE) on
PostgreSQL; on SQLite the IMMEDIATE transaction already serialises writers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Select, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from coordinator_service.db.models import (
    Artifact,
    Client,
    Dataset,
    Federation,
    Job,
    Participant,
    Report,
    Round,
    RoundTransition,
    Upload,
    utcnow,
)
from coordinator_service.errors import NotFound

T = TypeVar("T")


def get_federation(session: Session, *, federation_id: str, lock: bool = False) -> Federation:
    query = select(Federation).where(Federation.id == federation_id)
    federation = session.scalars(_locked(query) if lock else query).one_or_none()
    if federation is None:
        raise NotFound(f"no federation {federation_id!r}", federation_id=federation_id)
    return federation


def record_artifact(session: Session, *, sha256: str, size: int, kind: str) -> None:
    """A row for a stored artifact, unless it has one. Content-addressed, so two federations (or two
    clients) may store the same bytes at once: the second insert is a no-op, not a conflict."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    session.execute(
        insert(Artifact).values(sha256=sha256, size=size, kind=kind, created_at=utcnow()).on_conflict_do_nothing()
    )


def _locked(query: Select[T]) -> Select[T]:
    """FOR UPDATE, and the row as read under the lock even where the session holds an older copy."""
    return query.with_for_update().execution_options(populate_existing=True)


def list_federations(session: Session) -> Sequence[Federation]:
    return session.scalars(select(Federation).order_by(Federation.created_at, Federation.id)).all()


def get_round(session: Session, *, federation_id: str, number: int, lock: bool = False) -> Round:
    query = select(Round).where(Round.federation_id == federation_id, Round.number == number)
    found = session.scalars(_locked(query) if lock else query).one_or_none()
    if found is None:
        raise NotFound(f"federation {federation_id!r} has no round {number}", round=number)
    return found


def current_round(session: Session, *, federation: Federation, lock: bool = False) -> Round | None:
    if federation.current_round == 0:
        return None
    return get_round(session, federation_id=federation.id, number=federation.current_round, lock=lock)


def list_rounds(session: Session, *, federation_id: str) -> Sequence[Round]:
    return session.scalars(select(Round).where(Round.federation_id == federation_id).order_by(Round.number)).all()


def client_by_token_hash(session: Session, *, token_hash: str) -> Client | None:
    return session.scalars(select(Client).where(Client.token_hash == token_hash)).one_or_none()


def get_client(session: Session, *, federation_id: str, client_id: str) -> Client:
    client = session.get(Client, client_id)
    if client is None or client.federation_id != federation_id:
        raise NotFound(f"federation {federation_id!r} has no client {client_id!r}", client_id=client_id)
    return client


def list_clients(session: Session, *, federation_id: str) -> Sequence[Client]:
    return session.scalars(
        select(Client).where(Client.federation_id == federation_id).order_by(Client.enrolled_at, Client.id)
    ).all()


def count_clients(session: Session, *, federation_id: str) -> int:
    return session.scalar(select(func.count()).select_from(Client).where(Client.federation_id == federation_id)) or 0


def participants(session: Session, *, round_: Round) -> Sequence[Participant]:
    return session.scalars(
        select(Participant)
        .where(Participant.round_id == round_.id, Participant.attempt == round_.attempt)
        .order_by(Participant.id)
    ).all()


def participant(session: Session, *, round_: Round, client_id: str) -> Participant | None:
    return session.scalars(
        select(Participant).where(
            Participant.round_id == round_.id,
            Participant.attempt == round_.attempt,
            Participant.client_id == client_id,
        )
    ).one_or_none()


def uploads(session: Session, *, round_id: int) -> Sequence[Upload]:
    return session.scalars(select(Upload).where(Upload.round_id == round_id).order_by(Upload.id)).all()


def upload(session: Session, *, round_id: int, client_id: str, modality: str) -> Upload | None:
    return session.scalars(
        select(Upload).where(Upload.round_id == round_id, Upload.client_id == client_id, Upload.modality == modality)
    ).one_or_none()


def transitions(session: Session, *, round_id: int) -> Sequence[RoundTransition]:
    return session.scalars(
        select(RoundTransition).where(RoundTransition.round_id == round_id).order_by(RoundTransition.id)
    ).all()


def report(session: Session, *, round_id: int, client_id: str) -> Report | None:
    query = select(Report).where(Report.round_id == round_id, Report.client_id == client_id)
    return session.scalars(query).one_or_none()


def round_job(session: Session, *, round_: Round, kind: str) -> Job | None:
    """The round's job of ``kind`` for its current attempt (one at most: enqueueing is idempotent)."""
    query = select(Job).where(Job.round_id == round_.id, Job.kind == kind, Job.round_attempt == round_.attempt)
    return session.scalars(query).one_or_none()


def list_jobs(session: Session, *, federation_id: str | None = None, limit: int = 200) -> list[tuple[Job, int]]:
    """The newest jobs with their round numbers."""
    query = select(Job, Round.number).join(Round, Round.id == Job.round_id).order_by(Job.id.desc()).limit(limit)
    if federation_id is not None:
        query = query.where(Job.federation_id == federation_id)
    return [(job, number) for job, number in session.execute(query).all()]


def open_rounds_past_deadline(session: Session, *, now: object) -> Sequence[Round]:
    """Open rounds of running federations whose deadline passed (a paused federation's clock stops)."""
    query = (
        select(Round)
        .join(Federation, Federation.id == Round.federation_id)
        .where(Round.state == "open", Round.deadline < now, Federation.state == "running")
    )
    return session.scalars(query).all()


# --- datasets -------------------------------------------------------------------------------------


def get_dataset(session: Session, *, dataset_id: str, lock: bool = False) -> Dataset:
    query = select(Dataset).where(Dataset.id == dataset_id)
    dataset = session.scalars(_locked(query) if lock else query).one_or_none()
    if dataset is None:
        raise NotFound(f"no dataset {dataset_id!r}", dataset_id=dataset_id)
    return dataset


def dataset_by_name(session: Session, *, name: str) -> Dataset | None:
    return session.scalars(select(Dataset).where(Dataset.name == name)).one_or_none()


def list_datasets(session: Session, *, limit: int, offset: int) -> Sequence[Dataset]:
    """Newest first."""
    query = select(Dataset).order_by(Dataset.created_at.desc(), Dataset.id.desc()).limit(limit).offset(offset)
    return session.scalars(query).all()


def federations_using_dataset(session: Session, *, dataset_id: str) -> list[str]:
    query = select(Federation.id).where(
        (Federation.public_dataset_id == dataset_id) | (Federation.evaluation_dataset_id == dataset_id)
    )
    return sorted(session.scalars(query).all())


def shards_of_other_datasets(session: Session, *, dataset_id: str) -> set[str]:
    """The shard hashes every other registered dataset holds (two datasets may share a shard)."""
    manifests = session.scalars(select(Dataset.shards).where(Dataset.id != dataset_id, Dataset.shards.is_not(None)))
    return {shard["sha256"] for shards in manifests for shard in shards or []}


def delete_artifact_rows(session: Session, *, sha256s: Iterable[str]) -> None:
    session.execute(delete(Artifact).where(Artifact.sha256.in_(list(sha256s))))


def artifacts_recorded(session: Session, *, sha256s: Iterable[str]) -> set[str]:
    """Which of ``sha256s`` have an artifact row (the others are files no row references)."""
    return set(session.scalars(select(Artifact.sha256).where(Artifact.sha256.in_(list(sha256s)))).all())


def registration_to_claim(session: Session, *, now: datetime) -> Dataset | None:
    """The oldest registering dataset whose lease is free or expired, locked (skipping rows another
    worker holds locked)."""
    free = Dataset.lease_owner.is_(None) | (Dataset.lease_expires_at < now)
    query = (
        select(Dataset)
        .where(Dataset.state == "registering", free)
        .order_by(Dataset.created_at, Dataset.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    return session.scalars(query).one_or_none()


def renew_registration(session: Session, *, dataset_id: str, owner: str, expires_at: datetime, **progress: int) -> bool:
    """Extend ``owner``'s lease (and record ``items``/``bytes`` progress); False when the dataset is
    gone or no longer registering under this owner."""
    result = session.execute(
        update(Dataset)
        .where(Dataset.id == dataset_id, Dataset.lease_owner == owner, Dataset.state == "registering")
        .values(lease_expires_at=expires_at, **progress)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def leased_dataset(session: Session, *, dataset_id: str, owner: str) -> Dataset | None:
    """The dataset, locked, if it is still registering under ``owner``'s lease."""
    dataset = session.scalars(_locked(select(Dataset).where(Dataset.id == dataset_id))).one_or_none()
    if dataset is None or dataset.state != "registering" or dataset.lease_owner != owner:
        return None
    return dataset
