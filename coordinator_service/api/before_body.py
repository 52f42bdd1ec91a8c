"""What is refused before a request's body is read (DESIGN.md section 4, "Auth"): missing or wrong
credentials, and a body over its route's limit.

FastAPI reads a route's JSON body whole before it solves the route's dependencies, the credential
check among them: left alone, an anonymous client makes the server read and hold whatever it sends
before the 401. So:

- :class:`CredentialsFirstRoute` (the route class of the API routers): a request that carries a body,
  to a route whose body FastAPI reads up front, meets the route's credential dependency
  (``deps.CREDENTIAL_CHECKS``) on its headers and path alone, before the body: 401 or 403 unread.
- :class:`BodyLimit`, a pure ASGI middleware (a streamed upload still flows through as it arrives):
  when the app first asks for a body, one over its route's limit is refused with 413, at once when
  its Content-Length says so, else as soon as the bytes received pass the limit (a chunked body).

Any answer sent before the request's body was read whole closes the connection, so the server reads
no more of it (uvicorn would otherwise drain the rest to reuse the connection).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coordinator_service.api.deps import CREDENTIAL_CHECKS, Services
from coordinator_service.errors import PayloadTooLarge, error_response


def declares_body(headers: Headers) -> bool:
    return "transfer-encoding" in headers or headers.get("content-length", "0") != "0"


class CredentialsFirstRoute(APIRoute):
    """An API route whose credential dependency runs before FastAPI reads its JSON body."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        checks = [CREDENTIAL_CHECKS[call] for call in _dependency_calls(self.dependant) if call in CREDENTIAL_CHECKS]
        if self.body_field is None or not checks:
            return handler  # no credentials, or a route that reads its body itself, after its dependencies

        async def credentials_first(request: Request) -> Response:
            if declares_body(request.headers):
                services: Services = request.app.state.services
                for check in checks:
                    await run_in_threadpool(check, request, services)
            return await handler(request)

        return credentials_first


def _dependency_calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _dependency_calls(sub)


class BodyLimit:
    """Bounds every request body: ``limits`` by endpoint (``None``: the endpoint bounds its own body,
    after its credentials, as the upload does), ``default`` for every other route."""

    def __init__(self, app: ASGIApp, *, default: int, limits: Mapping[Callable[..., Any], int | None]) -> None:
        self.app = app
        self.default = default
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not declares_body(Headers(scope=scope)):
            await self.app(scope, receive, send)
            return
        body = _ReadBody(scope, receive, send, self._limit)
        try:
            await self.app(scope, body.receive, body.send)
        except _BodyTooLarge:
            if body.answered:
                raise
        if body.refused is not None and not body.answered:
            await error_response(body.refused, {"connection": "close"})(scope, receive, send)

    def _limit(self, scope: Scope) -> int | None:
        """The limit of the route the router picked (it records the endpoint in the scope)."""
        endpoint = scope.get("endpoint")
        return self.default if endpoint is None else self.limits.get(endpoint, self.default)


class _BodyTooLarge(Exception):
    """Raised to the app by ``receive`` once the body passed its limit: nothing more of it is read."""


class _ReadBody:
    """The app's view of a request body, counted against its route's limit. Once the body is over it,
    the app's answer is dropped for a 413; an answer that starts before the body was read whole closes
    the connection."""

    def __init__(self, scope: Scope, receive: Receive, send: Send, limit_of: Callable[[Scope], int | None]) -> None:
        self._scope = scope
        self._receive = receive
        self._send = send
        self._limit_of = limit_of
        self.received = 0
        self.complete = False
        self.answered = False
        self.refused: PayloadTooLarge | None = None

    async def receive(self) -> Message:
        if self.refused is not None:
            raise _BodyTooLarge
        limit = self._limit_of(self._scope)
        declared = Headers(scope=self._scope).get("content-length")
        if limit is not None and declared is not None and declared.isdigit() and int(declared) > limit:
            raise self._refuse(limit)  # before a byte of it is read
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
            if limit is not None and self.received > limit:
                raise self._refuse(limit)
        return message

    def _refuse(self, limit: int) -> _BodyTooLarge:
        self.refused = PayloadTooLarge(f"the body exceeds {limit} bytes", limit=limit)
        return _BodyTooLarge()

    async def send(self, message: Message) -> None:
        if self.refused is not None and not self.answered:
            return  # the app's answer to a body it could not read whole: the 413 replaces it
        if message["type"] == "http.response.start":
            self.answered = True
            if not self.complete:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
        await self._send(message)
