"""``creamfl-coordinator``: serve the API, migrate the database, run a standalone job worker, or run
the demo (a whole federation of agent processes on this machine)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from coordinator_service import demo as demo_module
from coordinator_service.logs import configure_logging
from coordinator_service.settings import Settings
from creamfl import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="creamfl-coordinator", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP API (and one in-process job worker)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument(
        "--migrate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="migrate the database first (default: yes for the embedded SQLite, no otherwise)",
    )
    serve.add_argument("--no-worker", dest="in_process_worker", action="store_false", default=None)
    # Sockets and bodies (docs/operating.md); each also a CREAMFL_* setting.
    serve.add_argument("--max-connections", type=int, help="open connections at most; beyond: 503 (default 1000)")
    serve.add_argument(
        "--header-timeout", dest="header_timeout_s", type=float, help="seconds for a request's headers (default 10)"
    )
    serve.add_argument(
        "--keep-alive-timeout", dest="keep_alive_s", type=int, help="idle seconds between requests (default 5)"
    )
    serve.add_argument("--max-header-bytes", type=int, help="request line and headers at most (default 65536)")
    serve.add_argument("--max-json-bytes", type=int, help="a JSON body at most (default 1048576)")
    worker = commands.add_parser("worker", help="run a job worker against the same database and artifact store")
    migrate = commands.add_parser("migrate", help="bring the database to the newest schema")
    for command in (serve, worker, migrate):
        command.add_argument("--data-dir", type=Path, help="SQLite file, artifacts, admin token (CREAMFL_DATA_DIR)")
        command.add_argument("--database-url", help="e.g. postgresql+psycopg://user@host/db (CREAMFL_DATABASE_URL)")
        command.add_argument("--artifact-dir", type=Path)
        command.add_argument("--device", help="auto, cpu, cuda, cuda:1 (CREAMFL_DEVICE)")
        command.add_argument("--log-level", default="INFO")
        command.add_argument("--log-format", choices=("text", "json"), default="text")
    demo = commands.add_parser(
        "demo",
        help="the main job: a coordinator and six agent processes on this machine, a table per round",
        description=demo_module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo_module.add_arguments(demo)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo_module.main(args)
    configure_logging(args.log_level, args.log_format)
    try:
        settings = Settings(**_overrides(args))
    except ValidationError as exc:
        print(f"creamfl-coordinator: bad settings: {exc}", file=sys.stderr)
        return 2
    handler = {"serve": _serve, "worker": _worker, "migrate": _migrate}[args.command]
    return handler(settings, args)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = (
        "data_dir",
        "database_url",
        "artifact_dir",
        "device",
        "in_process_worker",
        "max_connections",
        "header_timeout_s",
        "keep_alive_s",
        "max_header_bytes",
        "max_json_bytes",
    )
    return {key: getattr(args, key) for key in keys if getattr(args, key, None) is not None}


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from coordinator_service.app import create_app
    from coordinator_service.db.engine import make_engine
    from coordinator_service.db.migrate import pending_migrations, upgrade
    from coordinator_service.descriptors import TooFewDescriptors, reserve_descriptors
    from coordinator_service.http_server import server_config

    try:
        reserve_descriptors(settings.max_connections)
    except TooFewDescriptors as exc:
        print(f"creamfl-coordinator: {exc}", file=sys.stderr)
        return 2
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    engine = make_engine(url)
    try:
        if args.migrate if args.migrate is not None else settings.is_sqlite:
            upgrade(url)
            unmigrated = False
        else:
            unmigrated = pending_migrations(engine, url)
    finally:
        engine.dispose()
    if unmigrated:
        print(
            "creamfl-coordinator: the database schema is not up to date: "
            "run `creamfl-coordinator migrate` first (or serve --migrate)",
            file=sys.stderr,
        )
        return 2
    app = create_app(settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # Long polls would hold a graceful shutdown for their whole wait: answer them now.
            services = getattr(app.state, "services", None)
            if services is not None:
                services.watcher.close_soon()
            super().handle_exit(sig, frame)

    server = Server(server_config(app, settings, host=args.host, port=args.port, log_level=args.log_level.lower()))
    server.run()
    return 0 if server.started else 3  # 3: startup failed (the reason is in the log above)


def _worker(settings: Settings, _args: argparse.Namespace) -> int:
    from coordinator_service.app import UnmigratedDatabase, build_services
    from coordinator_service.jobs.worker import Worker

    try:
        services = build_services(settings, migrate=False)
    except UnmigratedDatabase as exc:
        print(f"creamfl-coordinator: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    Worker(services.db, services.store, settings).run_forever(stop)
    return 0


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from coordinator_service.db.migrate import upgrade

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.resolved_database_url)
    print(f"migrated {settings.resolved_database_url.split('@')[-1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
