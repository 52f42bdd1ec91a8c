"""Upload ingest through a real coordinator (uvicorn on loopback) against writing the same bytes to disk.

For each N (concurrent clients), a federation with N one-modality clients opens a round over a
public subset of 5000 items at d = 256; the N clients then upload their float16 ``[5000, 256]``
payloads at once (streamed, sha256-checked, validated, fsynced, recorded in SQLite). Side by side,
in the same run, N threads write the same bytes straight to files with fsync. The figure is the
ratio of the two throughputs, plus p50/p99 latency of one upload.

    .venv/bin/python bench/ingest_bench.py --clients 8 32 --json bench/results/ingest_bench.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import torch
from service import ADMIN, ADMIN_TOKEN, API, create_federation, enroll, percentile, wait_round_state

from coordinator_service.launcher import CoordinatorProcess
from creamfl.payload import encode_payload

ROWS, DIM = 5000, 256


def federation_config(clients: int) -> dict[str, Any]:
    # A small server: the publish job that opens the round is not what is measured.
    return {
        "name": f"ingest-{clients}",
        "embed_dim": DIM,
        "public_set": {"size": ROWS, "test_size": 16},
        "rounds": 1,
        "clients_per_round": clients,
        "min_clients": clients,
        "round_deadline_s": 3600,
        "server": {"image_widths": [8], "batch_size": 500},
    }


def payloads(clients: int, modality: str) -> list[bytes]:
    generator = torch.Generator().manual_seed(clients)
    return [
        encode_payload({modality: torch.nn.functional.normalize(torch.randn(ROWS, DIM, generator=generator), dim=1)})
        for _ in range(clients)
    ]


def run_concurrently(jobs: list[Any]) -> tuple[float, list[float]]:
    """Start every job at once (a barrier); returns wall seconds and each job's latency."""
    barrier = threading.Barrier(len(jobs) + 1)
    latencies: list[float] = [0.0] * len(jobs)

    def worker(position: int) -> None:
        barrier.wait()
        started = time.perf_counter()
        jobs[position]()
        latencies[position] = time.perf_counter() - started

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies


def http_ingest(url: str, clients: int, bodies: list[bytes]) -> tuple[float, list[float]]:
    with httpx.Client(base_url=url, timeout=600) as http:
        federation = create_federation(http, federation_config(clients))
        tokens = [enroll(http, federation, f"c{i}", "image") for i in range(clients)]
        http.post(f"{API}/federations/{federation['id']}/start", headers=ADMIN).raise_for_status()
        wait_round_state(http, federation["id"], 1, "open")
    target = f"{url}{API}/federations/{federation['id']}/rounds/1/uploads/image"

    def upload(token: str, body: bytes) -> None:
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-SHA256": hashlib.sha256(body).hexdigest(),
            "Content-Type": "application/octet-stream",
        }
        response = httpx.put(target, content=body, headers=headers, timeout=600)
        if response.status_code != 201:
            raise RuntimeError(f"upload failed: {response.status_code} {response.text}")

    return run_concurrently([lambda t=t, b=b: upload(t, b) for t, b in zip(tokens, bodies, strict=True)])


def disk_writes(directory: Path, bodies: list[bytes]) -> tuple[float, list[float]]:
    def write(position: int, body: bytes) -> None:
        with (directory / f"direct-{position}.bin").open("wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())

    return run_concurrently([lambda i=i, b=b: write(i, b) for i, b in enumerate(bodies)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        CoordinatorProcess(Path(tmp) / "data", settings={"admin_token": ADMIN_TOKEN}) as service,
    ):
        for clients in args.clients:
            bodies = payloads(clients, "image")
            megabytes = sum(len(b) for b in bodies) / 1e6
            direct_dir = Path(tmp) / f"direct-{clients}"
            direct_dir.mkdir()
            http_s, http_lat = http_ingest(service.url, clients, bodies)
            disk_s, disk_lat = disk_writes(direct_dir, bodies)
            rows.append(
                {
                    "clients": clients,
                    "megabytes": megabytes,
                    "http_mb_s": megabytes / http_s,
                    "disk_mb_s": megabytes / disk_s,
                    "http_over_disk": (megabytes / http_s) / (megabytes / disk_s),
                    "http_p50_s": percentile(http_lat, 50),
                    "http_p99_s": percentile(http_lat, 99),
                    "disk_p50_s": percentile(disk_lat, 50),
                    "disk_p99_s": percentile(disk_lat, 99),
                }
            )
    print(f"payload [{ROWS}, {DIM}] float16 = {len(bodies[0]) / 1e6:.2f} MB per client; load {os.getloadavg()}")
    print(f"{'N':>4} {'MB':>7} {'HTTP MB/s':>10} {'disk MB/s':>10} {'ratio':>6} {'p50 s':>7} {'p99 s':>7}")
    for row in rows:
        print(
            f"{row['clients']:>4} {row['megabytes']:>7.1f} {row['http_mb_s']:>10.1f} {row['disk_mb_s']:>10.1f} "
            f"{row['http_over_disk']:>6.2f} {row['http_p50_s']:>7.3f} {row['http_p99_s']:>7.3f}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "load_average": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()
