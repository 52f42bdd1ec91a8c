"""The job queue: enqueue, claim with a lease, renew, finish.

A worker claims one job in a transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the IMMEDIATE
write lock on SQLite), runs it outside any transaction while renewing its lease, then commits the
job's result together with the round transition. A job whose lease expired (its worker died) is
claimed again; :func:`still_owned` makes the late worker's commit a no-op.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from coordinator_service.db.models import Job, Round, utcnow

JOB_KINDS = ("publish", "aggregate", "train", "evaluate")


def enqueue(session: Session, *, round_: Round, kind: str) -> Job:
    if kind not in JOB_KINDS:
        raise ValueError(f"unknown job kind {kind!r}")
    job = Job(
        federation_id=round_.federation_id,
        round_id=round_.id,
        round_attempt=round_.attempt,
        kind=kind,
        state="queued",
        attempts=0,
    )
    session.add(job)
    session.flush()
    return job


def claim(
    session: Session, *, owner: str, lease_s: float, max_attempts: int = 3, now: datetime | None = None
) -> Job | None:
    """The oldest runnable job (queued, or running with an expired lease), leased to ``owner``.

    A job whose workers died ``max_attempts`` times is not claimed again: :func:`abandoned` finds it."""
    now = now or utcnow()
    expired = (Job.state == "running") & (Job.lease_expires_at < now)
    query = (
        select(Job)
        .where(or_(Job.state == "queued", expired & (Job.attempts < max_attempts)))
        .order_by(Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    job = session.scalars(query).one_or_none()
    if job is None:
        return None
    job.state = "running"
    job.attempts += 1
    job.lease_owner = owner
    job.lease_expires_at = now + timedelta(seconds=lease_s)
    job.started_at = job.started_at or now
    return job


def abandoned(session: Session, *, max_attempts: int, now: datetime | None = None) -> list[tuple[str, int]]:
    """(federation id, job id) of jobs whose lease expired on their last allowed attempt."""
    query = select(Job.federation_id, Job.id).where(
        Job.state == "running", Job.lease_expires_at < (now or utcnow()), Job.attempts >= max_attempts
    )
    return [(federation_id, job_id) for federation_id, job_id in session.execute(query).all()]


def abandoned_job(session: Session, *, job_id: int, max_attempts: int) -> Job | None:
    """The job, locked, if it is still abandoned (its lease may have been renewed meanwhile)."""
    job = session.scalars(
        select(Job).where(Job.id == job_id).with_for_update().execution_options(populate_existing=True)
    ).one()
    expired = job.lease_expires_at is not None and job.lease_expires_at < utcnow()
    return job if job.state == "running" and expired and job.attempts >= max_attempts else None


def renew(session: Session, *, job_id: int, owner: str, lease_s: float) -> bool:
    """Extend the lease; False when someone else holds the job now (our lease had expired)."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner, Job.state == "running")
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def still_owned(session: Session, *, job_id: int, owner: str) -> Job | None:
    """The job, locked, if ``owner`` still holds it; None if the lease passed to another worker.

    ``populate_existing``: a copy of the job this session loaded before the lock (the worker reads
    it to find its federation) must not stand in for the row as locked, or a worker whose lease was
    taken over meanwhile would still see itself as the owner and commit.
    """
    query = select(Job).where(Job.id == job_id).with_for_update().execution_options(populate_existing=True)
    job = session.scalars(query).one()
    if job.state != "running" or job.lease_owner != owner:
        return None
    return job


def finish(job: Job, *, result: dict[str, object] | None = None) -> None:
    job.state = "done"
    job.result = result
    job.error = None
    job.finished_at = utcnow()
    job.lease_expires_at = None


def fail(job: Job, *, error: str, max_attempts: int) -> bool:
    """Record an error; the job is retried until ``max_attempts``. True when it failed for good."""
    job.error = error[:4000]
    job.lease_owner = None
    job.lease_expires_at = None
    if job.attempts >= max_attempts:
        job.state = "failed"
        job.finished_at = utcnow()
        return True
    job.state = "queued"
    return False
