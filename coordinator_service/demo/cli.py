"""The ``creamfl-coordinator demo`` command line: its flags, and ``main`` that maps the run to an exit status."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from coordinator_service.demo.config import PRESETS, SCENARIO_FLAGS, Options, check_options, scenario_config
from coordinator_service.demo.errors import EXIT_USAGE
from coordinator_service.demo.run import Demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo", help="sizes to start from (demo)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--public-size", type=int, help="public image-caption pairs")
    parser.add_argument("--test-size", type=int, help="held-out test images (two captions each)")
    parser.add_argument("--private-per-client", type=int, help="private scenes per client (Dirichlet shares)")
    parser.add_argument("--dirichlet-alpha", type=float)
    parser.add_argument("--embed-dim", type=int)
    parser.add_argument("--image-clients", type=int, help="image-only agents (default 2)")
    parser.add_argument("--text-clients", type=int, help="text-only agents (default 2)")
    parser.add_argument("--multimodal-clients", type=int, help="image+text agents (default 2)")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/demo"), help="logs, state, summary (runs/demo)")
    parser.add_argument(
        "--coordinator", help="drive the coordinator at this URL instead of starting one (agents run here)"
    )
    parser.add_argument("--admin-token", help="its admin token (default: CREAMFL_ADMIN_TOKEN)")
    parser.add_argument("--port", type=int, help="port of the coordinator started here (default: a free one)")
    parser.add_argument("--agent-threads", type=int, default=1, help="torch threads per agent (1)")
    parser.add_argument("--server-threads", type=int, help="torch threads of the coordinator's jobs (default: all)")
    parser.add_argument("--round-deadline", type=float, default=900.0, help="seconds a round waits for uploads")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    parser.add_argument(
        "--no-agents",
        dest="start_agents",
        action="store_false",
        help="start no agents: print their command lines and wait for them to enroll from elsewhere",
    )
    parser.add_argument("--handoff", type=Path, help="write the federation id and join token here (a shell env file)")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the server-only baseline")
    parser.add_argument(
        "--keep-serving", action="store_true", help="keep the coordinator (and its dashboard) up until Ctrl-C"
    )


def main(args: argparse.Namespace) -> int:
    """``creamfl-coordinator demo``: parse the scenario, run it, map the outcome to an exit status."""
    try:
        config = scenario_config(args.preset, **{k: getattr(args, k) for k in SCENARIO_FLAGS})
        options = Options(
            run_dir=args.run_dir,
            coordinator=args.coordinator.rstrip("/") if args.coordinator else None,
            admin_token=args.admin_token or os.environ.get("CREAMFL_ADMIN_TOKEN") or None,
            port=args.port,
            agent_threads=args.agent_threads,
            server_threads=args.server_threads,
            round_deadline_s=args.round_deadline,
            timeout_s=args.timeout,
            start_agents=args.start_agents,
            handoff=args.handoff,
            baseline=args.baseline,
            keep_serving=args.keep_serving,
        )
        check_options(config, options)
    except ValueError as exc:
        print(f"creamfl-coordinator demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return Demo(config, options).run()
