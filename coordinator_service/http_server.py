"""The HTTP server of ``serve``: uvicorn over h11, kept from being held by idle or slow sockets
(DESIGN.md section 4, "Transport"; docs/operating.md).

uvicorn closes a connection idle between requests (``timeout_keep_alive``) and answers a request
503 at its concurrency limit, but only once the request's headers are complete: a socket that never
finishes its headers it holds for ever, each one a file descriptor that the jobs beside the API then
lack. :class:`GuardedH11Protocol` adds the two missing guards:

- a header deadline: a request's headers must be complete ``header_timeout_s`` after its connection
  opened or the previous answer on it ended, else the connection is closed. A deadline, not an idle
  timer: a client that trickles a byte at a time is cut off as well.
- the cap where a socket is accepted: a connection beyond ``max_connections`` is answered 503 and
  closed at once, so the server never holds more sockets than the cap (at the cap, uvicorn answers
  requests on the connections it holds 503 too).

h11 rather than httptools: h11 bounds a request's line and headers (``max_header_bytes``), where
httptools would collect headers without limit until the deadline.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from coordinator_service.settings import Settings

OVER_CAPACITY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 19\r\nretry-after: 1\r\nconnection: close\r\n\r\nService Unavailable"
)
REFUSAL_LOG_EVERY_S = 10.0


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and the connection cap applied at accept
    (subclassed per server by :func:`server_config`, which sets the two limits)."""

    header_timeout_s: ClassVar[float]
    max_connections: ClassVar[int]
    _last_refusal_logged: ClassVar[float] = 0.0  # one warning per ``REFUSAL_LOG_EVERY_S`` under a flood

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        if len(self.connections) > self.max_connections:
            self._log_refusal()
            self.transport.write(OVER_CAPACITY)
            self.transport.close()
            return
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_request():
            self._stop_waiting()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self._in_request():
            self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def _log_refusal(self) -> None:
        now = time.monotonic()
        if now - GuardedH11Protocol._last_refusal_logged >= REFUSAL_LOG_EVERY_S:
            GuardedH11Protocol._last_refusal_logged = now
            self.logger.warning("%d connections open: refusing more with 503", self.max_connections)

    def _in_request(self) -> bool:
        """Whether a request's headers are in and its answer is not finished."""
        return self.cycle is not None and not self.cycle.response_complete

    def _await_headers(self) -> None:
        self._stop_waiting()
        self._header_deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_late)

    def _stop_waiting(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_late(self) -> None:
        self._header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def server_config(app: Any, settings: Settings, *, host: str, port: int, log_level: str) -> uvicorn.Config:
    """uvicorn's configuration for ``serve``: the guarded h11 protocol with the settings' limits."""

    class Protocol(GuardedH11Protocol):
        header_timeout_s = settings.header_timeout_s
        max_connections = settings.max_connections

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=Protocol,
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.keep_alive_s,
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )
