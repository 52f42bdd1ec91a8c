"""The coordinator's client API over an injected ``httpx.Client`` (DESIGN.md sections 4 and 8).

Tests drive it against the ASGI app in-process (``fastapi.testclient.TestClient`` is an
``httpx.Client``) and against a real uvicorn; the CLI passes a plain ``httpx.Client`` whose
``base_url`` is the coordinator's URL.

Every call retries with exponential backoff and jitter (``tenacity``) on connection errors,
timeouts, 408, 429 and 5xx, honouring ``Retry-After``; any other 4xx fails at once. Retrying an
upload is safe because uploads are idempotent (the same bytes again are a 200). Failures come out
as :class:`~client_agent.coordinator_errors.CoordinatorError` subclasses whose message is one line.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import TypeAdapter, ValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception_type
from tenacity.wait import wait_exponential_jitter

from client_agent.coordinator_errors import (
    CoordinatorError,
    IntegrityFailure,
    ServerFailing,
    Transient,
    Unreachable,
    check_status,
    describe_transport,
)
from client_agent.errors import AgentStopped, ConfigError
from shared_schemas.client import ClientCreate, ClientEnrolled
from shared_schemas.datasets import PublicSetManifest
from shared_schemas.rounds import DoneTask, ReportCreate, ReportPublic, Task, TrainTask, UploadPublic, WaitTask

API = "/api/v1"
CHUNK = 64 * 1024
PART_SUFFIX = ".part"  # a download in progress: its file's name and this
log = logging.getLogger("client_agent.http")
T = TypeVar("T")
Progress = Callable[[int, int | None], None]  # (bytes done, bytes total or None)
_TASK = TypeAdapter[Task](Task)
# The coordinator took the request, then the connection broke (it was killed or restarted).
_CUT_BY_THE_COORDINATOR = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadTimeout)


@dataclass(frozen=True)
class RetryPolicy:
    # Give up after this long without reaching a working coordinator; 0: never. Reaching it (an
    # answer other than a 5xx, or a connection it dropped mid-request, as a restart does) restarts
    # the window, so a coordinator restarted again and again during one long call is waited for.
    retry_for_s: float = 600.0
    initial_s: float = 0.5
    max_backoff_s: float = 30.0
    max_retry_after_s: float = 300.0


class RetryWindow:
    """How long a call may still retry: ``retry_for_s`` from its start or from the last time it
    reached the coordinator, whichever is later (``retry_for_s`` 0: forever)."""

    def __init__(self, retry_for_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.retry_for_s, self.clock = retry_for_s, clock
        self.since = clock()

    def reached(self) -> None:
        self.since = self.clock()

    def remaining(self) -> float:
        return max(self.retry_for_s - (self.clock() - self.since), 0.0) if self.retry_for_s > 0 else float("inf")

    def expired(self, _state: RetryCallState) -> bool:
        return self.remaining() <= 0


@dataclass(frozen=True)
class UploadResult:
    created: bool  # False: the coordinator already held exactly these bytes (a safe repeat)
    upload: UploadPublic


class CoordinatorClient:
    """Calls of one client of one federation. ``token`` is the client token (set by :meth:`enroll`)."""

    def __init__(
        self,
        http: httpx.Client,
        federation_id: str,
        *,
        token: str | None = None,
        retry: RetryPolicy | None = None,
        request_timeout_s: float = 60.0,
        stop: threading.Event | None = None,
    ) -> None:
        self.http = http
        self.federation_id = federation_id
        self.token = token
        self.retry = retry or RetryPolicy()
        self.timeout = request_timeout_s
        self.stop = stop or threading.Event()
        self._backoff = wait_exponential_jitter(
            multiplier=self.retry.initial_s, max=self.retry.max_backoff_s, jitter=self.retry.initial_s
        )

    @property
    def base(self) -> str:
        return f"{API}/federations/{self.federation_id}"

    # --- calls ---------------------------------------------------------------------------------

    def enroll(self, join_token: str, request: ClientCreate) -> ClientEnrolled:
        """Register this client; remembers the returned client token (shown only this once)."""
        response = self._call(
            "enroll",
            lambda: self.http.post(
                f"{self.base}/clients",
                json=request.model_dump(),
                headers={"Authorization": f"Bearer {join_token}"},
                timeout=self.timeout,
            ),
        )
        enrolled = _parse(ClientEnrolled.model_validate, response, "enroll")
        self.token = enrolled.token
        return enrolled

    def public_set(self) -> PublicSetManifest:
        response = self._call("public set", lambda: self.http.get(f"{self.base}/public-set", **self._opts()))
        return _parse(PublicSetManifest.model_validate, response, "public set")

    def next_task(self, wait: float) -> TrainTask | WaitTask | DoneTask:
        """Long-poll up to ``wait`` seconds for work."""
        timeout = httpx.Timeout(self.timeout, read=wait + self.timeout)
        response = self._call(
            "next task",
            lambda: self.http.get(
                f"{self.base}/tasks/next", params={"wait": wait}, headers=self._auth(), timeout=timeout
            ),
        )
        return _parse(_TASK.validate_python, response, "next task")

    def download_global(
        self, url: str, *, expected_sha256: str, cache_dir: Path, progress: Progress | None = None
    ) -> Path:
        """The file at ``url`` as ``cache_dir/<sha256>.safetensors``, checked against ``expected_sha256``."""
        final = cache_dir / f"{expected_sha256}.safetensors"
        return self._download(url, f"download {url}", expected_sha256=expected_sha256, final=final, progress=progress)

    def download_shard(self, sha256: str, *, to: Path, progress: Progress | None = None) -> Path:
        """The public set's shard ``sha256`` as the file ``to``, checked against its hash."""
        url = f"{self.base}/public-set/shards/{sha256}"
        return self._download(url, f"public-set shard {sha256}", expected_sha256=sha256, final=to, progress=progress)

    def download_tokenizer(self, sha256: str, *, to: Path, progress: Progress | None = None) -> Path:
        """The federation's tokenizer JSON (of hash ``sha256``) as the file ``to``."""
        url = f"{self.base}/public-set/tokenizer"
        what = f"the federation's tokenizer {sha256}"
        return self._download(url, what, expected_sha256=sha256, final=to, progress=progress)

    def upload(self, url: str, body: bytes, *, progress: Progress | None = None) -> UploadResult:
        """PUT a payload with its ``Content-SHA256``; a repeat of the same bytes is harmless (200)."""
        digest = hashlib.sha256(body).hexdigest()

        def attempt() -> httpx.Response:
            headers = {
                **self._auth(),
                "Content-SHA256": digest,
                "Content-Type": "application/octet-stream",
                "Content-Length": str(len(body)),
            }
            return self.http.put(url, content=_chunks(body, progress), headers=headers, timeout=self.timeout)

        response = self._call(f"upload {url}", attempt)
        result = _parse(UploadPublic.model_validate, response, "upload")
        return UploadResult(created=response.status_code == 201, upload=result)

    def report(self, round_number: int, metrics: dict[str, float]) -> ReportPublic:
        body = ReportCreate(metrics=metrics).model_dump()
        response = self._call(
            f"report round {round_number}",
            lambda: self.http.post(f"{self.base}/rounds/{round_number}/reports", json=body, **self._opts()),
        )
        return _parse(ReportPublic.model_validate, response, "report")

    # --- retries -------------------------------------------------------------------------------

    def _call(self, what: str, send: Callable[[], T]) -> T:
        """Run ``send`` (one attempt; returns a response or a value) under the retry policy."""
        started = time.monotonic()
        attempts = 0
        window = RetryWindow(self.retry.retry_for_s)

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            if self.stop.is_set():
                raise AgentStopped(what)
            try:
                result = send()
            except httpx.TransportError as exc:
                if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
                    raise ConfigError(f"{what}: cannot send the request: {exc}; check --coordinator") from exc
                if isinstance(exc, _CUT_BY_THE_COORDINATOR):
                    window.reached()
                raise Transient(describe_transport(exc)) from exc
            if isinstance(result, httpx.Response):
                if result.status_code < 500:
                    window.reached()
                check_status(what, result)
            return result

        retrying = Retrying(
            retry=retry_if_exception_type(Transient),
            wait=functools.partial(self._wait, window),
            stop=window.expired,
            sleep=self._sleep,
            before_sleep=lambda state: self._log_retry(what, state),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except Transient as exc:
            spent = time.monotonic() - started
            tail = f"{attempts} attempt{'s' * (attempts != 1)} over {spent:.0f}s"
            if exc.status is None:
                raise Unreachable(
                    f"cannot reach the coordinator at {self.http.base_url} ({what}): {exc} after {tail}; "
                    "check --coordinator and that the coordinator is running"
                ) from exc
            raise ServerFailing(
                f"{what}: the coordinator kept failing ({exc}) after {tail}; try again later or ask its operator"
            ) from exc

    def _wait(self, window: RetryWindow, state: RetryCallState) -> float:
        assert state.outcome is not None
        exc = state.outcome.exception()
        delay = float(self._backoff(state))
        if isinstance(exc, Transient) and exc.retry_after is not None:
            delay = min(max(exc.retry_after, 0.0), self.retry.max_retry_after_s)
        return min(delay, window.remaining())

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise AgentStopped("stopped while waiting to retry")

    def _log_retry(self, what: str, state: RetryCallState) -> None:
        assert state.outcome is not None and state.next_action is not None
        log.warning(
            "retry call=%r attempt=%d in_s=%.2f reason=%r",
            what,
            state.attempt_number,
            state.next_action.sleep,
            str(state.outcome.exception()),
        )

    # --- helpers -------------------------------------------------------------------------------

    def _auth(self) -> dict[str, str]:
        if self.token is None:
            raise ConfigError("this agent has no client token yet: enroll first")
        return {"Authorization": f"Bearer {self.token}"}

    def _opts(self) -> dict[str, Any]:
        return {"headers": self._auth(), "timeout": self.timeout}

    def _download(self, url: str, what: str, *, expected_sha256: str, final: Path, progress: Progress | None) -> Path:
        """The file at ``url`` as ``final``, streamed to disk and checked against ``expected_sha256``.

        A file already there under its hash costs no request. Bytes go to ``<final>.part`` beside
        it, so an interrupted download (a dropped connection, a restarted agent) resumes with a
        Range request. A complete file that fails its hash is deleted and downloaded once more; a
        second failure is an :class:`IntegrityFailure` naming ``what``."""
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.is_file():
            if sha256_file(final) == expected_sha256:
                log.debug("%s found in the cache", what)
                if progress is not None:
                    size = final.stat().st_size
                    progress(size, size)
                return final
            log.warning("cached=%s does not match its sha256: downloading it again", final)
            final.unlink()
        part = final.with_name(final.name + PART_SUFFIX)
        for attempt in range(2):
            self._call(what, lambda: self._download_attempt(url, what, part, expected_sha256, progress))
            if sha256_file(part) == expected_sha256:
                os.replace(part, final)
                return final
            part.unlink(missing_ok=True)
            log.warning("download=%r does not match its sha256 attempt=%d", what, attempt + 1)
        raise IntegrityFailure(
            f"{what}: the downloaded bytes do not match its sha256, twice; the coordinator's copy may be "
            "damaged: ask its operator"
        )

    def _download_attempt(self, url: str, what: str, part: Path, expected: str, progress: Progress | None) -> None:
        """One request appending to ``part`` (from its end, if the server honours the range)."""
        offset = part.stat().st_size if part.is_file() else 0
        headers = self._auth()
        if offset:
            # If-Range: should the file behind the URL ever differ, the server sends it whole (200).
            headers.update({"Range": f"bytes={offset}-", "If-Range": f'"{expected}"'})
        with self.http.stream("GET", url, headers=headers, timeout=self.timeout) as response:
            if response.status_code == 416:  # the part is not a prefix of the file: start over
                part.unlink(missing_ok=True)
                raise Transient("the partial download does not fit the file; starting over")
            check_status(what, response)
            announced = response.headers.get("x-content-sha256")
            if announced is not None and announced != expected:
                raise IntegrityFailure(
                    f"{what}: the coordinator serves sha256 {announced[:12]}…, not the {expected[:12]}… "
                    "it announced: it changed under us; run the agent again"
                )
            resumed = response.status_code == 206 and _range_start(response) == offset
            done = offset if resumed else 0
            length = response.headers.get("content-length")
            total = done + int(length) if length is not None and length.isdigit() else None
            if resumed:
                log.info("download resumed url=%s offset=%d", url, offset)
            with part.open("ab" if resumed else "wb") as handle:
                for chunk in response.iter_bytes():  # as received: a chunk buffer would lose them on a drop
                    handle.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
                    if self.stop.is_set():
                        raise AgentStopped("stopped during a download (the part is kept to resume)")
                handle.flush()
                os.fsync(handle.fileno())


def _range_start(response: httpx.Response) -> int | None:
    value = response.headers.get("content-range", "")  # "bytes start-end/size"
    unit, _, spec = value.partition(" ")
    start = spec.split("-", 1)[0]
    return int(start) if unit == "bytes" and start.isdigit() else None


def _parse(parse: Callable[[Any], T], response: httpx.Response, what: str) -> T:
    try:
        return parse(response.json())
    except (ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise CoordinatorError(
            f"{what}: the coordinator's answer is not what this agent understands ({first}); "
            "is the agent's version compatible with the coordinator?"
        ) from exc


def _chunks(body: bytes, progress: Progress | None) -> Iterator[bytes]:
    for start in range(0, len(body), CHUNK):
        yield body[start : start + CHUNK]
        if progress is not None:
            progress(min(start + CHUNK, len(body)), len(body))
    if not body and progress is not None:
        progress(0, 0)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["API", "PART_SUFFIX", "CoordinatorClient", "Progress", "RetryPolicy", "UploadResult", "sha256_file"]
