"""Helpers of the service benchmarks: a few admin/client API calls, percentiles, process CPU time."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import httpx

ADMIN_TOKEN = "bench-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
API = "/api/v1"


def create_federation(http: httpx.Client, config: dict[str, Any]) -> dict[str, Any]:
    response = http.post(f"{API}/federations", json=config, headers=ADMIN)
    response.raise_for_status()
    federation: dict[str, Any] = response.json()
    return federation


def enroll(http: httpx.Client, federation: dict[str, Any], name: str, modality: str) -> str:
    model = "image-cnn-s" if modality == "image" else "text-gru-s"
    response = http.post(
        f"{API}/federations/{federation['id']}/clients",
        json={"name": name, "modalities": [modality], "model": model, "samples": 1},
        headers={"Authorization": f"Bearer {federation['join_token']}"},
    )
    response.raise_for_status()
    token: str = response.json()["token"]
    return token


def wait_round_state(http: httpx.Client, federation_id: str, number: int, state: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = http.get(f"{API}/federations/{federation_id}/rounds/{number}", headers=ADMIN)
        if response.status_code == 200 and response.json()["state"] == state:
            return
        time.sleep(0.2)
    raise RuntimeError(f"round {number} never reached {state}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
