"""``creamfl-agent run``: join a CreamFL federation from this machine and work its rounds.

Every flag can also come from the environment: ``CREAMFL_AGENT_<SETTING>`` (e.g.
``CREAMFL_AGENT_JOIN_TOKEN``); flags win. Exit status: 0 when the federation is done (or after one
round with --once, or after a clean stop on SIGINT/SIGTERM), 2 for a configuration problem (the
message says what to change), 1 for other failures.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from client_agent.errors import AgentError
from creamfl import __version__
from creamfl.spec_syntax import DATA_SPEC_HELP

PROG = "creamfl-agent"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="enroll (first time), then train and upload each round")
    run.add_argument("--coordinator", help="the coordinator's URL, e.g. http://coordinator:8080")
    run.add_argument("--federation", help="the federation id")
    run.add_argument("--join-token", dest="join_token", help="the federation's join token (first start only)")
    run.add_argument("--modality", help="image, text or multimodal: what this client's data holds")
    run.add_argument("--data", help=f"the private data: {DATA_SPEC_HELP}")
    run.add_argument("--model", help="image-cnn-s|m, text-gru-s|m, dual-s|m, optionally :DIM (default by modality)")
    run.add_argument("--name", help="this client's name in the federation (default: <hostname>-<modality>)")
    run.add_argument("--state-dir", dest="state_dir", type=Path, help="identity, model and caches")
    run.add_argument("--device", help="auto, cpu or cuda")
    run.add_argument("--threads", type=int, help="torch CPU threads")
    run.add_argument("--batch-size", dest="batch_size", type=int, help="local batch size (small devices)")
    run.add_argument("--poll-wait", dest="poll_wait_s", type=float, help="long-poll seconds (default 30)")
    run.add_argument(
        "--retry-for", dest="retry_for_s", type=float, help="seconds to keep retrying the coordinator; 0: forever"
    )
    run.add_argument("--backoff-max", dest="backoff_max_s", type=float, help="longest wait between retries")
    run.add_argument("--request-timeout", dest="request_timeout_s", type=float, help="seconds per request")
    run.add_argument("--once", action="store_const", const=True, default=None, help="exit after one round")
    run.add_argument("--progress", help="auto (bars on a terminal), bar or plain (log lines)")
    run.add_argument("--log-level", dest="log_level", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "log_level")}
    try:
        return _run(overrides, args.log_level)
    except AgentError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: aborted", file=sys.stderr)
        return 130


def _run(overrides: dict[str, Any], log_level: str) -> int:
    from client_agent.settings import load_settings

    settings = load_settings(overrides)  # before importing torch: a typo is reported at once

    import httpx

    from client_agent.agent import Agent
    from client_agent.progress import Reporter, choose_mode, configure_logging
    from client_agent.stopping import Stopper

    mode = choose_mode(settings.progress)
    configure_logging(mode, getattr(logging, log_level.upper(), logging.INFO))
    stopper = Stopper()
    on_main_thread = threading.current_thread() is threading.main_thread()
    with (
        stopper.installed() if on_main_thread else contextlib.nullcontext(),
        httpx.Client(base_url=settings.coordinator, timeout=settings.request_timeout_s) as http,
    ):
        agent = Agent(settings, http, stopper=stopper, reporter=Reporter(mode))
        try:
            return agent.run()
        except AgentError:
            raise
        except Exception as exc:
            logging.getLogger("client_agent").exception("unexpected failure")
            raise AgentError(f"unexpected failure: {type(exc).__name__}: {exc}") from exc


if __name__ == "__main__":
    raise SystemExit(main())
