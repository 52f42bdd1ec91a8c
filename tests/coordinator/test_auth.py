"""Who may call what (DESIGN.md section 4, "Auth"), on SQLite and PostgreSQL.

The admin token opens the admin routes, a federation's join token opens its enrollment, and a client
token opens that client's own routes in its own federation; anything else is refused with 401 (no
or unknown credentials) or 403 (a known client out of bounds), always with the JSON error body, and
a refused request changes nothing. Tokens are stored only as hashes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from coordinator_service.app import create_app
from coordinator_service.db.models import Base, Client, Federation, Report, Upload
from coordinator_service.settings import Settings
from tests.coordinator.helpers import (
    ADMIN,
    ADMIN_TOKEN,
    API,
    assert_error,
    create_federation,
    enroll,
    next_task,
    payload,
    put_payload,
    start,
    tiny_config,
    wait_for_round,
)

Route = tuple[str, str, dict[str, Any]]  # method, url, request kwargs

MALFORMED = {
    "no header": {},
    "empty header": {"Authorization": ""},
    "token without scheme": {"Authorization": ADMIN_TOKEN},
    "basic scheme": {"Authorization": "Basic " + base64.b64encode(f"admin:{ADMIN_TOKEN}".encode()).decode()},
    "bearer without token": {"Authorization": "Bearer"},
    "wrong token": {"Authorization": "Bearer admin_" + "x" * 43},
    "admin token with a suffix": {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def admin_routes(federation_id: str, client_id: str) -> list[Route]:
    base = f"{API}/federations/{federation_id}"
    return [
        ("POST", f"{API}/federations", {"json": tiny_config(name="intruder")}),
        ("GET", f"{API}/federations", {}),
        ("GET", base, {}),
        ("POST", f"{base}/start", {}),
        ("POST", f"{base}/pause", {}),
        ("POST", f"{base}/stop", {}),
        ("GET", f"{base}/rounds", {}),
        ("GET", f"{base}/rounds/1", {}),
        ("GET", f"{base}/clients", {}),
        ("POST", f"{base}/clients/{client_id}/revoke", {}),
        ("GET", f"{base}/checkpoints/latest", {}),
        ("GET", f"{API}/jobs", {}),
    ]


def client_routes(federation_id: str, number: int = 1, modality: str = "image", body: bytes = b"") -> list[Route]:
    base = f"{API}/federations/{federation_id}"
    upload_headers = {"Content-SHA256": hashlib.sha256(body).hexdigest(), "Content-Type": "application/octet-stream"}
    return [
        ("GET", f"{base}/public-set", {}),
        ("GET", f"{base}/tasks/next", {"params": {"wait": 0}}),
        ("GET", f"{base}/rounds/{number}/global/{modality}", {}),
        ("PUT", f"{base}/rounds/{number}/uploads/{modality}", {"content": body, "headers": upload_headers}),
        ("POST", f"{base}/rounds/{number}/reports", {"json": {"metrics": {"loss": 1.0}}}),
    ]


def refusals(
    http: TestClient, routes: Iterable[Route], credentials: dict[str, dict[str, str]], status: int, code: str
) -> list[str]:
    """Every route with every credential; returns what was not refused with ``status`` and ``code``."""
    problems = []
    for method, url, kwargs in routes:
        for name, headers in credentials.items():
            sent = {**kwargs, "headers": {**kwargs.get("headers", {}), **headers}}
            response = http.request(method, url, **sent)
            try:
                assert_error(response, status, code)
                if status == 401:
                    assert response.headers.get("www-authenticate") == "Bearer", response.headers
            except AssertionError as exc:
                problems.append(f"{method} {url} with {name}: {exc}")
    return problems


def forbidden_refusals(
    http: TestClient, federation_id: str, who: str, headers: dict[str, str], body: bytes
) -> list[str]:
    """A client's routes in ``federation_id`` with ``headers``: what was not refused with 403 forbidden."""
    return refusals(http, client_routes(federation_id, body=body), {who: headers}, 403, "forbidden")


def rows(http: TestClient, model: Any) -> list[Any]:
    with http.app.state.services.db() as session:  # type: ignore[attr-defined]
        return list(session.scalars(select(model)).all())


def test_admin_routes_refuse_everything_but_the_admin_token(client: TestClient) -> None:
    # Prepare
    federation = create_federation(client)
    enrolled = enroll(client, federation, "img", ["image"], "image-cnn-s")
    credentials = {
        **MALFORMED,
        "a client token": enrolled.headers,
        "the join token": bearer(federation["join_token"]),
    }

    # Execute
    problems = refusals(client, admin_routes(federation["id"], enrolled.id), credentials, 401, "unauthorized")

    # Assert
    assert problems == []
    listed = client.get(f"{API}/federations", headers=ADMIN).json()
    assert [(f["id"], f["state"], f["current_round"]) for f in listed] == [(federation["id"], "created", 0)]
    registry = client.get(f"{API}/federations/{federation['id']}/clients", headers=ADMIN).json()
    assert [(c["id"], c["status"]) for c in registry] == [(enrolled.id, "active")]
    assert client.get(f"{API}/jobs", headers=ADMIN).json() == []


