"""Chaos: a federation of several rounds with three `creamfl-agent run` processes while its
`creamfl-coordinator serve` is killed with SIGKILL at random moments, at least five times, and
restarted on the same database and artifact directory.

The kill times come from a seeded generator; the seed is printed, and ``CREAMFL_CHAOS_SEED=N``
replays a run's schedule. The federation must complete with each round entering each state once,
every artifact a row names on disk with the right hash, and every upload a client was told was
stored still recorded.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import time
from pathlib import Path

import pytest

from tests.agent.helpers import MODALITIES, agent_command, spawn_agent, wait_for_clients
from tests.coordinator.databases import database
from tests.coordinator.helpers import ADMIN, API, Http, create_federation, start
from tests.coordinator.servers import coordinator_process
from tests.coordinator.storage import assert_federation_finished, storage_of

ROUNDS = 3
KILLS = 6  # of which at least five must land before the federation completes
STATES = ("pending", "open", "aggregating", "training", "evaluating")
FAST = {"lease_s": 2, "worker_poll_s": 0.1, "watch_interval_s": 0.1, "threads": 1}
# Each job is held a moment before its commit, so kills land inside jobs as well as between them.
JOB_HOLD_S = 0.4
ACKNOWLEDGED = re.compile(r"round=(\d+) upload modality=(\w+) outcome='(created|already stored \(repeat\))'")


def chaos_seed() -> int:
    seed = int(os.environ.get("CREAMFL_CHAOS_SEED", secrets.randbelow(2**31)))
    print(f"chaos seed {seed} (CREAMFL_CHAOS_SEED={seed} replays this schedule)")
    return seed


def wait_until_reached(
    http: Http, federation_id: str, moment: tuple[int, int], timeout: float = 300
) -> tuple[int, int]:
    """Poll until the federation is at or past ``moment`` (round, index in STATES); where it is then."""
    deadline = time.monotonic() + timeout
    while True:
        rounds = http.get(f"{API}/federations/{federation_id}/rounds", headers=ADMIN).json()
        latest = rounds[-1] if rounds else {"number": 0, "state": "pending"}
        where = (latest["number"], STATES.index(latest["state"]) if latest["state"] in STATES else len(STATES))
        if where >= moment or time.monotonic() > deadline:
            return where
        time.sleep(0.05)


def acknowledged_uploads(log: str) -> set[tuple[int, str]]:
    """(round, modality) of every upload the coordinator answered 201 or 200 to, from an agent's log."""
    return {(int(number), modality) for number, modality, _ in ACKNOWLEDGED.findall(log)}


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_a_federation_survives_its_coordinator_killed_at_random_moments(tmp_path: Path, db: str) -> None:
    # Prepare: a coordinator, a federation, three agents that wait for the coordinator indefinitely
    rng = random.Random(chaos_seed())
    with database(db, tmp_path) as url:
        settings = {**FAST, "database_url": url, "job_hold_s": JOB_HOLD_S}
        with coordinator_process(tmp_path / "data", **settings) as coordinator, coordinator.http() as http:
            federation = create_federation(http, rounds=ROUNDS, clients_per_round=3, round_deadline_s=300)
            fid = federation["id"]
            agents = {
                m: spawn_agent(
                    agent_command(coordinator.url, federation, m, tmp_path / m, retry_for_s=0),
                    tmp_path / f"{m}.log",
                )
                for m in MODALITIES
            }
            clients = {c["name"]: c["id"] for c in wait_for_clients(http, fid, 3, timeout=180)}
            start(http, fid)

            # Execute: kill at random moments of the federation's life: each a random (round, state)
            # drawn from the seed, plus a random delay into it, so the kills always happen, in order
            moments = sorted(rng.sample([(r, s) for r in range(1, ROUNDS + 1) for s in range(len(STATES))], KILLS))
            kills = []
            for moment in moments:
                reached = wait_until_reached(http, fid, moment)
                time.sleep(rng.uniform(0.0, 0.3))
                kills.append(f"round {reached[0]} {STATES[reached[1]] if reached[1] < len(STATES) else 'done'}")
                coordinator.kill()
                coordinator.start()
            codes = {m: process.wait(timeout=300) for m, process in agents.items()}
            logs = {m: (tmp_path / f"{m}.log").read_text() for m in MODALITIES}

            # Assert
            print("killed during:", json.dumps(kills))
            assert sum(not kill.endswith("done") for kill in kills) >= 5, kills  # landed while it ran
            assert codes == dict.fromkeys(MODALITIES, 0), {m: logs[m][-3000:] for m in MODALITIES}
            storage = storage_of(coordinator)
            assert_federation_finished(http, fid, storage, rounds=ROUNDS)
            for modality in MODALITIES:
                client_id = clients[f"agent-{modality}"]
                for number, uploaded in acknowledged_uploads(logs[modality]):
                    assert (client_id, uploaded) in storage.uploads(fid, number), (modality, number, uploaded)
