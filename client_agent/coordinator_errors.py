"""The coordinator's failures as errors whose message is one line, and how an HTTP answer is read:
accepted, worth another attempt (:class:`Transient`, connection errors, timeouts, 408, 429, 5xx), or
refused for good (:class:`Rejected`, any other 4xx, with the code and message of its JSON error body)."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime
from typing import Any, Literal

import httpx

from client_agent.errors import AgentError, ConfigError

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class CoordinatorError(AgentError):
    """A call to the coordinator failed for good."""


class Unreachable(CoordinatorError, ConfigError):
    """No HTTP answer (connection refused, DNS, timeouts) for the whole retry budget."""


class ServerFailing(CoordinatorError):
    """The coordinator kept answering 5xx/408/429 for the whole retry budget."""


class Rejected(CoordinatorError):
    """A 4xx answer that retrying cannot change; ``code`` and ``message`` come from the JSON error body."""

    def __init__(self, what: str, status: int, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(f"{what}: the coordinator answered HTTP {status} ({code}): {message}")
        self.what, self.status, self.code, self.reason, self.details = what, status, code, message, details


class IntegrityFailure(CoordinatorError):
    """A downloaded file kept failing its sha256 check."""


class Transient(Exception):
    """One failed attempt that is worth retrying (the client's retry loop catches it: it never leaves the client)."""

    def __init__(self, description: str, *, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(description)
        self.status, self.retry_after = status, retry_after


def check_status(what: str, response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    if status in RETRY_STATUSES:
        response.read()
        raise Transient(f"HTTP {status} {_error(response)[1]}", status=status, retry_after=_retry_after(response))
    response.read()
    code, message, details = _error(response)
    raise Rejected(what, status, code, message, details)


def _error(response: httpx.Response) -> tuple[str, str, dict[str, Any]]:
    """(code, message, details) from the coordinator's ``{"error": {...}}`` body, or from the raw text."""
    try:
        error = response.json()["error"]
        return str(error["code"]), str(error["message"]), dict(error.get("details") or {})
    except (ValueError, KeyError, TypeError):
        text = " ".join(response.text.split())[:200] or response.reason_phrase
        return "http_error", text, {}


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` as seconds: a number or an HTTP date."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def describe_transport(exc: httpx.TransportError) -> str:
    kind: Literal["timeout", "connection"] = "timeout" if isinstance(exc, httpx.TimeoutException) else "connection"
    detail = str(exc) or type(exc).__name__
    return f"{kind} error ({type(exc).__name__}: {detail})"
