"""What idle agents cost: 500 clients long-polling ``tasks/next`` on a real coordinator (uvicorn, loopback).

Two phases of the same length against the same server, in one run: without pollers, and with
``--pollers`` clients each holding a long poll (``wait=30``, re-polling when it returns) on a
federation that has nothing for them (paused). In both phases a probe sends an admin request
(``GET /federations/{id}``) every 20 ms. Reported: the coordinator process's CPU use (its
/proc counters) and the probe's p50/p99 latency in each phase; the ratio is the figure.

    .venv/bin/python bench/poll_bench.py --pollers 500 --seconds 20 --json bench/results/poll_bench.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from service import ADMIN, ADMIN_TOKEN, API, create_federation, enroll, percentile, process_cpu_seconds

from coordinator_service.launcher import CoordinatorProcess


async def poller(url: str, token: str, stop: asyncio.Event, errors: list[str]) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        while not stop.is_set():
            try:
                response = await http.get(url, params={"wait": 30}, headers=headers)
                if response.status_code != 200:
                    errors.append(f"{response.status_code}")
            except httpx.TransportError as exc:
                errors.append(type(exc).__name__)


async def probe(url: str, seconds: float) -> list[float]:
    latencies = []
    async with httpx.AsyncClient(timeout=30) as http:
        finish = time.monotonic() + seconds
        while time.monotonic() < finish:
            started = time.perf_counter()
            response = await http.get(url, headers=ADMIN)
            response.raise_for_status()
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.02)
    return latencies


async def phase(pid: int, probe_url: str, poll_url: str, tokens: list[str], seconds: float) -> dict[str, Any]:
    stop, errors = asyncio.Event(), []
    tasks = [asyncio.create_task(poller(poll_url, t, stop, errors)) for t in tokens]
    if tasks:
        await asyncio.sleep(5)  # every poller connected and waiting
    cpu_before, wall_before = process_cpu_seconds(pid), time.perf_counter()
    latencies = await probe(probe_url, seconds)
    cpu = process_cpu_seconds(pid) - cpu_before
    wall = time.perf_counter() - wall_before
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "pollers": len(tokens),
        "coordinator_cpu_percent": 100 * cpu / wall,
        "probe_requests": len(latencies),
        "probe_p50_ms": 1000 * percentile(latencies, 50),
        "probe_p99_ms": 1000 * percentile(latencies, 99),
        "poll_errors": len(errors),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pollers", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        CoordinatorProcess(Path(tmp) / "data", settings={"admin_token": ADMIN_TOKEN}) as service,
    ):
        with httpx.Client(base_url=service.url, timeout=60) as http:
            config = {"name": "poll", "public_set": {"size": 16, "test_size": 8}, "clients_per_round": 1}
            federation = create_federation(http, config)
            tokens = [enroll(http, federation, f"idle-{i}", "image") for i in range(args.pollers)]
        # Never started: every poll waits its full time, as idle gateways do between rounds.
        probe_url = f"{service.url}{API}/federations/{federation['id']}"
        poll_url = f"{service.url}{API}/federations/{federation['id']}/tasks/next"
        pid = service.pid
        quiet = asyncio.run(phase(pid, probe_url, poll_url, [], args.seconds))
        busy = asyncio.run(phase(pid, probe_url, poll_url, tokens, args.seconds))
    print(f"load average {os.getloadavg()}")
    print(f"{'pollers':>8} {'coord CPU %':>12} {'probe p50 ms':>13} {'probe p99 ms':>13} {'errors':>7}")
    for row in (quiet, busy):
        print(
            f"{row['pollers']:>8} {row['coordinator_cpu_percent']:>12.1f} {row['probe_p50_ms']:>13.1f} "
            f"{row['probe_p99_ms']:>13.1f} {row['poll_errors']:>7}"
        )
    ratio = busy["probe_p99_ms"] / quiet["probe_p99_ms"]
    print(f"p99 with {args.pollers} idle pollers / without: {ratio:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"quiet": quiet, "busy": busy, "p99_ratio": ratio, "load_average": os.getloadavg()}
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
