"""Fuzz every operation of the coordinator's OpenAPI document in-process (ASGI) with schemathesis.

Valid (positive) and invalid (negative) requests are generated from ``/openapi.json``. Each carries
the credentials its route needs (admin token, join token or client token), so generated data gets
past authentication into validation, the services and the database. Path parameters are drawn both
at random and pinned to a real federation, its open round and an enrolled client, so lookups hit
real rows; uploads to the open round carry the body's true sha256, so random bytes reach payload
validation. Destructive admin operations (start/pause/stop, revoke) run last.

Checks on every response: no 5xx, every error is the JSON error body, and the status code and body
match what the OpenAPI document says.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from coordinator_service.app import create_app
from tests.coordinator.databases import database
from tests.coordinator.helpers import (
    ADMIN,
    EnrolledClient,
    create_federation,
    enroll,
    fast_settings,
    start,
    wait_for_round,
)

MAX_EXAMPLES = 30  # per operation and strategy (positive/negative, random/pinned path parameters)
DESTRUCTIVE = ("/start", "/pause", "/stop", "/revoke")


@dataclass
class Target:
    """A federation with an open round and an enrolled client, to pin path parameters to."""

    federation: dict[str, Any]
    client: EnrolledClient
    path_values: dict[str, Any]


@dataclass
class Tally:
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    per_operation: dict[str, dict[int, int]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


@schemathesis.check
def errors_are_json(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> bool | None:
    """Every error answers with the JSON body {"error": {"code", "message", "details"}}."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError as exc:
        raise AssertionError(f"{response.status_code} without a JSON body: {response.text[:200]!r}") from exc
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(error) != {"code", "message", "details"}:
        raise AssertionError(f"{response.status_code} with a body that is not a JSON error: {body!r:.300}")
    return None


CHECKS = [not_a_server_error, errors_are_json, status_code_conformance, response_schema_conformance]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Any]:
    """The app on SQLite; schemathesis' ASGI client runs its lifespan (worker, watcher) on its own loop."""
    with database("sqlite", tmp_path) as url:
        # Generated ?wait= values must not hold requests for long.
        settings = fast_settings(tmp_path / "data", url, long_poll_max_s=0.05)
        application = create_app(settings)
        try:
            yield application
        finally:
            asgi.shutdown_lifespans()


def _credentials(operation: Any, target: Target) -> dict[str, str]:
    tags = operation.tags or []
    if "health" in tags:
        return {}
    if "clients" not in tags:
        return dict(ADMIN)
    if operation.method.upper() == "POST" and operation.path.endswith("/clients"):
        return {"Authorization": f"Bearer {target.federation['join_token']}"}
    return dict(target.client.headers)


def _strategies(operation: Any, target: Target) -> dict[str, Any]:
    pinned = {p.name: target.path_values[p.name] for p in operation.path_parameters if p.name in target.path_values}
    strategies = {"positive": operation.as_strategy()}
    if pinned:
        strategies["positive, pinned"] = operation.as_strategy(path_parameters=pinned)
    # A negative case needs something to break; the Authorization header is always replaced.
    if _negatable(operation, set()):
        strategies["negative"] = operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)
    if pinned and _negatable(operation, set(pinned)):
        strategies["negative, pinned"] = operation.as_strategy(
            generation_mode=GenerationMode.NEGATIVE, path_parameters=pinned
        )
    return strategies


def _negatable(operation: Any, pinned: set[str]) -> bool:
    parameters = [p for p in operation.iter_parameters() if p.name.lower() != "authorization" and p.name not in pinned]
    return any(map(_constrained, parameters)) or bool(operation.body)


def _constrained(parameter: Any) -> bool:
    """Whether some value breaks the parameter (any text is a valid optional header like Range)."""
    schema = {key: value for key, value in parameter.optimized_schema.items() if key != "title"}
    any_text = schema in ({"type": "string"}, {"anyOf": [{"type": "string"}, {"type": "null"}]})
    return parameter.is_required or not any_text


def _fuzz(operation: Any, target: Target, session: Any, tally: Tally) -> None:
    credentials = _credentials(operation, target)
    for name, strategy in _strategies(operation, target).items():
        true_sha = name == "positive, pinned" and "/uploads/" in operation.path
        try:
            _run(strategy, credentials, session, tally, true_sha=true_sha)
        except (Exception, BaseExceptionGroup) as exc:  # collected: one report names every failing operation
            tally.failures[f"{operation.label} ({name})"] = f"{type(exc).__name__}: {exc}"[:3000]


def _run(strategy: Any, credentials: dict[str, str], session: Any, tally: Tally, *, true_sha: bool) -> None:
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=strategy)
    def run(case: Any) -> None:
        headers = dict(credentials)
        if true_sha:
            body = case.as_transport_kwargs(base_url="http://testserver").get("data") or b""
            headers["Content-SHA256"] = hashlib.sha256(body.encode() if isinstance(body, str) else body).hexdigest()
        response = case.call(session=session, headers=headers)
        tally.requests += 1
        tally.statuses[response.status_code] = tally.statuses.get(response.status_code, 0) + 1
        statuses = tally.per_operation.setdefault(case.operation.label, {})
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        case.validate_response(response, checks=CHECKS)

    run()


def test_no_generated_request_gets_a_server_error_or_breaks_the_schema(app: Any) -> None:
    # Prepare
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the app's lifespan
    session = asgi.get_client(app)
    federation = create_federation(session, rounds=1, clients_per_round=2, round_deadline_s=3600)
    client = enroll(session, federation, "mm", ["image", "text"], "dual-s")
    enroll(session, federation, "img", ["image"], "image-cnn-s")
    start(session, federation["id"])
    wait_for_round(session, federation["id"], 1, ("open",))
    target = Target(
        federation=federation,
        client=client,
        path_values={"federation_id": federation["id"], "number": 1, "client_id": client.id},
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    operations.sort(key=lambda op: (op.path.endswith(DESTRUCTIVE), op.label))
    tally = Tally()
    started = time.monotonic()

    # Execute
    for operation in operations:
        _fuzz(operation, target, session, tally)

    # Assert
    print(
        f"\nschemathesis: {len(operations)} operations, {tally.requests} requests in "
        f"{time.monotonic() - started:.1f}s; statuses {dict(sorted(tally.statuses.items()))}"
    )
    for label, statuses in sorted(tally.per_operation.items()):
        print(f"  {sum(statuses.values()):4d}  {label}  {dict(sorted(statuses.items()))}")
    assert len(operations) >= 18, [op.label for op in operations]
    assert all(tally.per_operation.get(op.label) for op in operations), tally.per_operation
    assert not tally.failures, "\n\n".join(f"{label}:\n{error}" for label, error in tally.failures.items())
    assert not any(status >= 500 for status in tally.statuses), tally.statuses
