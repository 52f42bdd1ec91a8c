"""The coordinator's FastAPI application: API under /api/v1, the in-process worker, the watcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from coordinator_service.api.before_body import BodyLimit
from coordinator_service.api.deps import Services
from coordinator_service.api.routes import clients, datasets, federations, health, public_set
from coordinator_service.artifacts import ArtifactStore, LocalArtifactStore
from coordinator_service.dashboard import routes as dashboard
from coordinator_service.db.engine import make_engine, make_sessionmaker
from coordinator_service.db.migrate import pending_migrations, upgrade
from coordinator_service.errors import ERROR_RESPONSES, install_error_handlers
from coordinator_service.jobs.worker import Worker
from coordinator_service.metrics import HTTP_SECONDS
from coordinator_service.security import load_or_create_admin_token, token_hash
from coordinator_service.settings import Settings
from coordinator_service.watcher import ChangeWatcher

log = logging.getLogger("creamfl.coordinator")
API_PREFIX = "/api/v1"


class UnmigratedDatabase(RuntimeError):
    pass


def create_app(settings: Settings, *, migrate: bool = False, store: ArtifactStore | None = None) -> FastAPI:
    """``migrate``: bring the database to the newest schema first; otherwise refuse an unmigrated one.
    ``store``: the artifact store to use instead of the local directory of the settings (tests inject faults)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings, migrate=migrate, store=store)
        app.state.services = services
        watcher_task = asyncio.create_task(services.watcher.run())
        stop = threading.Event()
        worker_thread = None
        if settings.in_process_worker:
            worker = Worker(services.db, services.store, settings)
            worker_thread = threading.Thread(target=worker.run_forever, args=(stop,), name="worker", daemon=True)
            worker_thread.start()
        try:
            yield
        finally:
            stop.set()
            watcher_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher_task
            if worker_thread is not None:
                await asyncio.to_thread(worker_thread.join)

    app = FastAPI(
        title="CreamFL coordinator",
        version="0.1.0",
        description="Multimodal federated learning with contrastive representation ensembles (CreamFL).",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for router in (datasets.router, federations.router, clients.router, public_set.router, health.router):
        app.include_router(router, prefix=API_PREFIX, responses=ERROR_RESPONSES)
    app.add_api_route("/healthz", health.healthz, include_in_schema=False)
    app.add_api_route("/readyz", health.readyz, include_in_schema=False)
    app.add_api_route("/metrics", health.metrics, include_in_schema=False)
    app.include_router(dashboard.router)
    app.mount(dashboard.STATIC_URL, StaticFiles(directory=dashboard.STATIC_DIR), name="dashboard-static")
    # The last added runs first: latency around everything.
    body_limits: dict[Callable[..., Any], int | None] = {
        clients.upload: None,  # bounds its own body (max_upload_bytes), after the client's credentials
        dashboard.login: dashboard.MAX_FORM_BYTES,
    }
    app.add_middleware(BodyLimit, default=settings.max_json_bytes, limits=body_limits)
    app.add_middleware(_LatencyMiddleware)
    return app


def build_services(settings: Settings, *, migrate: bool, store: ArtifactStore | None = None) -> Services:
    if settings.threads:
        import torch

        torch.set_num_threads(settings.threads)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    engine = make_engine(url)
    if migrate:
        upgrade(url)
    elif pending_migrations(engine, url):
        raise UnmigratedDatabase(
            "the database schema is not up to date: run `creamfl-coordinator migrate` (or serve --migrate)"
        )
    factory = make_sessionmaker(engine)
    admin_token = load_or_create_admin_token(settings.admin_token, settings.data_dir)
    return Services(
        settings=settings,
        db=factory,
        store=store or LocalArtifactStore(settings.resolved_artifact_dir),
        admin_token_hash=token_hash(admin_token),
        watcher=ChangeWatcher(factory, settings.watch_interval_s),
    )


def _route_template(scope: Scope) -> str:
    """The matched route as a template (``/api/v1/federations/{federation_id}``): a bounded label set.

    Rebuilt from the standard ``path`` and ``path_params`` (the route object's own path lacks the
    router prefix)."""
    if "route" not in scope:
        return "unmatched"
    segments = scope["path"].split("/")
    for name, value in scope.get("path_params", {}).items():
        if str(value) in segments:
            segments[segments.index(str(value))] = "{" + name + "}"
    return "/".join(segments)


class _LatencyMiddleware:
    """Request latency by route template (a pure ASGI middleware: streamed uploads pass untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: dict[str, Any] = {"code": 500}

        async def send_recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        finally:
            route = _route_template(scope)
            HTTP_SECONDS.labels(method=scope["method"], route=route, status=str(status["code"])).observe(
                time.perf_counter() - started
            )