def test_client_routes_refuse_everything_but_the_clients_own_token(client: TestClient) -> None:
    # Prepare
    federation = create_federation(client, rounds=1, clients_per_round=1)
    # Image and text: its image upload alone leaves the round open (no jobs run behind the test).
    enrolled = enroll(client, federation, "mm", ["image", "text"], "dual-s")
    start(client, federation["id"])
    wait_for_round(client, federation["id"], 1, ("open",))
    task = next_task(client, federation["id"], enrolled, wait=0)
    body = payload(len(task["subset"]), task["embed_dim"], "image")
    routes = client_routes(federation["id"], body=body)
    credentials = {**MALFORMED, "the admin token": ADMIN, "the join token": bearer(federation["join_token"])}

    # Execute
    problems = refusals(client, routes, credentials, 401, "unauthorized")
    accepted = [
        client.request(method, url, **{**kwargs, "headers": {**kwargs.get("headers", {}), **enrolled.headers}})
        for method, url, kwargs in routes
    ]

    # Assert
    assert problems == []
    # The same requests with the client's own token succeed, and the upload and report are new: the
    # refused ones stored nothing.
    assert [r.status_code for r in accepted] == [200, 200, 200, 201, 201], [r.text[:200] for r in accepted]
    assert [(u.client_id, u.sha256) for u in rows(client, Upload)] == [(enrolled.id, hashlib.sha256(body).hexdigest())]
    assert [r.client_id for r in rows(client, Report)] == [enrolled.id]


def test_a_client_acts_only_as_itself_and_only_in_its_own_federation(client: TestClient) -> None:
    # Prepare
    federation = create_federation(client, rounds=1, clients_per_round=2)
    first = enroll(client, federation, "first", ["image"], "image-cnn-s")
    second = enroll(client, federation, "second", ["image", "text"], "dual-s")
    other_federation = create_federation(client, name="other")
    stranger = enroll(client, other_federation, "stranger", ["image"], "image-cnn-s")
    start(client, federation["id"])
    wait_for_round(client, federation["id"], 1, ("open",))
    task = next_task(client, federation["id"], first, wait=0)
    url = task["upload_urls"]["image"]
    first_body = payload(len(task["subset"]), task["embed_dim"], "image", seed=1)
    assert put_payload(client, url, first, first_body).status_code == 201
    second_body = payload(len(task["subset"]), task["embed_dim"], "image", seed=2)

    # Execute
    problems = forbidden_refusals(
        client, federation["id"], "a client of another federation", stranger.headers, second_body
    )
    problems += forbidden_refusals(
        client, other_federation["id"], "a client of the first federation", first.headers, second_body
    )
    # Whether a federation exists is not revealed to a client: an unknown one is refused alike.
    problems += forbidden_refusals(client, "fed-000000000000", "a client", first.headers, second_body)
    # The same upload URL with another client's token writes that client's upload, never the first's.
    second_upload = put_payload(client, url, second, second_body)
    second_report = client.post(
        f"{API}/federations/{federation['id']}/rounds/1/reports",
        json={"metrics": {"loss": 2.0}},
        headers=second.headers,
    )

    # Assert
    assert problems == []
    assert second_upload.status_code == 201, second_upload.text
    assert second_upload.json()["client_id"] == second.id
    assert sorted((u.client_id, u.modality, u.sha256) for u in rows(client, Upload)) == sorted(
        [
            (first.id, "image", hashlib.sha256(first_body).hexdigest()),
            (second.id, "image", hashlib.sha256(second_body).hexdigest()),
        ]
    )
    assert second_report.status_code == 201 and second_report.json()["client_id"] == second.id
    assert [(r.client_id, r.metrics) for r in rows(client, Report)] == [(second.id, {"loss": 2.0})]


def test_enrollment_needs_the_federations_own_join_token(client: TestClient) -> None:
    # Prepare
    federation = create_federation(client)
    other_federation = create_federation(client, name="other")
    member = enroll(client, federation, "member", ["image"], "image-cnn-s")
    url = f"{API}/federations/{federation['id']}/clients"
    request = {"name": "newcomer", "modalities": ["text"], "model": "text-gru-s", "samples": 10}
    credentials = {
        **MALFORMED,
        "the join token without scheme": {"Authorization": federation["join_token"]},
        "another federation's join token": bearer(other_federation["join_token"]),
        "the admin token": ADMIN,
        "a client token": member.headers,
    }

    # Execute
    problems = refusals(client, [("POST", url, {"json": request})], credentials, 401, "unauthorized")
    unknown = client.post(
        f"{API}/federations/fed-000000000000/clients", json=request, headers=bearer(federation["join_token"])
    )
    accepted = client.post(url, json=request, headers=bearer(federation["join_token"]))

    # Assert
    assert problems == []
    assert_error(unknown, 404, "not_found")
    assert accepted.status_code == 201, accepted.text
    assert sorted(c.name for c in rows(client, Client)) == ["member", "newcomer"]


