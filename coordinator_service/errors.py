"""One error hierarchy with codes, mapped to HTTP statuses in one place (DESIGN.md section 8).

Every error leaves the API as ``{"error": {"code", "message", "details"}}``; nothing a client
sends may produce a 5xx.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from coordinator_service.faults import EnvironmentFault, environment_fault, one_line

log = logging.getLogger("creamfl.coordinator")
# nginx's status for a request its client closed before the answer: no one reads it, the metrics do.
CLIENT_CLOSED_REQUEST = 499


class CoordinatorError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class Unauthorized(CoordinatorError):
    status, code = 401, "unauthorized"


class Forbidden(CoordinatorError):
    status, code = 403, "forbidden"


class NotFound(CoordinatorError):
    status, code = 404, "not_found"


class Conflict(CoordinatorError):
    status, code = 409, "conflict"


class Gone(CoordinatorError):
    status, code = 410, "gone"


class PayloadTooLarge(CoordinatorError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(CoordinatorError):
    status, code = 415, "unsupported_media_type"


class Invalid(CoordinatorError):
    status, code = 422, "invalid"


class RangeNotSatisfiable(CoordinatorError):
    status, code = 416, "range_not_satisfiable"


class ServiceUnavailable(CoordinatorError):
    """The environment is short of something (open files, the database); try again later."""

    status, code = 503, "service_unavailable"


class InsufficientStorage(CoordinatorError):
    """The disk (or quota) of the artifact store is full; try again later."""

    status, code = 507, "insufficient_storage"


def environment_error(fault: EnvironmentFault) -> CoordinatorError:
    """How the API answers a request that met a fault of the environment: not the client's fault,
    and not a bug; the client's retry succeeds once it clears."""
    kind = InsufficientStorage if fault.storage else ServiceUnavailable
    return kind(f"the coordinator cannot serve this now ({fault.reason}); try again later", reason=fault.reason)


class ErrorInfo(BaseModel):
    code: str = Field(description="machine-readable, e.g. not_found, invalid, conflict")
    message: str
    details: dict[str, Any]


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorInfo


# Documents the error body in the OpenAPI schema (and replaces FastAPI's default 422 schema, which
# describes a body this API never sends).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorResponse, "description": "the request was refused; see error.code"},
    "5XX": {
        "model": ErrorResponse,
        "description": "the coordinator could not serve it: 503 or 507 (storage full) while the environment is "
        "short of a resource, to retry later; 500 for a bug",
    },
}


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def error_response(exc: CoordinatorError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The answer to a refused request (a 401 names its scheme); ``headers``: more of them."""
    sent = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
    sent.update(headers or {})
    return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=exc.status, headers=sent)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid",
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CoordinatorError)
    async def _coordinator_error(_request: Request, exc: CoordinatorError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        return JSONResponse(error_body("invalid", "the request is not valid", {"errors": problems}), status_code=422)

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, _exc: ClientDisconnect) -> Response:
        # A flaky gateway link, not a server error: one line, no traceback, not a 5xx in the metrics.
        log.warning("client disconnected during %s %s", request.method, request.url.path)
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(OSError)
    @app.exception_handler(DBAPIError)
    async def _environment(request: Request, exc: Exception) -> JSONResponse:
        fault = environment_fault(exc)
        if fault is None:
            raise exc  # not the environment: the handler of unexpected errors below answers
        log.warning("%s %s: %s", request.method, request.url.path, one_line(exc))
        return await _coordinator_error(request, environment_error(fault))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        # A bug, not bad input; still a JSON body, and the details stay in the log, not the response.
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(error_body("internal", "internal server error; see the coordinator's log"), status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)), status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )
