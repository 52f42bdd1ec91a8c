"""Registering a dataset (DESIGN.md section 3). The dataset row is its own leased job: a worker claims
a registering row, streams the source's items into content-addressed shards (memory: one shard),
records progress after each shard, and in one transaction at the end records the shards and marks
the dataset ready.

Nothing is half-registered: shard files have no artifact row until that last transaction, so a
failed, deleted or abandoned registration leaves only files no row references, which it deletes (or,
when its worker was killed, the store's orphan collection does). Shards are deterministic, so a
registration whose worker died is simply claimed again once its lease expires and writes the same
shards; after ``max_job_attempts`` lost leases it fails.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from coordinator_service import repositories as repo
from coordinator_service.artifacts import ArtifactStore
from coordinator_service.datasets.items import CannotRegister, validated_items
from coordinator_service.datasets.roots import DatasetRoots
from coordinator_service.db.engine import transaction
from coordinator_service.db.models import Dataset, utcnow
from coordinator_service.leases import RenewedLease
from coordinator_service.settings import Settings
from creamfl.data.shards import MAX_SHARD_BYTES, MAX_SHARD_ITEMS, dataset_sha256, encode_shard, pack
from creamfl.data.sources import PairSource, parse_pair_source
from shared_schemas.datasets import ShardRef

log = logging.getLogger("creamfl.datasets")


class LeaseLost(Exception):
    """The dataset was deleted, or another worker holds it now: this attempt stops."""


@dataclass(frozen=True)
class Claim:
    dataset_id: str
    source: PairSource
    attempt: int


@dataclass(frozen=True)
class SourceStamp:
    """What tells that the source file changed: a rewrite changes its size or modification time."""

    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> SourceStamp:
        try:
            stat = path.stat()
        except OSError as exc:
            raise CannotRegister(f"cannot read the source file {path}: {exc.strerror or exc}") from None
        return cls(stat.st_size, stat.st_mtime_ns)


class Registrar:
    """Registers datasets for one worker; the worker calls :meth:`run_once` once per loop."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        store: ArtifactStore,
        settings: Settings,
        *,
        owner: str,
        shard_items: int = MAX_SHARD_ITEMS,
        shard_bytes: int = MAX_SHARD_BYTES,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.factory = factory
        self.store = store
        self.settings = settings
        self.owner = owner
        self.shard_items = shard_items
        self.shard_bytes = shard_bytes
        self.clock = clock

    def run_once(self) -> bool:
        """Claim one registering dataset and register it; False when there was none to claim."""
        claim = self._claim()
        if claim is None:
            return False
        log.info("dataset %s: registering (attempt %d)", claim.dataset_id, claim.attempt)
        attempt = _Attempt(self, claim)
        try:
            renew = functools.partial(self.renew, claim.dataset_id)
            with RenewedLease(renew, lease_s=self.settings.lease_s, name=f"dataset {claim.dataset_id}") as lease:
                attempt.run(lease)
        except CannotRegister as exc:
            self._fail(claim, str(exc))
            attempt.discard()
        except LeaseLost:
            log.warning("dataset %s: deleted or taken over while registering; stopped", claim.dataset_id)
            attempt.discard()
        except Exception as exc:  # the store or the database: worth another attempt, not a verdict
            log.exception("dataset %s: registration attempt %d stopped", claim.dataset_id, claim.attempt)
            attempt.discard()
            self._release(claim, f"attempt {claim.attempt} stopped on {type(exc).__name__} (see the worker's log)")
        return True

    def renew(self, dataset_id: str, **progress: int) -> bool:
        """Extend the registration's lease (and record its progress); False once it is not ours."""
        expires_at = self.clock() + timedelta(seconds=self.settings.lease_s)
        with transaction(self.factory) as session:
            return repo.renew_registration(
                session, dataset_id=dataset_id, owner=self.owner, expires_at=expires_at, **progress
            )

    def _claim(self) -> Claim | None:
        """The oldest registering dataset with a free or expired lease, leased to this worker; one whose
        workers were lost ``max_job_attempts`` times, or whose spec no longer parses, fails instead."""
        now = self.clock()
        with transaction(self.factory) as session:
            while (dataset := repo.registration_to_claim(session, now=now)) is not None:
                limit = self.settings.max_job_attempts
                try:
                    source = parse_pair_source(dataset.source)
                except ValueError as exc:
                    _mark_failed(dataset, str(exc))
                    continue
                if dataset.attempts >= limit:
                    last = f"; last: {dataset.failure_reason}" if dataset.failure_reason else ""
                    reason = (
                        f"registration did not finish in {limit} attempts (its worker was lost or hit an error){last}"
                    )
                    _mark_failed(dataset, reason)
                    log.error("dataset %s: %s", dataset.id, dataset.failure_reason)
                    continue
                dataset.attempts += 1
                dataset.lease_owner = self.owner
                dataset.lease_expires_at = now + timedelta(seconds=self.settings.lease_s)
                return Claim(dataset.id, source, dataset.attempts)
        return None

    def _fail(self, claim: Claim, reason: str) -> None:
        with transaction(self.factory) as session:
            dataset = repo.leased_dataset(session, dataset_id=claim.dataset_id, owner=self.owner)
            if dataset is not None:
                _mark_failed(dataset, reason)
        log.warning("dataset %s: registration failed: %s", claim.dataset_id, reason)

    def _release(self, claim: Claim, reason: str) -> None:
        """Give the lease back at once for another attempt, noting why this one stopped."""
        with transaction(self.factory) as session:
            dataset = repo.leased_dataset(session, dataset_id=claim.dataset_id, owner=self.owner)
            if dataset is not None:
                dataset.failure_reason = reason
                dataset.lease_owner = dataset.lease_expires_at = None


