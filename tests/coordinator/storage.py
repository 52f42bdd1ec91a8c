"""The coordinator's database and artifact store read from outside its process, and the checks
the crash and chaos tests make on them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from coordinator_service.artifacts import LocalArtifactStore
from coordinator_service.db.models import Artifact, Dataset, Federation, Job, Round, Upload
from coordinator_service.launcher import CoordinatorProcess
from tests.coordinator.helpers import ADMIN, API, ROUND_STATES, round_detail


@dataclass
class Storage:
    """The coordinator's database and artifact store, read from outside the process."""

    url: str
    store: LocalArtifactStore

    def session(self) -> Session:
        return Session(create_engine(self.url, poolclass=NullPool))

    def recorded_artifacts(self) -> set[str]:
        with self.session() as session:
            return set(session.scalars(select(Artifact.sha256)))

    def stored_files(self) -> set[str]:
        return {artifact.sha256 for artifact in self.store.list_stored()}

    def orphans(self) -> set[str]:
        """Files under their hash that no database row records (a write whose commit never came)."""
        return self.stored_files() - self.recorded_artifacts()

    def temp_files(self) -> list[str]:
        return self.store.staging_files()

    def uploads(self, federation_id: str, number: int) -> dict[tuple[str, str], str]:
        """(client id, modality) -> sha256 of the round's recorded uploads."""
        with self.session() as session:
            round_id = session.scalars(
                select(Round.id).where(Round.federation_id == federation_id, Round.number == number)
            ).one()
            rows = session.scalars(select(Upload).where(Upload.round_id == round_id)).all()
            return {(row.client_id, row.modality): row.sha256 for row in rows}

    def job(self, federation_id: str, number: int, kind: str) -> Job:
        with self.session() as session:
            return session.scalars(
                select(Job)
                .join(Round, Round.id == Job.round_id)
                .where(Job.federation_id == federation_id, Round.number == number, Job.kind == kind)
            ).one()

    def round_state(self, federation_id: str, number: int) -> str:
        with self.session() as session:
            return session.scalars(
                select(Round.state).where(Round.federation_id == federation_id, Round.number == number)
            ).one()

    def referenced(self) -> dict[str, str]:
        """Every sha256 a row names -> where: uploads, global reps, aggregates, checkpoints, the
        client tokenizer, dataset shards."""
        names: dict[str, str] = {}
        with self.session() as session:
            for up in session.scalars(select(Upload)):
                names[up.sha256] = f"upload {up.client_id}/{up.modality}"
            for round_ in session.scalars(select(Round)):
                for what, value in (("global", round_.global_reps), ("aggregate", round_.aggregates)):
                    for modality, sha in (value or {}).items():
                        names[sha] = f"round {round_.number} {what} {modality}"
                for what, sha in (("published", round_.checkpoint_published), ("trained", round_.checkpoint_trained)):
                    if sha is not None:
                        names[sha] = f"round {round_.number} checkpoint {what}"
            for federation in session.scalars(select(Federation)):
                for what, sha in (
                    ("checkpoint latest", federation.latest_checkpoint),
                    ("checkpoint best", federation.best_checkpoint),
                    ("tokenizer", federation.tokenizer_sha256),
                ):
                    if sha is not None:
                        names[sha] = f"federation {what}"
            for dataset in session.scalars(select(Dataset)):
                for shard in dataset.shards or []:
                    names[shard["sha256"]] = f"dataset {dataset.id} shard"
        return names

    def assert_consistent(self) -> None:
        """Every artifact a row names is recorded, on disk and intact."""
        recorded = self.recorded_artifacts()
        for sha, where in self.referenced().items():
            assert sha in recorded, f"{where}: {sha} has no artifact row"
            assert self.store.exists(sha), f"{where}: {sha} is missing from the store"
            assert sha256_of(self.store.read(sha)) == sha, f"{where}: {sha} is corrupt"


def storage_of(coordinator: CoordinatorProcess) -> Storage:
    return Storage(coordinator.database_url, LocalArtifactStore(coordinator.data_dir / "artifacts"))


def jobs_of(http: httpx.Client, federation_id: str) -> list[dict[str, Any]]:
    response = http.get(f"{API}/jobs", params={"federation_id": federation_id}, headers=ADMIN)
    assert response.status_code == 200, response.text
    jobs: list[dict[str, Any]] = response.json()
    return jobs


def sha256_of(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def assert_federation_finished(http: httpx.Client, federation_id: str, storage: Storage, rounds: int = 2) -> None:
    """Every round ran each transition once, the federation completed, the store matches the rows."""
    for number in range(1, rounds + 1):
        detail = round_detail(http, federation_id, number)
        assert detail["state"] == "completed", detail
        assert [t["state"] for t in detail["transitions"]] == ROUND_STATES, detail["transitions"]
        assert detail["metrics"] is not None and detail["metrics"]["rsum"] >= 0
    summary = http.get(f"{API}/federations/{federation_id}", headers=ADMIN).json()
    assert summary["state"] == "completed", summary
    assert summary["rounds_completed"] == rounds
    jobs = jobs_of(http, federation_id)
    assert sorted((j["round"], j["kind"]) for j in jobs) == sorted(
        (r, k) for r in range(1, rounds + 1) for k in ("publish", "aggregate", "train", "evaluate")
    ), "a job was enqueued twice or not at all"
    assert all(j["state"] == "done" for j in jobs), jobs
    storage.assert_consistent()
