"""The dashboard's pages: login, logout and page shells that ``static/dashboard.js`` fills from the admin API.

The pages hold no federation data themselves: the script reads ``/api/v1`` with the session cookie
(and polls it every 2 s), so the dashboard shows exactly what the admin API says.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from coordinator_service.api.deps import FederationId, RoundNumber, ServicesDep
from coordinator_service.dashboard.sessions import SESSION_COOKIE
from coordinator_service.security import token_matches

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
STATIC_URL = "/dashboard/static"
LOGIN_URL = "/dashboard/login"
POLL_MS = 2000
MAX_FORM_BYTES = 8192  # the login form's body at most (coordinator_service/app.py bounds it)

templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/dashboard", include_in_schema=False)

# Pages are private and never framed; scripts and styles come only from this origin (uPlot sets
# element styles from script, which style-src does not restrict).
SECURITY_HEADERS = {
    "cache-control": "no-store",
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def _asset_version() -> str:
    """Changes whenever a served file changes, so browsers never run a stale script against a new page."""
    digest = hashlib.sha256()
    for path in sorted(STATIC_DIR.rglob("*")):
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


ASSET_VERSION = _asset_version()


def _logged_in(request: Request, services: ServicesDep) -> bool:
    value = request.cookies.get(SESSION_COOKIE)
    return value is not None and services.dashboard_sessions.verify(value)


def _safe_next(target: str | None) -> str:
    """Only a path inside the dashboard (no open redirect to another site)."""
    if not target or not target.startswith("/dashboard") or "//" in target or "\\" in target:
        return "/dashboard"
    return target


def _page(request: Request, template: str, *, status_code: int = 200, **context: Any) -> HTMLResponse:
    response = templates.TemplateResponse(
        request,
        template,
        {"static": STATIC_URL, "version": ASSET_VERSION, "poll_ms": POLL_MS, **context},
        status_code=status_code,
    )
    response.headers.update(SECURITY_HEADERS)
    return response


def _to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{LOGIN_URL}?next={quote(target, safe='/')}", status_code=status.HTTP_303_SEE_OTHER)


@router.get("/login")
def login_page(
    request: Request,
    services: ServicesDep,
    target: Annotated[str | None, Query(alias="next", max_length=512)] = None,
    logged_out: bool = False,
) -> Response:
    if _logged_in(request, services):
        return RedirectResponse(_safe_next(target), status_code=status.HTTP_303_SEE_OTHER)
    return _page(request, "login.html", next=_safe_next(target), error=None, logged_out=logged_out)


@router.post("/login")
async def login(request: Request, services: ServicesDep) -> Response:
    """The login form: the admin token in, a session cookie out (form-encoded; no multipart parser needed)."""
    body = await request.body()
    form = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=8)
    token = (form.get("token") or [""])[0].strip()
    target = _safe_next((form.get("next") or [""])[0])
    if not token or not token_matches(token, services.admin_token_hash):
        return _page(
            request,
            "login.html",
            status_code=status.HTTP_401_UNAUTHORIZED,
            next=target,
            error="That is not the admin token.",
            logged_out=False,
        )
    session = await run_in_threadpool(services.dashboard_sessions.issue)
    response = RedirectResponse(target, status_code=status.HTTP_303_SEE_OTHER)
    response.set_cookie(
        SESSION_COOKIE,
        session.value,
        max_age=session.max_age,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    response.headers["cache-control"] = "no-store"
    return response


@router.post("/logout")
def logout(request: Request, services: ServicesDep) -> Response:
    value = request.cookies.get(SESSION_COOKIE)
    if value is not None:
        services.dashboard_sessions.revoke(value)
    response = RedirectResponse(f"{LOGIN_URL}?logged_out=1", status_code=status.HTTP_303_SEE_OTHER)
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
    return response


@router.get("")
def overview(request: Request, services: ServicesDep) -> Response:
    if not _logged_in(request, services):
        return _to_login(request)
    return _page(request, "overview.html", page="overview")


@router.get("/federations/{federation_id}")
def federation_page(request: Request, services: ServicesDep, federation_id: FederationId) -> Response:
    if not _logged_in(request, services):
        return _to_login(request)
    return _page(request, "federation.html", page="federation", federation_id=federation_id)


@router.get("/federations/{federation_id}/rounds/{number}")
def round_page(request: Request, services: ServicesDep, federation_id: FederationId, number: RoundNumber) -> Response:
    if not _logged_in(request, services):
        return _to_login(request)
    return _page(request, "round.html", page="round", federation_id=federation_id, number=number)