def test_a_revoked_client_is_refused_everywhere(client: TestClient) -> None:
    # Prepare
    federation = create_federation(client, rounds=1, clients_per_round=2)
    revoked = enroll(client, federation, "revoked", ["image"], "image-cnn-s")
    kept = enroll(client, federation, "kept", ["image"], "image-cnn-s")
    other_federation = create_federation(client, name="other")
    outsider = enroll(client, other_federation, "outsider", ["image"], "image-cnn-s")
    start(client, federation["id"])
    wait_for_round(client, federation["id"], 1, ("open",))
    task = next_task(client, federation["id"], revoked, wait=0)
    body = payload(len(task["subset"]), task["embed_dim"], "image")
    base = f"{API}/federations/{federation['id']}/clients"

    # Execute
    revocation = client.post(f"{base}/{revoked.id}/revoke", headers=ADMIN)
    problems = forbidden_refusals(client, federation["id"], "a revoked client", revoked.headers, body)
    unknown = client.post(f"{base}/cl-000000000000/revoke", headers=ADMIN)
    foreign = client.post(f"{base}/{outsider.id}/revoke", headers=ADMIN)
    kept_task = next_task(client, federation["id"], kept, wait=0)

    # Assert
    assert revocation.status_code == 200 and revocation.json()["status"] == "revoked", revocation.text
    assert problems == []
    assert_error(unknown, 404, "not_found")
    assert_error(foreign, 404, "not_found")
    assert {c.name: c.status for c in rows(client, Client)} == {
        "revoked": "revoked",
        "kept": "active",
        "outsider": "active",
    }
    assert kept_task["kind"] == "train"
    assert rows(client, Upload) == [] and rows(client, Report) == []


def test_tokens_are_stored_only_as_hashes(client: TestClient, settings: Settings) -> None:
    # Prepare
    federation = create_federation(client)
    clients = [
        enroll(client, federation, "img", ["image"], "image-cnn-s"),
        enroll(client, federation, "txt", ["text"], "text-gru-s"),
    ]
    tokens = [ADMIN_TOKEN, federation["join_token"], *(c.token for c in clients)]

    # Execute
    with client.app.state.services.db() as session:  # type: ignore[attr-defined]
        dump = {
            table.name: [json.dumps(list(row), default=str) for row in session.execute(select(table)).all()]
            for table in Base.metadata.sorted_tables
        }
    federations = rows(client, Federation)
    stored_clients = {c.id: c for c in rows(client, Client)}

    # Assert
    assert dump["federations"] and dump["clients"]
    for table, lines in dump.items():
        for line in lines:
            assert not any(token in line for token in tokens), (table, line)
    assert [f.join_token_hash for f in federations] == [hashlib.sha256(federation["join_token"].encode()).hexdigest()]
    for enrolled in clients:
        assert stored_clients[enrolled.id].token_hash == hashlib.sha256(enrolled.token.encode()).hexdigest()
    if settings.is_sqlite:  # the database files themselves, free pages and write-ahead log included
        database = Path(settings.resolved_database_url.removeprefix("sqlite:///"))
        raw = b"".join(path.read_bytes() for path in database.parent.glob(database.name + "*"))
        assert raw and not any(token.encode() in raw for token in tokens)


def test_a_generated_admin_token_is_private_and_survives_a_restart(db_url: str, tmp_path: Path) -> None:
    # Prepare
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, admin_token=None, in_process_worker=False)
    token_file = settings.data_dir / "admin-token"

    # Execute
    with TestClient(create_app(settings)) as first:
        token = token_file.read_text().strip()
        mode = stat.S_IMODE(token_file.stat().st_mode)
        created = first.post(f"{API}/federations", json=tiny_config(), headers=bearer(token))
        refused = first.get(f"{API}/federations", headers=ADMIN)
    with TestClient(create_app(settings)) as second:
        token_after_restart = token_file.read_text().strip()
        listed = second.get(f"{API}/federations", headers=bearer(token))
    configured = Settings(
        data_dir=tmp_path / "configured", database_url=db_url, admin_token=ADMIN_TOKEN, in_process_worker=False
    )
    with TestClient(create_app(configured)) as third:
        generated_refused = third.get(f"{API}/federations", headers=bearer(token))

    # Assert
    assert mode == 0o600
    assert len(token) >= 40 and token != ADMIN_TOKEN
    assert created.status_code == 201, created.text
    assert_error(refused, 401, "unauthorized")
    assert token_after_restart == token
    assert listed.status_code == 200 and [f["id"] for f in listed.json()] == [created.json()["id"]]
    # CREAMFL_ADMIN_TOKEN set: nothing is generated, and only the configured token works.
    assert not (configured.data_dir / "admin-token").exists()
    assert_error(generated_refused, 401, "unauthorized")
