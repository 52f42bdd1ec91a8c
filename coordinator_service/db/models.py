"""The coordinator's tables. The database is the truth: every state change that matters is a row here.

Migrations in ``coordinator_service/migrations/`` create exactly these tables; a test compares the two.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both SQLite (which stores naive text) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


class Dataset(Base):
    """A registered image-caption dataset: its shards live in the artifact store.

    Registration runs as a leased background task (the row is its own job): ``items`` and ``bytes``
    show its progress; ``shards`` and ``sha256`` are set, with ``state`` ready, in one transaction
    at the end, so a failed or killed registration leaves nothing referenced behind.
    """

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    source: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), index=True)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    items: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64))
    shards: Mapped[list[Any] | None]  # [{"sha256", "size", "items"}], in order, once ready
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Federation(Base):
    __tablename__ = "federations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(16), index=True)
    config: Mapped[dict[str, Any]]
    join_token_hash: Mapped[str] = mapped_column(String(64))
    current_round: Mapped[int] = mapped_column(Integer, default=0)
    # The server model lives in the artifact store; these name its checkpoints (sha256).
    latest_checkpoint: Mapped[str | None] = mapped_column(String(64))
    best_checkpoint: Mapped[str | None] = mapped_column(String(64))
    best_rsum: Mapped[float | None] = mapped_column(Float)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    # The datasets it uses (a dataset in use cannot be deleted) and its client tokenizer's JSON
    # artifact (None: the built-in words).
    public_dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"), index=True)
    evaluation_dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"), index=True)
    tokenizer_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Client(Base):
    __tablename__ = "clients"
    __table_args__ = (UniqueConstraint("federation_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    federation_id: Mapped[str] = mapped_column(ForeignKey("federations.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    modalities: Mapped[list[Any]]
    model: Mapped[str] = mapped_column(String(100))
    samples: Mapped[int] = mapped_column(BigInteger)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    enrolled_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime | None]


class Round(Base):
    __tablename__ = "rounds"
    __table_args__ = (UniqueConstraint("federation_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    federation_id: Mapped[str] = mapped_column(ForeignKey("federations.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # re-openings after a missed quorum
    subset: Mapped[list[Any]]  # public-set rows, in payload row order
    deadline: Mapped[datetime | None]
    failure_reason: Mapped[str | None] = mapped_column(Text)
    # sha256 of artifacts: global representations, aggregated targets, server checkpoints.
    global_reps: Mapped[dict[str, Any] | None]
    aggregates: Mapped[dict[str, Any] | None]
    checkpoint_published: Mapped[str | None] = mapped_column(String(64))  # after the retrieval pass
    checkpoint_trained: Mapped[str | None] = mapped_column(String(64))  # after distillation
    weights: Mapped[dict[str, Any] | None]
    excluded: Mapped[list[Any] | None]  # uploads the aggregate left out: {client, modality, reason}
    metrics: Mapped[dict[str, Any] | None]
    server_stats: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RoundTransition(Base):
    """One row per state change of a round: the timeline, and proof that nothing ran twice."""

    __tablename__ = "round_transitions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), index=True)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Participant(Base):
    """A client selected for a round attempt."""

    __tablename__ = "participants"
    __table_args__ = (UniqueConstraint("round_id", "client_id", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), index=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    downloaded_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class Upload(Base):
    __tablename__ = "uploads"
    __table_args__ = (UniqueConstraint("round_id", "client_id", "modality"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), index=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id"), index=True)
    modality: Mapped[str] = mapped_column(String(8))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    rows: Mapped[int] = mapped_column(Integer)
    dim: Mapped[int] = mapped_column(Integer)
    dtype: Mapped[str] = mapped_column(String(16))
    weight: Mapped[float | None] = mapped_column(Float)  # mean ensemble weight, once aggregated
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Report(Base):
    __tablename__ = "reports"
    __table_args__ = (UniqueConstraint("round_id", "client_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), index=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.id"), index=True)
    metrics: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    # One job of each kind per round attempt: enqueueing is idempotent and nothing runs twice.
    __table_args__ = (UniqueConstraint("round_id", "kind", "round_attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    federation_id: Mapped[str] = mapped_column(ForeignKey("federations.id"), index=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id"), index=True)
    round_attempt: Mapped[int] = mapped_column(Integer, default=0)
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), index=True)
    # Runs that ended in the job's own error, or are running: a lost worker or a held environment
    # does not count (coordinator_service/jobs/queue.py).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_losses: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # workers it lost
    holds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # times the environment stopped it
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    not_before: Mapped[datetime | None]  # a retry's or a hold's backoff: not claimed before this
    held_reason: Mapped[str | None] = mapped_column(Text)  # why the environment holds it back (disk full, ...)
    error: Mapped[str | None] = mapped_column(Text)  # the last error, one line
    result: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class Artifact(Base):
    """A file in the content-addressed store. A file without a row is an orphan and is collected."""

    __tablename__ = "artifacts"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DashboardSession(Base):
    """A live dashboard login (coordinator_service/dashboard/sessions.py): its cookie is accepted while
    this row exists and has not expired; logout deletes it, on every replica and across restarts."""

    __tablename__ = "dashboard_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the id in the cookie
    expires_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
