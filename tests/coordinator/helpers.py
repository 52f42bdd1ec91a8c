"""Small drivers for the coordinator API used across the tests (real HTTP or in-process ASGI)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from coordinator_service.settings import Settings
from creamfl.payload import encode_payload

ADMIN_TOKEN = "admin-test-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
API = "/api/v1"


class Http(Protocol):
    def get(self, url: str, **kwargs: Any) -> Any: ...
    def post(self, url: str, **kwargs: Any) -> Any: ...
    def put(self, url: str, **kwargs: Any) -> Any: ...


def tiny_config(**overrides: Any) -> dict[str, Any]:
    """A federation small enough that a round's jobs take well under a second on one CPU core."""
    config: dict[str, Any] = {
        "name": "test",
        "embed_dim": 16,
        "public_set": {"size": 24, "test_size": 12},
        "rounds": 2,
        "clients_per_round": 3,
        "min_clients": 1,
        "round_deadline_s": 60,
        "server": {"image_widths": [8, 16], "batch_size": 12},
    }
    config.update(overrides)
    return config


@dataclass
class EnrolledClient:
    id: str
    token: str
    modalities: list[str]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def create_federation(http: Http, **overrides: Any) -> dict[str, Any]:
    response = http.post(f"{API}/federations", json=tiny_config(**overrides), headers=ADMIN)
    assert response.status_code == 201, response.text
    federation: dict[str, Any] = response.json()
    return federation


def enroll(http: Http, federation: dict[str, Any], name: str, modalities: list[str], model: str) -> EnrolledClient:
    response = http.post(
        f"{API}/federations/{federation['id']}/clients",
        json={"name": name, "modalities": modalities, "model": model, "samples": 100},
        headers={"Authorization": f"Bearer {federation['join_token']}"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return EnrolledClient(id=body["id"], token=body["token"], modalities=body["modalities"])


def enroll_mix(http: Http, federation: dict[str, Any]) -> list[EnrolledClient]:
    """One image-only, one text-only and one image+text client."""
    return [
        enroll(http, federation, "img", ["image"], "image-cnn-s"),
        enroll(http, federation, "txt", ["text"], "text-gru-s"),
        enroll(http, federation, "mm", ["image", "text"], "dual-s"),
    ]


def start(http: Http, federation_id: str) -> None:
    response = http.post(f"{API}/federations/{federation_id}/start", headers=ADMIN)
    assert response.status_code == 200, response.text


def next_task(http: Http, federation_id: str, client: EnrolledClient, wait: float = 20.0) -> dict[str, Any]:
    response = http.get(f"{API}/federations/{federation_id}/tasks/next", params={"wait": wait}, headers=client.headers)
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    return task


def payload(rows: int, dim: int, modality: str, *, seed: int = 0, dtype: str = "float16") -> bytes:
    generator = torch.Generator().manual_seed(seed)
    reps = torch.nn.functional.normalize(torch.randn(rows, dim, generator=generator), dim=1)
    return encode_payload({modality: reps}, dtype=dtype)  # type: ignore[arg-type]


def put_payload(http: Http, url: str, client: EnrolledClient, body: bytes, **headers: str) -> Any:
    sent = {
        **client.headers,
        "Content-SHA256": hashlib.sha256(body).hexdigest(),
        "Content-Type": "application/octet-stream",
        **headers,
    }
    return http.put(url, content=body, headers=sent)


def upload_all(http: Http, task: dict[str, Any], client: EnrolledClient, *, seed: int = 0) -> None:
    """Upload random unit representations for every modality the task asks for."""
    for modality, url in task["upload_urls"].items():
        body = payload(len(task["subset"]), task["embed_dim"], modality, seed=seed)
        response = put_payload(http, url, client, body)
        assert response.status_code in (200, 201), response.text


def round_detail(http: Http, federation_id: str, number: int) -> dict[str, Any]:
    response = http.get(f"{API}/federations/{federation_id}/rounds/{number}", headers=ADMIN)
    assert response.status_code == 200, response.text
    detail: dict[str, Any] = response.json()
    return detail


def wait_for_round(
    http: Http, federation_id: str, number: int, states: tuple[str, ...], timeout: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        detail = round_detail(http, federation_id, number)
        if detail["state"] in states:
            return detail
        if time.monotonic() > deadline:
            raise AssertionError(f"round {number} stayed {detail['state']}, expected one of {states}")
        time.sleep(0.05)


def run_round(http: Http, federation_id: str, clients: list[EnrolledClient], number: int) -> dict[str, Any]:
    """Every client takes its task and uploads; returns the round once completed."""
    for position, client in enumerate(clients):
        task = next_task(http, federation_id, client)
        assert task["kind"] == "train" and task["round"] == number, task
        upload_all(http, task, client, seed=number * 100 + position)
    return wait_for_round(http, federation_id, number, ("completed", "failed"))


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """``response`` is an error with ``status`` and the API's JSON error body; returns the error object."""
    assert response.status_code == status, (status, response.status_code, response.text[:500])
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["details"], dict), error
    if code is not None:
        assert error["code"] == code, error
    return error


# Every state of a round that completes, in order: the transitions its detail lists.
ROUND_STATES = ["pending", "open", "aggregating", "training", "evaluating", "completed"]


def fast_settings(data_dir: Path, database_url: str, **overrides: Any) -> Settings:
    """The coordinator's settings in tests: the tests' admin token and quick worker and watcher polling."""
    values: dict[str, Any] = {"admin_token": ADMIN_TOKEN, "worker_poll_s": 0.05, "watch_interval_s": 0.05}
    return Settings(data_dir=data_dir, database_url=database_url, **{**values, **overrides})
