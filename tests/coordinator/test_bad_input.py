"""Bad input never yields a 5xx, on SQLite and PostgreSQL.

Every malformed, oversized, mistyped or misaddressed request gets the documented 4xx with the JSON
error body, and changes nothing: a previously accepted upload is still there with the same sha256,
no rows appear, and no staged write is left in the artifact store.

Most cases share one open round per database (module scope): a federation whose three clients are
all selected, the image-only client's upload already accepted, the others yet to upload. A case may
not change that state; ``assert_unchanged`` checks after each one that it did not.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from sqlalchemy import select

from coordinator_service.api.deps import Services
from coordinator_service.app import create_app
from coordinator_service.artifacts import LocalArtifactStore
from coordinator_service.db.models import Client, Federation, Report, Round, Upload
from creamfl.payload import encode_payload
from shared_schemas.client import ClientCreate
from shared_schemas.federation import FederationCreate
from tests.coordinator.databases import database
from tests.coordinator.helpers import (
    ADMIN,
    API,
    EnrolledClient,
    assert_error,
    create_federation,
    enroll,
    enroll_mix,
    fast_settings,
    next_task,
    payload,
    put_payload,
    round_detail,
    start,
    wait_for_round,
)

MAX_UPLOAD = 4096  # a valid payload of the tiny federation is ~0.9 KiB
OCTETS = "application/octet-stream"


@dataclass
class OpenRound:
    http: TestClient
    services: Services
    federation: dict[str, Any]
    img: EnrolledClient  # its image upload is accepted
    txt: EnrolledClient
    mm: EnrolledClient  # image + text, nothing uploaded
    task: dict[str, Any]
    accepted: bytes
    baseline: dict[str, Any]  # snapshot() right after the accepted upload

    @property
    def rows(self) -> int:
        return len(self.task["subset"])

    @property
    def dim(self) -> int:
        return int(self.task["embed_dim"])

    def url(self, kind: str, modality: str = "image", number: int = 1, federation_id: str | None = None) -> str:
        return f"{API}/federations/{federation_id or self.federation['id']}/rounds/{number}/{kind}/{modality}"


def snapshot(services: Services) -> dict[str, Any]:
    """What a refused request must leave alone: the rows that matter and the stored files."""
    with services.db() as session:
        state = {
            "uploads": sorted((u.client_id, u.modality, u.sha256, u.size) for u in session.scalars(select(Upload))),
            "reports": sorted((r.client_id, r.round_id) for r in session.scalars(select(Report))),
            "clients": sorted((c.id, c.name, c.status) for c in session.scalars(select(Client))),
            "federations": sorted((f.id, f.state, f.current_round) for f in session.scalars(select(Federation))),
            "rounds": sorted((r.federation_id, r.number, r.state, r.attempt) for r in session.scalars(select(Round))),
        }
    state["files"] = sorted(artifact.sha256 for artifact in services.store.list_stored())
    return state


def staging_files(services: Services) -> list[str]:
    """Staged writes in progress or left behind (the local backend shows them)."""
    assert isinstance(services.store, LocalArtifactStore)
    return services.store.staging_files()


def assert_unchanged(env: OpenRound) -> None:
    assert snapshot(env.services) == env.baseline
    assert staging_files(env.services) == [], "a refused upload left a staged write behind"
    sha = hashlib.sha256(env.accepted).hexdigest()
    assert hashlib.sha256(env.services.store.read(sha)).hexdigest() == sha


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenRound]:
    directory = tmp_path_factory.mktemp(f"bad-input-{request.param}")
    with database(request.param, directory) as url:
        settings = fast_settings(directory / "data", url, max_upload_bytes=MAX_UPLOAD)
        with TestClient(create_app(settings)) as http:
            federation = create_federation(http, rounds=1, clients_per_round=3, round_deadline_s=3600)
            img, txt, mm = enroll_mix(http, federation)
            start(http, federation["id"])
            wait_for_round(http, federation["id"], 1, ("open",))
            task = next_task(http, federation["id"], mm, wait=0)
            accepted = encode_payload(
                {"image": unit_rows(len(task["subset"]), task["embed_dim"], seed=7)},
                indices=torch.tensor(task["subset"]),
            )
            response = put_payload(http, task["upload_urls"]["image"], img, accepted)
            assert response.status_code == 201, response.text
            services: Services = http.app.state.services  # type: ignore[attr-defined]
            yield OpenRound(http, services, federation, img, txt, mm, task, accepted, snapshot(services))


def unit_rows(rows: int, dim: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(rows, dim, generator=generator), dim=1)


def tensors(**named: torch.Tensor) -> bytes:
    return st_save({name.replace("__", "."): t.contiguous() for name, t in named.items()})


def int8_with(rows: int, dim: int, *, scale: torch.Tensor | None) -> bytes:
    """A valid int8 payload with its ``image.scale`` replaced, or dropped (None)."""
    loaded = st_load(encode_payload({"image": unit_rows(rows, dim)}, dtype="int8"))
    del loaded["image.scale"]
    if scale is not None:
        loaded["image.scale"] = scale
    return st_save(loaded)


def with_indices(rows: int, dim: int, indices: torch.Tensor) -> bytes:
    return st_save({"image": unit_rows(rows, dim).half(), "indices": indices.contiguous()})


def _valid(n: int, d: int) -> bytes:
    return payload(n, d, "image")


def _scale(n: int, value: float) -> torch.Tensor:
    return torch.full((n,), value)


@dataclass(frozen=True)
class BadPayload:
    reason: str  # what the error message says: refused for this defect, not another one
    build: Callable[[int, int, list[int]], bytes]  # (rows, dim, subset) -> body
    modality: str = "image"  # of the upload URL


UNREADABLE, SHAPE, DTYPE, NONFINITE = (
    "not a valid safetensors payload",
    "expected shape",
    "is not allowed",
    "NaN or Inf",
)
SCALES, UNEXPECTED, MISSING_TENSOR, INDICES = "int8 payloads need", "unexpected tensors", "no tensor named", "indices"
NORM = "L2 norm"


def _nonfinite(n: int, d: int, value: float, dtype: torch.dtype) -> bytes:
    return tensors(image=unit_rows(n, d).index_fill(0, torch.tensor([3]), value).to(dtype))


BAD_PAYLOADS: dict[str, BadPayload] = {
    "truncated in the data": BadPayload(UNREADABLE, lambda n, d, s: _valid(n, d)[: len(_valid(n, d)) // 2]),
    "truncated in the header": BadPayload(UNREADABLE, lambda n, d, s: _valid(n, d)[:12]),
    "empty body": BadPayload(UNREADABLE, lambda n, d, s: b""),
    "garbage bytes": BadPayload(UNREADABLE, lambda n, d, s: random.Random(0).randbytes(700)),
    "header length beyond the body": BadPayload(UNREADABLE, lambda n, d, s: struct.pack("<Q", 1 << 40) + b"{}"),
    "header not JSON": BadPayload(UNREADABLE, lambda n, d, s: struct.pack("<Q", 8) + b"not json"),
    "header JSON of the wrong shape": BadPayload(UNREADABLE, lambda n, d, s: struct.pack("<Q", 8) + b"[1,2,3] "),
    "shape [n, d+1]": BadPayload(SHAPE, lambda n, d, s: tensors(image=unit_rows(n, d + 1).half())),
    "shape [n-1, d]": BadPayload(SHAPE, lambda n, d, s: tensors(image=unit_rows(n - 1, d).half())),
    "shape [n+1, d]": BadPayload(SHAPE, lambda n, d, s: tensors(image=unit_rows(n + 1, d).half())),
    "shape [d, n]": BadPayload(SHAPE, lambda n, d, s: tensors(image=unit_rows(d, n).half())),
    "shape [n*d] (1-D)": BadPayload(SHAPE, lambda n, d, s: tensors(image=unit_rows(n, d).half().flatten())),
    "shape [n, d, 1] (3-D)": BadPayload(SHAPE, lambda n, d, s: tensors(image=unit_rows(n, d).half()[..., None])),
    "shape [] (scalar)": BadPayload(SHAPE, lambda n, d, s: tensors(image=torch.tensor(1.0).half())),
    "shape [0, d]": BadPayload(SHAPE, lambda n, d, s: tensors(image=torch.zeros(0, d).half())),
    "dtype float64": BadPayload(DTYPE, lambda n, d, s: tensors(image=unit_rows(n, d).double())),
    "dtype bfloat16": BadPayload(DTYPE, lambda n, d, s: tensors(image=unit_rows(n, d).bfloat16())),
    "dtype int32": BadPayload(DTYPE, lambda n, d, s: tensors(image=(unit_rows(n, d) * 100).int())),
    "dtype int16": BadPayload(DTYPE, lambda n, d, s: tensors(image=(unit_rows(n, d) * 100).short())),
    "dtype uint8": BadPayload(DTYPE, lambda n, d, s: tensors(image=(unit_rows(n, d) > 0).to(torch.uint8))),
    "dtype bool": BadPayload(DTYPE, lambda n, d, s: tensors(image=unit_rows(n, d) > 0)),
    "dtype float8": BadPayload(DTYPE, lambda n, d, s: tensors(image=unit_rows(n, d).to(torch.float8_e4m3fn))),
    "a NaN in float16": BadPayload(NONFINITE, lambda n, d, s: _nonfinite(n, d, float("nan"), torch.float16)),
    "an Inf in float32": BadPayload(NONFINITE, lambda n, d, s: _nonfinite(n, d, float("inf"), torch.float32)),
    "a -Inf in float16": BadPayload(NONFINITE, lambda n, d, s: _nonfinite(n, d, float("-inf"), torch.float16)),
    # Finite on the wire, not once decoded: 127 * 3e38 is Inf in float32 (issue 11).
    "int8 127s with a finite scale of 3e38": BadPayload(
        NONFINITE,
        lambda n, d, s: tensors(image=torch.full((n, d), 127, dtype=torch.int8), image__scale=_scale(n, 3e38)),
    ),
    "int8 rows of magnitude 1e30": BadPayload(NORM, lambda n, d, s: int8_with(n, d, scale=_scale(n, 1e30 / 127))),
    "float32 rows of norm 3e38": BadPayload(NORM, lambda n, d, s: tensors(image=unit_rows(n, d) * 3e38)),
    "float16 rows of norm 6e4": BadPayload(NORM, lambda n, d, s: tensors(image=(unit_rows(n, d) * 6e4).half())),
    "int8 without its scale": BadPayload(UNEXPECTED, lambda n, d, s: int8_with(n, d, scale=None)),
    "int8 scale of n-1 rows": BadPayload(SCALES, lambda n, d, s: int8_with(n, d, scale=_scale(n - 1, 0.01))),
    "int8 scale of shape [n, 1]": BadPayload(SCALES, lambda n, d, s: int8_with(n, d, scale=_scale(n, 0.01)[:, None])),
    "int8 zero scale": BadPayload(SCALES, lambda n, d, s: int8_with(n, d, scale=_scale(n, 0.0))),
    "int8 negative scale": BadPayload(SCALES, lambda n, d, s: int8_with(n, d, scale=_scale(n, -0.01))),
    "int8 NaN scale": BadPayload(SCALES, lambda n, d, s: int8_with(n, d, scale=_scale(n, float("nan")))),
    "int8 Inf scale": BadPayload(SCALES, lambda n, d, s: int8_with(n, d, scale=_scale(n, float("inf")))),
    # Scales of dtypes whose comparisons torch does not implement: a 422, never a 500.
    "int8 zero scale as uint16": BadPayload(
        SCALES, lambda n, d, s: int8_with(n, d, scale=_scale(n, 0.0).to(torch.uint16))
    ),
    "int8 NaN scale as float8": BadPayload(
        SCALES, lambda n, d, s: int8_with(n, d, scale=_scale(n, float("nan")).to(torch.float8_e4m3fn))
    ),
    "a scale beside a float16 tensor": BadPayload(
        UNEXPECTED, lambda n, d, s: tensors(image=unit_rows(n, d).half(), image__scale=_scale(n, 1.0))
    ),
    "an extra tensor": BadPayload(
        UNEXPECTED, lambda n, d, s: tensors(image=unit_rows(n, d).half(), extra=torch.zeros(1))
    ),
    "both modalities in one payload": BadPayload(
        UNEXPECTED, lambda n, d, s: tensors(image=unit_rows(n, d).half(), text=unit_rows(n, d).half())
    ),
    "wrong tensor name": BadPayload(MISSING_TENSOR, lambda n, d, s: tensors(img=unit_rows(n, d).half())),
    "the other modality's tensor": BadPayload(MISSING_TENSOR, lambda n, d, s: tensors(text=unit_rows(n, d).half())),
    "an image tensor to the text URL": BadPayload(
        MISSING_TENSOR, lambda n, d, s: tensors(image=unit_rows(n, d).half()), modality="text"
    ),
    "indices reversed": BadPayload(INDICES, lambda n, d, s: with_indices(n, d, torch.tensor(s[::-1]))),
    "indices shifted by one": BadPayload(INDICES, lambda n, d, s: with_indices(n, d, torch.tensor(s) + 1)),
    "indices one short": BadPayload(INDICES, lambda n, d, s: with_indices(n, d, torch.tensor(s[:-1]))),
    "indices as a 2-D tensor": BadPayload(INDICES, lambda n, d, s: with_indices(n, d, torch.tensor(s)[None])),
}


@pytest.mark.parametrize("case", BAD_PAYLOADS, ids=list(BAD_PAYLOADS))
def test_an_invalid_payload_is_refused_before_anything_is_stored(env: OpenRound, case: str) -> None:
    # Prepare
    bad = BAD_PAYLOADS[case]
    body = bad.build(env.rows, env.dim, env.task["subset"])

    # Execute
    response = put_payload(env.http, env.url("uploads", bad.modality), env.mm, body)

    # Assert
    error = assert_error(response, 422, "invalid")
    assert bad.reason in error["message"], error
    assert_unchanged(env)


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/json", "multipart/form-data; boundary=x", "application/octet-streamx", None],
)
def test_an_upload_of_the_wrong_content_type_is_refused(env: OpenRound, content_type: str | None) -> None:
    # Prepare
    body = payload(env.rows, env.dim, "image")
    headers = {**env.mm.headers, "Content-SHA256": hashlib.sha256(body).hexdigest()}
    if content_type is not None:
        headers["Content-Type"] = content_type

    # Execute
    response = env.http.put(env.url("uploads"), content=body, headers=headers)

    # Assert
    assert_error(response, 415, "unsupported_media_type")
    assert_unchanged(env)


@pytest.mark.parametrize(
    "declared",
    [None, "", "abc", "a" * 63, "a" * 65, "g" * 64, "a" * 63 + "\u00e9", "sha256:" + "a" * 64, "mismatch"],
)
def test_an_upload_with_a_missing_malformed_or_wrong_sha256_is_refused(env: OpenRound, declared: str | None) -> None:
    # Prepare
    body = payload(env.rows, env.dim, "image")
    headers = {**env.mm.headers, "Content-Type": OCTETS}
    if declared == "mismatch":  # well-formed, but of other bytes: the body is checked against it
        headers["Content-SHA256"] = hashlib.sha256(body + b"\0").hexdigest()
    elif declared is not None:
        headers["Content-SHA256"] = declared

    # Execute
    response = env.http.put(
        env.url("uploads"), content=body, headers={k: v.encode("latin-1") for k, v in headers.items()}
    )

    # Assert
    assert_error(response, 422, "invalid")
    assert_unchanged(env)


def test_an_upload_with_a_content_length_over_the_limit_is_refused_unread(env: OpenRound) -> None:
    # Prepare
    body = random.Random(1).randbytes(MAX_UPLOAD + 1)
    chunks_sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for offset in range(0, len(body), 512):
            chunks_sent += 1
            yield body[offset : offset + 512]

    headers = {**upload_headers(env.mm, body), "Content-Length": str(len(body))}

    # Execute
    buffered = put_payload(env.http, env.url("uploads"), env.mm, body)
    streamed = asyncio.run(stream_upload(env, chunks(), headers))

    # Assert
    assert buffered.request.headers["content-length"] == str(MAX_UPLOAD + 1)
    assert_error(buffered, 413, "payload_too_large")
    assert_error(streamed, 413, "payload_too_large")
    assert chunks_sent == 0  # refused on the header alone
    assert_unchanged(env)


def test_a_streamed_upload_without_content_length_is_cut_off_at_the_limit(env: OpenRound) -> None:
    # Prepare
    body = random.Random(2).randbytes(16 * 1024)
    chunks_sent = 0

    def blocking_chunks() -> Iterator[bytes]:
        yield from (body[offset : offset + 1024] for offset in range(0, len(body), 1024))

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for offset in range(0, len(body), 1024):
            chunks_sent += 1
            yield body[offset : offset + 1024]

    # Execute
    chunked = env.http.put(env.url("uploads"), content=blocking_chunks(), headers=upload_headers(env.mm, body))
    streamed = asyncio.run(stream_upload(env, chunks(), upload_headers(env.mm, body)))

    # Assert
    assert "content-length" not in chunked.request.headers
    assert chunked.request.headers["transfer-encoding"] == "chunked"
    assert_error(chunked, 413, "payload_too_large")
    assert_error(streamed, 413, "payload_too_large")
    assert chunks_sent <= MAX_UPLOAD // 1024 + 2 < len(body) // 1024  # stopped reading at the limit
    assert_unchanged(env)


def test_an_upload_of_exactly_the_limit_is_read_and_then_validated(env: OpenRound) -> None:
    # Prepare
    body = random.Random(3).randbytes(MAX_UPLOAD)

    # Execute
    response = put_payload(env.http, env.url("uploads"), env.mm, body)

    # Assert
    assert_error(response, 422, "invalid")  # not 413: the limit is inclusive
    assert_unchanged(env)


def upload_headers(client: EnrolledClient, body: bytes) -> dict[str, str]:
    return {**client.headers, "Content-SHA256": hashlib.sha256(body).hexdigest(), "Content-Type": OCTETS}


async def stream_upload(env: OpenRound, chunks: AsyncIterator[bytes], headers: dict[str, str]) -> httpx.Response:
    """Each chunk reaches the app as its own ASGI message (TestClient would join them into one)."""
    transport = httpx.ASGITransport(app=env.http.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        return await http.put(env.url("uploads"), content=chunks, headers=headers)


@pytest.mark.parametrize(
    ("who", "kind", "modality", "number", "federation_id", "status", "code"),
    [
        ("mm", "uploads", "image", 99, None, 404, "not_found"),
        ("mm", "uploads", "image", 0, None, 422, "invalid"),
        ("mm", "uploads", "image", 10**7, None, 422, "invalid"),
        ("mm", "uploads", "image", "one", None, 422, "invalid"),
        ("mm", "uploads", "audio", 1, None, 422, "invalid"),
        ("mm", "uploads", "IMAGE", 1, None, 422, "invalid"),
        ("mm", "uploads", "image", 1, "fed-000000000000", 403, "forbidden"),
        ("mm", "uploads", "image", 1, "bad.federation", 422, "invalid"),
        ("mm", "uploads", "image", 1, "x" * 33, 422, "invalid"),
        ("txt", "uploads", "image", 1, None, 422, "invalid"),  # a modality this client does not have
        ("img", "uploads", "text", 1, None, 422, "invalid"),
        ("mm", "global", "image", 99, None, 404, "not_found"),
        ("mm", "global", "audio", 1, None, 422, "invalid"),
        ("mm", "global", "image", 0, None, 422, "invalid"),
    ],
)
def test_a_misaddressed_upload_or_download_is_refused(
    env: OpenRound,
    who: str,
    kind: str,
    modality: str,
    number: Any,
    federation_id: str | None,
    status: int,
    code: str,
) -> None:
    # Prepare
    client = {"mm": env.mm, "txt": env.txt, "img": env.img}[who]
    url = env.url(kind, modality, number, federation_id)
    body = payload(env.rows, env.dim, modality if modality in ("image", "text") else "image")

    # Execute
    if kind == "uploads":
        response = put_payload(env.http, url, client, body)
    else:
        response = env.http.get(url, headers=client.headers)

    # Assert
    assert_error(response, status, code)
    assert_unchanged(env)


def test_a_repeat_is_accepted_but_different_content_conflicts(env: OpenRound) -> None:
    # Prepare
    url = env.url("uploads")
    accepted_sha = hashlib.sha256(env.accepted).hexdigest()
    different = payload(env.rows, env.dim, "image", seed=99)
    same_reps_as_int8 = encode_payload({"image": unit_rows(env.rows, env.dim, seed=7)}, dtype="int8")

    # Execute
    repeat = put_payload(env.http, url, env.img, env.accepted)
    conflict = put_payload(env.http, url, env.img, different)
    requantised = put_payload(env.http, url, env.img, same_reps_as_int8)

    # Assert
    assert repeat.status_code == 200, repeat.text
    assert repeat.json()["sha256"] == accepted_sha
    error = assert_error(conflict, 409, "conflict")
    assert error["details"]["sha256"] == accepted_sha
    assert_error(requantised, 409, "conflict")
    assert_unchanged(env)


FEDERATION_BODIES: dict[str, tuple[str | bytes, str, int]] = {
    "truncated JSON": ('{"name": "x",', "application/json", 422),
    "not JSON": ("not json", "application/json", 422),
    "empty body": ("", "application/json", 422),
    "a JSON list": ("[]", "application/json", 422),
    "JSON null": ("null", "application/json", 422),
    "a JSON string": ('"federation"', "application/json", 422),
    "trailing garbage": ('{"name": "x"}garbage', "application/json", 422),
    "invalid UTF-8": (b'{"name": "\xff\xfe"}', "application/json", 400),
    "NaN literal": ('{"name": "x", "round_deadline_s": NaN}', "application/json", 422),
    "Infinity literal": ('{"name": "x", "kd_weight": Infinity}', "application/json", 422),
    "JSON sent as text/plain": ('{"name": "x"}', "text/plain", 422),
}


@pytest.mark.parametrize("case", FEDERATION_BODIES, ids=list(FEDERATION_BODIES))
def test_a_malformed_federation_body_is_refused(env: OpenRound, case: str) -> None:
    # Prepare
    body, content_type, status = FEDERATION_BODIES[case]

    # Execute
    response = env.http.post(f"{API}/federations", content=body, headers={**ADMIN, "Content-Type": content_type})

    # Assert
    assert_error(response, status, "invalid" if status == 422 else "bad_request")
    assert_unchanged(env)


MISSING = object()  # a key to leave out


def changed(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = {**base, **changes}
    return {key: value for key, value in merged.items() if value is not MISSING}


FEDERATION_CONFIGS: dict[str, dict[str, Any]] = {
    "no name": {"name": MISSING},
    "empty name": {"name": ""},
    "name too long": {"name": "x" * 101},
    "name not a string": {"name": 7},
    "NUL in the name": {"name": "a\x00b"},
    "newline in the name": {"name": "two\nlines"},
    "embed_dim a word": {"embed_dim": "big"},
    "embed_dim below 8": {"embed_dim": 7},
    "rounds negative": {"rounds": -1},
    "rounds fractional": {"rounds": 1.5},
    "clients_per_round null": {"clients_per_round": None},
    "public_set a string": {"public_set": "x"},
    "public_set of one pair": {"public_set": {"size": 1, "test_size": 12}},
    "image_widths a string": {"server": {"image_widths": "abc"}},
    "image_widths of zero": {"server": {"image_widths": [0]}},
    "unknown strategy": {"strategy": "fedavg"},
    "unknown payload dtype": {"payload_dtype": "float64"},
    "deadline zero": {"round_deadline_s": 0},
    "seed beyond int32": {"seed": 2**31},
    "unknown top-level field": {"clients_per_rond": 3},
    "unknown public_set field": {"public_set": {"size": 24, "test_size": 12, "extra": 1}},
    "unknown server field": {"server": {"image_widths": [8], "extra": 1}},
    "unknown client field": {"client": {"extra": 1}},
    "min_clients above clients_per_round": {"clients_per_round": 3, "min_clients": 4},
    "subset larger than the public set": {"public_subset_size": 25},
}


@pytest.mark.parametrize("case", FEDERATION_CONFIGS, ids=list(FEDERATION_CONFIGS))
def test_an_invalid_federation_config_is_refused(env: OpenRound, case: str) -> None:
    # Prepare
    FederationCreate.model_validate(env.federation["config"])  # the base is valid: only the change is not
    config = changed(env.federation["config"], FEDERATION_CONFIGS[case])

    # Execute
    response = env.http.post(f"{API}/federations", json=config, headers=ADMIN)

    # Assert
    error = assert_error(response, 422, "invalid")
    assert error["details"]["errors"], error
    assert_unchanged(env)


# a str is sent as the raw JSON body; a dict changes a valid request (MISSING leaves a key out)
ENROLLMENTS: dict[str, tuple[str | dict[str, Any], int, str]] = {
    "truncated JSON": ('{"name": "x",', 422, "invalid"),
    "empty body": ("", 422, "invalid"),
    "a JSON list": ("[]", 422, "invalid"),
    "no name": ({"name": MISSING}, 422, "invalid"),
    "empty name": ({"name": ""}, 422, "invalid"),
    "name with a space": ({"name": "two words"}, 422, "invalid"),
    "name with a slash": ({"name": "../etc"}, 422, "invalid"),
    "name starting with a dash": ({"name": "-x"}, 422, "invalid"),
    "name too long": ({"name": "x" * 101}, 422, "invalid"),
    "name not a string": ({"name": 5}, 422, "invalid"),
    "no modalities": ({"modalities": []}, 422, "invalid"),
    "unknown modality": ({"modalities": ["audio"]}, 422, "invalid"),
    "repeated modality": ({"modalities": ["image", "image"]}, 422, "invalid"),
    "modalities a string": ({"modalities": "image"}, 422, "invalid"),
    "empty model": ({"model": ""}, 422, "invalid"),
    "NUL in the model": ({"model": "cnn\x00"}, 422, "invalid"),
    "model too long": ({"model": "m" * 101}, 422, "invalid"),
    "model of other modalities": ({"model": "text-gru-s"}, 422, "invalid"),
    "no samples": ({"samples": MISSING}, 422, "invalid"),
    "negative samples": ({"samples": -1}, 422, "invalid"),
    "too many samples": ({"samples": 10**12}, 422, "invalid"),
    "samples a word": ({"samples": "many"}, 422, "invalid"),
    "fractional samples": ({"samples": 1.5}, 422, "invalid"),
    "unknown field": ({"token": "mine"}, 422, "invalid"),
    "a name already enrolled": ({"name": "img"}, 409, "conflict"),
}


@pytest.mark.parametrize("case", ENROLLMENTS, ids=list(ENROLLMENTS))
def test_an_invalid_enrollment_is_refused(env: OpenRound, case: str) -> None:
    # Prepare
    change, status, code = ENROLLMENTS[case]
    headers = {"Authorization": f"Bearer {env.federation['join_token']}"}
    url = f"{API}/federations/{env.federation['id']}/clients"
    valid = {"name": "newcomer", "modalities": ["image"], "model": "image-cnn-s", "samples": 10}
    ClientCreate.model_validate(valid)  # the base is valid: only the change is not

    # Execute
    if isinstance(change, str):
        response = env.http.post(url, content=change, headers={**headers, "Content-Type": "application/json"})
    else:
        response = env.http.post(url, json=changed(valid, change), headers=headers)

    # Assert
    assert_error(response, status, code)
    assert_unchanged(env)


REPORTS: dict[str, tuple[str, int, int, str]] = {
    "NaN": ('{"metrics": {"loss": NaN}}', 1, 422, "invalid"),
    "Infinity": ('{"metrics": {"loss": Infinity}}', 1, 422, "invalid"),
    "-Infinity": ('{"metrics": {"loss": -Infinity}}', 1, 422, "invalid"),
    "inf as a string": ('{"metrics": {"loss": "inf"}}', 1, 422, "invalid"),
    "a word": ('{"metrics": {"loss": "low"}}', 1, 422, "invalid"),
    "metrics a list": ('{"metrics": [1.0]}', 1, 422, "invalid"),
    "metrics a number": ('{"metrics": 1}', 1, 422, "invalid"),
    "no metrics": ("{}", 1, 422, "invalid"),
    "too many metrics": ('{"metrics": {' + ", ".join(f'"m{i}": 1' for i in range(65)) + "}}", 1, 422, "invalid"),
    "unknown field": ('{"metrics": {}, "extra": 1}', 1, 422, "invalid"),
    "truncated JSON": ('{"metrics": {', 1, 422, "invalid"),
    "unknown round": ('{"metrics": {"loss": 1.0}}', 99, 404, "not_found"),
    "round zero": ('{"metrics": {"loss": 1.0}}', 0, 422, "invalid"),
}


@pytest.mark.parametrize("case", REPORTS, ids=list(REPORTS))
def test_an_invalid_report_is_refused(env: OpenRound, case: str) -> None:
    # Prepare
    body, number, status, code = REPORTS[case]
    url = f"{API}/federations/{env.federation['id']}/rounds/{number}/reports"

    # Execute
    response = env.http.post(url, content=body, headers={**env.mm.headers, "Content-Type": "application/json"})

    # Assert
    assert_error(response, status, code)
    assert_unchanged(env)


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("bytes=abc", 422),
        ("items=0-1", 422),
        ("bytes=0-1,3-4", 422),
        ("bytes=-", 422),
        ("bytes=", 422),
        ("bytes=1-2-3", 422),
        ("bytes=5-2", 416),
        ("bytes={size}-", 416),
        ("bytes=-0", 416),
        ("bytes=99999999999999999999-", 422),
        ("bytes=" + "9" * 5000 + "-", 422),
        ("bytes=0-" + "9" * 5000, 422),
        ("bytes=-" + "9" * 5000, 422),
    ],
)
def test_a_bad_range_on_a_download_is_refused(env: OpenRound, value: str, status: int) -> None:
    # Prepare
    size = env.services.store.size(env.task["global_sha256"]["image"])

    # Execute
    response = env.http.get(env.url("global"), headers={**env.mm.headers, "Range": value.format(size=size)})

    # Assert
    assert_error(response, status, "invalid" if status == 422 else "range_not_satisfiable")
    assert_unchanged(env)


@pytest.mark.parametrize(
    ("value", "start", "stop"),
    [("bytes=0-0", 0, 1), ("bytes=-10", -10, None), ("bytes=10-", 10, None), ("bytes=0-99999999", 0, None)],
)
def test_a_good_range_on_a_download_is_served(env: OpenRound, value: str, start: int, stop: int | None) -> None:
    # Prepare
    url = env.url("global")
    full = env.http.get(url, headers=env.mm.headers).content
    bytes_down = round_detail(env.http, env.federation["id"], 1)["bytes_down"]

    # Execute
    response = env.http.get(url, headers={**env.mm.headers, "Range": value})

    # Assert
    assert response.status_code == 206, response.text
    assert response.content == full[start:stop]
    assert round_detail(env.http, env.federation["id"], 1)["bytes_down"] == bytes_down  # a part is not counted


@pytest.mark.parametrize(
    ("method", "path", "params", "status"),
    [
        ("GET", "/federations/{fid}/rounds/0", {}, 422),
        ("GET", "/federations/{fid}/rounds/abc", {}, 422),
        ("GET", "/federations/{fid}/rounds/10000000", {}, 422),
        ("GET", "/federations/{fid}/rounds/99", {}, 404),
        ("GET", "/federations/bad.id", {}, 422),
        ("GET", "/federations/" + "x" * 33, {}, 422),
        ("GET", "/federations/fed-000000000000", {}, 404),
        ("POST", "/federations/fed-000000000000/start", {}, 404),
        ("POST", "/federations/{fid}/clients/%00/revoke", {}, 422),
        ("POST", "/federations/{fid}/clients/" + "x" * 33 + "/revoke", {}, 422),
        ("POST", "/federations/{fid}/clients/cl-000000000000/revoke", {}, 404),
        ("GET", "/jobs", {"federation_id": "\x00"}, 422),
        ("GET", "/jobs", {"federation_id": ""}, 422),
        ("GET", "/jobs", {"federation_id": "x" * 33}, 422),
        ("POST", "/federations/{fid}/start", {}, 409),  # already running
        ("DELETE", "/federations/{fid}", {}, 405),
        ("GET", "/no-such-route", {}, 404),
    ],
)
def test_a_bad_admin_request_is_refused(
    env: OpenRound, method: str, path: str, params: dict[str, str], status: int
) -> None:
    # Prepare
    url = API + path.format(fid=env.federation["id"])

    # Execute
    response = env.http.request(method, url, params=params, headers=ADMIN)

    # Assert
    assert_error(response, status)
    assert_unchanged(env)


@pytest.mark.parametrize("wait", ["-1", "301", "abc", "nan", "inf", ""])
def test_a_bad_long_poll_wait_is_refused(env: OpenRound, wait: str) -> None:
    # Execute
    response = env.http.get(
        f"{API}/federations/{env.federation['id']}/tasks/next", params={"wait": wait}, headers=env.mm.headers
    )

    # Assert
    assert_error(response, 422, "invalid")
    assert_unchanged(env)


def test_closed_rounds_and_unselected_clients_take_no_uploads(client: TestClient) -> None:
    # Prepare: one seat; the seated client fills it, a later client is left out.
    federation = create_federation(client, rounds=1, clients_per_round=1)
    seated = enroll(client, federation, "seated", ["image"], "image-cnn-s")
    start(client, federation["id"])
    wait_for_round(client, federation["id"], 1, ("open",))
    late = enroll(client, federation, "late", ["image"], "image-cnn-s")
    task = next_task(client, federation["id"], seated, wait=0)
    url = task["upload_urls"]["image"]
    body = payload(len(task["subset"]), task["embed_dim"], "image", seed=1)
    late_body = payload(len(task["subset"]), task["embed_dim"], "image", seed=2)
    reports = f"{API}/federations/{federation['id']}/rounds/1/reports"

    # Execute
    late_task = next_task(client, federation["id"], late, wait=0)
    unselected = put_payload(client, url, late, late_body)
    unselected_report = client.post(reports, json={"metrics": {"loss": 1.0}}, headers=late.headers)
    accepted = put_payload(client, url, seated, body)  # the only seat uploaded: the round closes
    after_close = put_payload(client, url, late, late_body)
    conflict = put_payload(client, url, seated, late_body)
    repeat = put_payload(client, url, seated, body)

    # Assert
    assert late_task["kind"] == "wait"
    assert_error(unselected, 403, "forbidden")
    assert_error(unselected_report, 403, "forbidden")
    assert accepted.status_code == 201, accepted.text
    error = assert_error(after_close, 410, "gone")
    assert error["details"]["state"] != "open"
    assert_error(conflict, 409, "conflict")
    assert repeat.status_code == 200 and repeat.json()["sha256"] == hashlib.sha256(body).hexdigest()
    with client.app.state.services.db() as session:  # type: ignore[attr-defined]
        stored = [(u.client_id, u.sha256) for u in session.scalars(select(Upload))]
    assert stored == [(seated.id, hashlib.sha256(body).hexdigest())]
    # The closed round's jobs stage their own writes: look once they are done.
    wait_for_round(client, federation["id"], 1, ("completed", "failed"))
    assert staging_files(client.app.state.services) == []  # type: ignore[attr-defined]
