"""The job queue: enqueue, claim with a lease, renew, finish, retry, hold.

A worker claims one job in a transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, the IMMEDIATE
write lock on SQLite), runs it outside any transaction while renewing its lease, then commits the
job's result together with the round transition. A job whose lease expired (its worker died) is
claimed again; :func:`still_owned` makes the late worker's commit a no-op.

Faults are not failures (DESIGN.md section 4). ``attempts`` counts only the runs that ended in the
job's own error: a job that raised is retried after an exponential backoff (``not_before``) until
``max_job_attempts``. A run cut short by its worker's death is counted in ``lease_losses`` instead:
the job is re-run after up to ``max_lease_losses`` of them, a much higher cap that only ends a job
that kills its worker every time. A run stopped by the environment (disk full, ...) is counted in
``holds``: the job is put back with a backoff and its ``held_reason``, for as long as it takes.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from coordinator_service.db.models import Job, Round, utcnow

JOB_KINDS = ("publish", "aggregate", "train", "evaluate")
_MAX_DOUBLINGS = 30  # past this the cap applies anyway; keeps 2**n a small float


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
    session: Session, *, owner: str, lease_s: float, max_lease_losses: int, now: datetime | None = None
) -> Job | None:
    """The oldest runnable job, leased to ``owner``: queued and due (past its ``not_before``), or
    running with an expired lease (its worker died: taken over without spending an attempt).

    A job that lost its worker ``max_lease_losses`` times is not claimed again: :func:`abandoned` finds it."""
    now = now or utcnow()
    due = (Job.state == "queued") & or_(Job.not_before.is_(None), Job.not_before <= now)
    expired = (Job.state == "running") & (Job.lease_expires_at < now) & (Job.lease_losses < max_lease_losses)
    query = select(Job).where(or_(due, expired)).order_by(Job.id).limit(1).with_for_update(skip_locked=True)
    job = session.scalars(query).one_or_none()
    if job is None:
        return None
    if job.state == "running":
        job.lease_losses += 1
    else:
        job.attempts += 1
    job.state = "running"
    job.lease_owner = owner
    job.lease_expires_at = now + timedelta(seconds=lease_s)
    job.started_at = job.started_at or now
    return job


def abandoned(session: Session, *, max_lease_losses: int, now: datetime) -> list[tuple[str, int]]:
    """(federation id, job id) of jobs whose lease expired after their last allowed lost worker."""
    query = select(Job.federation_id, Job.id).where(
        Job.state == "running", Job.lease_expires_at < now, Job.lease_losses >= max_lease_losses
    )
    return [(federation_id, job_id) for federation_id, job_id in session.execute(query).all()]


def abandoned_job(session: Session, *, job_id: int, max_lease_losses: int, now: datetime) -> Job | None:
    """The job, locked, if it is still abandoned (its lease may have been renewed meanwhile)."""
    job = session.scalars(
        select(Job).where(Job.id == job_id).with_for_update().execution_options(populate_existing=True)
    ).one()
    expired = job.lease_expires_at is not None and job.lease_expires_at < now
    return job if job.state == "running" and expired and job.lease_losses >= max_lease_losses else None


def renew(session: Session, *, job_id: int, owner: str, lease_s: float, now: datetime) -> bool:
    """Extend the lease; False when someone else holds the job now (our lease had expired)."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner, Job.state == "running")
        .values(lease_expires_at=now + timedelta(seconds=lease_s))
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
    job.error = job.held_reason = None
    job.finished_at = utcnow()
    job.lease_expires_at = None


def fail(job: Job, *, error: str) -> None:
    """The job failed for good with ``error`` (one line: see :func:`coordinator_service.faults.one_line`)."""
    _release(job, error)
    job.state = "failed"
    job.held_reason = None
    job.finished_at = utcnow()


def retry(job: Job, *, error: str, not_before: datetime) -> None:
    """The job raised ``error``; it runs again once ``not_before`` has passed."""
    _release(job, error)
    job.held_reason = None
    job.not_before = not_before


def hold(job: Job, *, reason: str, error: str, not_before: datetime) -> None:
    """The environment stopped the job (``reason``: disk full, ...): the run does not count as an
    attempt; the job is tried again once ``not_before`` has passed, and shows why it waits."""
    _release(job, error)
    job.attempts -= 1
    job.holds += 1
    job.held_reason = reason
    job.not_before = not_before


def requeue(job: Job) -> None:
    """A failed job runs again with fresh attempts (an admin resumed its round); its last error stays
    until it succeeds."""
    job.state = "queued"
    job.attempts = job.lease_losses = job.holds = 0
    job.lease_owner = job.lease_expires_at = job.not_before = job.held_reason = job.finished_at = None


def backoff_s(n: int, *, base_s: float, max_s: float) -> float:
    """The delay before the ``n``-th retry (1-based): ``base_s``, doubling each time, at most ``max_s``."""
    return min(base_s * 2.0 ** min(max(n - 1, 0), _MAX_DOUBLINGS), max_s)


def _release(job: Job, error: str) -> None:
    job.state = "queued"
    job.error = error
    job.lease_owner = None
    job.lease_expires_at = None
