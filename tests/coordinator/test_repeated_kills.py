"""A real coordinator process killed with SIGKILL again and again while the same job runs: each
restart re-runs the job once its lease expired, without spending an attempt on the lost worker, so
the round still completes (a lost worker is not a failed attempt: DESIGN.md section 4)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.coordinator.databases import database
from tests.coordinator.helpers import ROUND_STATES, create_federation, enroll_mix, run_round, start
from tests.coordinator.servers import coordinator_process
from tests.coordinator.storage import assert_federation_finished, jobs_of, storage_of

# Short lease so a killed worker's job is claimed again soon; quick polling for quick tests.
FAST = {"lease_s": 2, "worker_poll_s": 0.1, "watch_interval_s": 0.1, "threads": 1}
JOB_HOLD_S = 120  # each run of the job is held before its commit until the test kills it
KILLS = 3  # as many as the job's attempts (max_job_attempts): no attempt may go to a lost worker
TIMEOUT_S = 90.0


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_killing_the_coordinator_during_the_same_job_again_and_again_does_not_fail_the_round(
    tmp_path: Path, db: str
) -> None:
    with (
        database(db, tmp_path) as url,
        coordinator_process(tmp_path / "data", database_url=url, **FAST, job_hold_s=JOB_HOLD_S) as coordinator,
    ):
        # Prepare: round 1's publish job runs, held before its commit
        storage = storage_of(coordinator)
        with coordinator.http() as http:
            federation = create_federation(http, rounds=1)
            fid = federation["id"]
            clients = enroll_mix(http, federation)
            start(http, fid)

        # Execute: kill -9 while the job runs, each time in the run of the restarted coordinator
        owners: list[str] = []
        for kill in range(1, KILLS + 1):
            deadline = time.monotonic() + TIMEOUT_S
            while (job := storage.job(fid, 1, "publish")).state != "running" or job.lease_owner in (None, *owners):
                assert time.monotonic() < deadline, f"the publish job did not run again\n{coordinator.log_tail()}"
                time.sleep(0.05)
            assert job.lease_owner is not None
            owners.append(job.lease_owner)
            coordinator.kill()
            coordinator.start(job_hold_s=JOB_HOLD_S if kill < KILLS else 0)
        with coordinator.http() as http:
            round_1 = run_round(http, fid, clients, 1)

            # Assert: one job, run once more after each kill, no attempt spent; the round completed once
            assert len(set(owners)) == KILLS
            assert round_1["state"] == "completed", round_1
            assert [t["state"] for t in round_1["transitions"]] == ROUND_STATES
            publish = next(j for j in jobs_of(http, fid) if j["kind"] == "publish")
            assert (publish["state"], publish["attempts"], publish["lease_losses"]) == ("done", 1, KILLS), publish
            assert publish["lease_owner"] not in owners
            assert_federation_finished(http, fid, storage, rounds=1)
