"""A worker: sweeps round deadlines, claims jobs, runs them with a renewed lease, commits the result
with the round transition. Runs in the coordinator process (a thread) or alone
(``creamfl-coordinator worker``) against the same database and artifact store.
"""

from __future__ import annotations

import functools
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from coordinator_service import repositories as repo
from coordinator_service.artifacts import ArtifactStore
from coordinator_service.datasets.registration import Registrar
from coordinator_service.db.engine import transaction
from coordinator_service.db.models import Artifact, Dataset, Federation, Job, Round, utcnow
from coordinator_service.faults import environment_fault, one_line
from coordinator_service.jobs import queue
from coordinator_service.jobs.compute import JobInput, JobRunner, UploadRef, resolve_device
from coordinator_service.jobs.results import JobOutput
from coordinator_service.leases import RenewedLease
from coordinator_service.metrics import JOB_SECONDS, JOBS_FINISHED
from coordinator_service.services.job_results import record_job_result
from coordinator_service.services.rounds import JOB_FOR_STATE, config_of, fail_round, handle_deadline
from coordinator_service.settings import Settings

log = logging.getLogger("creamfl.worker")


class Worker:
    """``clock``: the worker's now, for leases, backoffs and deadlines (tests move it instead of sleeping)."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        store: ArtifactStore,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.factory = factory
        self.settings = settings
        self.clock = clock
        # Fits the 64-character lease_owner column whatever the hostname (pod names can be long).
        self.owner = f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"
        self.runner = JobRunner(store, resolve_device(settings.device))
        self.registrar = Registrar(factory, store, settings, owner=self.owner, clock=clock)
        # Errors name paths under the data dir relative to it; any other path by its last part.
        self.path_roots = tuple(str(p.resolve()) for p in (settings.data_dir, settings.resolved_artifact_dir))

    def run_forever(self, stop: threading.Event) -> None:
        log.info("worker %s started on %s", self.owner, self.runner.device)
        next_gc = time.monotonic()
        while not stop.is_set():
            try:
                if time.monotonic() >= next_gc:
                    self.collect_garbage()
                    next_gc = time.monotonic() + self.settings.gc_interval_s
                busy = self.run_once()
            except Exception as exc:  # a broken database connection must not kill the worker thread
                if environment_fault(exc) is None:
                    log.exception("worker loop error")
                else:
                    log.warning("worker waits for its environment: %s", one_line(exc, roots=self.path_roots))
                busy = False
            if not busy:
                stop.wait(self.settings.worker_poll_s)

    def run_once(self) -> bool:
        """Sweep deadlines and abandoned jobs, then run at most one job. True when a job was run."""
        self.sweep_deadlines()
        self.sweep_abandoned_jobs()
        self.registrar.run_once()
        with transaction(self.factory) as session:
            job = queue.claim(
                session,
                owner=self.owner,
                lease_s=self.settings.lease_s,
                max_lease_losses=self.settings.max_lease_losses,
                now=self.clock(),
            )
            if job is None:
                return False
            job_id, kind = job.id, job.kind
            snapshot = self._snapshot(session, job)
        if snapshot is None:
            return True
        log.info("job %s (%s, round %s) claimed", job_id, kind, snapshot.round_number)
        started = time.perf_counter()
        try:
            renew = functools.partial(self.renew, job_id)
            with RenewedLease(renew, lease_s=self.settings.lease_s, name=f"job {job_id}"):
                output = self.runner.run(snapshot)
                if self.settings.job_hold_s:
                    time.sleep(self.settings.job_hold_s)
            committed = self._commit(job_id, output)
        except Exception as exc:
            log.exception("job %s (%s) failed", job_id, kind)  # the traceback: the log only
            self._record_failure(job_id, exc)
            return True
        JOB_SECONDS.labels(kind=kind).observe(time.perf_counter() - started)
        log.info("job %s (%s) %s", job_id, kind, "committed" if committed else "lost its lease; result dropped")
        return True

    def renew(self, job_id: int) -> bool:
        """Extend a running job's lease; False once another worker holds it."""
        with transaction(self.factory) as session:
            return queue.renew(
                session, job_id=job_id, owner=self.owner, lease_s=self.settings.lease_s, now=self.clock()
            )

    def collect_garbage(self) -> list[str]:
        """Delete artifact files no row references (left by a crash between a file's rename and its commit)."""
        with transaction(self.factory) as session:
            referenced = set(session.scalars(select(Artifact.sha256)).all())
        removed = self.runner.store.collect_garbage(referenced, min_age_s=self.settings.gc_min_age_s)
        if removed:
            log.info("removed %d orphan artifact files", len(removed))
        return removed

    def sweep_abandoned_jobs(self) -> None:
        """A job that lost its worker once more after ``max_lease_losses`` re-runs fails, and its round
        with it: it is what kills its worker."""
        limit, now = self.settings.max_lease_losses, self.clock()
        with transaction(self.factory) as session:
            due = queue.abandoned(session, max_lease_losses=limit, now=now)
        for federation_id, job_id in due:
            with transaction(self.factory) as session:
                federation = repo.get_federation(session, federation_id=federation_id, lock=True)
                job = queue.abandoned_job(session, job_id=job_id, max_lease_losses=limit, now=now)
                round_ = session.get(Round, job.round_id) if job is not None else None
                if job is None or round_ is None:
                    continue  # renewed or finished meanwhile
                job.lease_losses += 1
                reason = f"{job.kind} job lost its worker {job.lease_losses} times (killed, or its commit kept failing)"
                queue.fail(job, error=reason)
                fail_round(session, federation, round_, reason)
                JOBS_FINISHED.labels(kind=job.kind, state="failed").inc()
                log.error("job %s: %s", job_id, reason)

    def sweep_deadlines(self) -> None:
        now = self.clock()
        with transaction(self.factory) as session:
            due = [(r.federation_id, r.id) for r in repo.open_rounds_past_deadline(session, now=now)]
        for federation_id, round_id in due:
            with transaction(self.factory) as session:
                federation = repo.get_federation(session, federation_id=federation_id, lock=True)
                round_ = session.get(Round, round_id)
                if round_ is not None:
                    outcome = handle_deadline(session, federation, round_, now)
                    if outcome:
                        log.info("round %s of %s at its deadline: %s", round_.number, federation_id, outcome)

    def _snapshot(self, session: Session, job: Job) -> JobInput | None:
        """What the job needs; None (and the job closed) when it no longer applies."""
        federation = session.get(Federation, job.federation_id)
        round_ = session.get(Round, job.round_id)
        assert federation is not None and round_ is not None
        if federation.state in ("stopped", "failed"):
            queue.fail(job, error=f"the federation is {federation.state}")
            return None
        if JOB_FOR_STATE.get(round_.state) != job.kind:
            queue.finish(job, result={"skipped": f"round is {round_.state}"})
            return None
        # By client name: the round engine orders the ensemble's sum by name, as the simulator does.
        names = {c.id: c.name for c in repo.list_clients(session, federation_id=federation.id)}
        uploads = [
            UploadRef(client_id=u.client_id, client_name=names[u.client_id], modality=u.modality, sha256=u.sha256)  # type: ignore[arg-type]
            for u in repo.uploads(session, round_id=round_.id)
        ]
        return JobInput(
            kind=job.kind,
            federation_id=federation.id,
            config=config_of(federation),
            round_number=round_.number,
            subset=list(round_.subset),
            start_checkpoint=federation.latest_checkpoint,
            checkpoint_published=round_.checkpoint_published,
            checkpoint_trained=round_.checkpoint_trained,
            global_reps=round_.global_reps,  # type: ignore[arg-type]
            aggregates=round_.aggregates,  # type: ignore[arg-type]
            uploads=uploads,
            public_shards=_shards(session, federation.public_dataset_id),
            evaluation_shards=_shards(session, federation.evaluation_dataset_id),
            tokenizer_sha256=federation.tokenizer_sha256,
        )

    def _commit(self, job_id: int, output: JobOutput) -> bool:
        with transaction(self.factory) as session:
            job = session.get(Job, job_id)
            assert job is not None
            federation = repo.get_federation(session, federation_id=job.federation_id, lock=True)
            job = queue.still_owned(session, job_id=job_id, owner=self.owner)
            if job is None:
                return False
            for sha, kind in output.written.items():
                repo.record_artifact(session, sha256=sha, size=self.runner.store.size(sha), kind=kind)
            round_ = session.get(Round, job.round_id)
            assert round_ is not None
            queue.finish(job, result=output.result.summary())
            record_job_result(session, federation, round_, job.kind, output.result)
        JOBS_FINISHED.labels(kind=job.kind, state="done").inc()
        return True

    def _record_failure(self, job_id: int, exc: Exception) -> None:
        """A fault of the environment holds the job back without spending an attempt; the job's own
        error is retried after a backoff, and fails the round once its attempts are spent."""
        error = one_line(exc, roots=self.path_roots)
        fault = environment_fault(exc)
        with transaction(self.factory) as session:
            job = session.get(Job, job_id)
            assert job is not None
            federation = repo.get_federation(session, federation_id=job.federation_id, lock=True)
            job = queue.still_owned(session, job_id=job_id, owner=self.owner)
            if job is None:
                return
            if fault is not None:
                not_before = self._backoff(job.holds + 1)
                queue.hold(job, reason=f"{fault.reason} ({error})", error=error, not_before=not_before)
                log.warning("job %s (%s) held until %s: %s", job_id, job.kind, not_before.isoformat(), fault.reason)
            elif job.attempts < self.settings.max_job_attempts:
                queue.retry(job, error=error, not_before=self._backoff(job.attempts))
            else:
                queue.fail(job, error=error)
                round_ = session.get(Round, job.round_id)
                assert round_ is not None
                fail_round(session, federation, round_, f"{job.kind} job failed {job.attempts} times: {error}")
                JOBS_FINISHED.labels(kind=job.kind, state="failed").inc()

    def _backoff(self, n: int) -> datetime:
        delay = queue.backoff_s(n, base_s=self.settings.retry_base_s, max_s=self.settings.retry_max_s)
        return self.clock() + timedelta(seconds=delay)


def _shards(session: Session, dataset_id: str | None) -> tuple[str, ...]:
    """A registered dataset's shard hashes, in order (none for the built-in set)."""
    dataset = session.get(Dataset, dataset_id) if dataset_id is not None else None
    return tuple(shard["sha256"] for shard in (dataset.shards or [])) if dataset is not None else ()