class _Attempt:
    """One attempt at registering a claimed dataset; ``shards`` are those it wrote so far."""

    def __init__(self, registrar: Registrar, claim: Claim) -> None:
        self.registrar = registrar
        self.claim = claim
        self.shards: list[ShardRef] = []

    def run(self, lease: RenewedLease) -> None:
        source, store = self.claim.source, self.registrar.store
        roots = DatasetRoots(self.registrar.settings.dataset_roots)
        for path in source.files():
            _check_inside(roots, path)
        stamp = SourceStamp.of(source.path)
        items = written = 0
        groups = pack(
            validated_items(source, roots), max_items=self.registrar.shard_items, max_bytes=self.registrar.shard_bytes
        )
        for group in groups:
            data = encode_shard(group)
            self.shards.append(ShardRef(sha256=store.put_bytes(data), size=len(data), items=len(group)))
            items, written = items + len(group), written + len(data)
            if lease.lost.is_set() or not self.registrar.renew(self.claim.dataset_id, items=items, bytes=written):
                raise LeaseLost(self.claim.dataset_id)
        if SourceStamp.of(source.path) != stamp:
            raise CannotRegister(f"the source file {source.path} changed while it was registered; register it again")
        self._check_still_stored()
        self._commit(items, written)

    def _check_still_stored(self) -> None:
        for shard in self.shards:
            if not self.registrar.store.exists(shard.sha256):
                min_age = self.registrar.settings.gc_min_age_s
                raise CannotRegister(
                    f"shard {shard.sha256} left the artifact store during the registration: the orphan "
                    f"collection spares unrecorded files for CREAMFL_GC_MIN_AGE_S ({min_age:g} s), less than "
                    "this registration took; raise it and register again"
                )

    def _commit(self, items: int, size: int) -> None:
        with transaction(self.registrar.factory) as session:
            dataset = repo.leased_dataset(session, dataset_id=self.claim.dataset_id, owner=self.registrar.owner)
            if dataset is None:
                raise LeaseLost(self.claim.dataset_id)
            for shard in {s.sha256: s for s in self.shards}.values():
                repo.record_artifact(session, sha256=shard.sha256, size=shard.size, kind="shard")
            dataset.shards = [shard.model_dump() for shard in self.shards]
            dataset.sha256 = dataset_sha256([shard.sha256 for shard in self.shards])
            dataset.items, dataset.bytes = items, size
            dataset.state, dataset.failure_reason = "ready", None
            dataset.lease_owner = dataset.lease_expires_at = None
        log.info("dataset %s: ready, %d items in %d shards", self.claim.dataset_id, items, len(self.shards))

    def discard(self) -> None:
        """Delete the shard files this attempt wrote that no artifact row references, unless another
        worker now registers the dataset (it writes the same shards and needs them)."""
        written = {shard.sha256 for shard in self.shards}
        if not written:
            return
        with transaction(self.registrar.factory) as session:
            dataset = session.get(Dataset, self.claim.dataset_id)
            if dataset is not None and dataset.state == "registering" and dataset.lease_owner != self.registrar.owner:
                return
            recorded = repo.artifacts_recorded(session, sha256s=written)
        for sha in written - recorded:
            self.registrar.store.delete(sha)


def _check_inside(roots: DatasetRoots, path: Path) -> None:
    """Checked again when the work starts: the roots may have changed since the dataset was created."""
    try:
        roots.check(path)
    except ValueError as exc:
        raise CannotRegister(str(exc)) from None


def _mark_failed(dataset: Dataset, reason: str) -> None:
    dataset.state, dataset.failure_reason = "failed", reason
    dataset.items = dataset.bytes = 0  # what it counted is gone
    dataset.lease_owner = dataset.lease_expires_at = None
