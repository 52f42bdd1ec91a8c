"""``creamfl``: research commands. ``creamfl simulate`` runs a whole federation in one process."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from creamfl import __version__
from creamfl.models import CLIENT_MODELS
from creamfl.payload import PAYLOAD_DTYPES
from creamfl.sim_config import PRESETS, STRATEGIES, SimulationConfig, preset_config
from creamfl.simulation import RoundResult, SimulationResult, run_simulation


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    return int(args.handler(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="creamfl", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    sim = commands.add_parser("simulate", help="run a federation in one process on the built-in dataset")
    sim.set_defaults(handler=_simulate)
    sim.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="sizes to start from (default: tiny)")
    sim.add_argument("--strategy", choices=STRATEGIES, help="aggregation, or a baseline (default: creamfl)")
    sim.add_argument("--rounds", type=int)
    sim.add_argument("--seed", type=int)
    sim.add_argument("--image-clients", type=int)
    sim.add_argument("--text-clients", type=int)
    sim.add_argument("--multimodal-clients", type=int)
    sim.add_argument("--clients-per-round", type=int)
    sim.add_argument("--public-size", type=int, help="public image-caption pairs")
    sim.add_argument("--public-subset", type=int, help="public pairs used per round (default: all)")
    sim.add_argument("--test-size", type=int)
    sim.add_argument("--private-per-client", type=int)
    sim.add_argument("--dirichlet-alpha", type=float)
    sim.add_argument("--embed-dim", type=int)
    sim.add_argument("--local-epochs", type=int)
    sim.add_argument("--gamma", type=float, help="weight of the inter + intra regularisers")
    sim.add_argument("--kd-weight", type=float)
    sim.add_argument("--server-schedule", choices=("joint", "separate"))
    sim.add_argument("--text-encoder", choices=("scratch", "minilm"))
    sim.add_argument("--payload-dtype", choices=PAYLOAD_DTYPES)
    sim.add_argument("--device", help="cpu, cuda, cuda:1, ...")
    sim.add_argument("--no-inter", dest="inter", action="store_false", default=None)
    sim.add_argument("--no-intra", dest="intra", action="store_false", default=None)
    sim.add_argument("--exclude-self", action="store_true", default=None, help="the paper's j != i denominator")
    sim.add_argument("--no-normalize", dest="normalize_aggregate", action="store_false", default=None)
    sim.add_argument("--json", type=Path, help="write the rounds and the config to this file")
    return parser


_CONFIG_FIELDS = set(SimulationConfig.__dataclass_fields__)


def _simulate(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    overrides = {k: v for k, v in vars(args).items() if k in _CONFIG_FIELDS and v is not None}
    try:
        config = preset_config(args.preset, **overrides)
        _check_device(config.device)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    console.print(
        f"CreamFL simulation: strategy={config.strategy} rounds={config.rounds} seed={config.seed} "
        f"clients={config.image_clients} image + {config.text_clients} text + {config.multimodal_clients} "
        f"image+text, public={config.public_size} test={config.test_size} (client models: "
        f"{', '.join(sorted(CLIENT_MODELS))})"
    )
    result = _run_with_progress(config, console)
    Console().print(rounds_table(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.as_dict(), indent=2))
        console.print(f"wrote {args.json}")
    return 0


def _check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here; use --device cpu")


def _run_with_progress(config: SimulationConfig, console: Console) -> SimulationResult:
    if not console.is_terminal:
        return run_simulation(config, on_round=lambda r: console.print(_round_line(r)))
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console, transient=True,
    ) as bar:  # fmt: skip
        rounds = bar.add_task("rounds", total=config.rounds)
        stage = bar.add_task("starting", total=1)

        def on_round(result: RoundResult) -> None:
            bar.advance(rounds)
            console.print(_round_line(result))

        def on_stage(name: str, done: int, total: int) -> None:
            bar.update(stage, description=name, completed=done, total=max(total, 1))

        return run_simulation(config, on_round=on_round, progress=on_stage)


def _round_line(result: RoundResult) -> str:
    return (
        f"round {result.round}: rsum {result.test.rsum:.2f} (i2t R@1 {result.test.i2t_r1:.2f}, "
        f"t2i R@1 {result.test.t2i_r1:.2f}) up {result.upload_bytes / 1e6:.2f} MB, {result.seconds:.1f} s"
    )


def rounds_table(result: SimulationResult) -> Table:
    table = Table(title=f"{result.config.strategy}: test retrieval per round")
    for column in ("round", "rsum", "i2t R@1", "t2i R@1", "i2t R@5", "t2i R@5", "up MB", "global", "aggregate", "s"):
        table.add_column(column, justify="right")
    for r in result.rounds:
        t = r.test
        aggregate = "-" if r.aggregate_public_rsum is None else f"{r.aggregate_public_rsum:.1f}"
        table.add_row(
            *(str(r.round), f"{t.rsum:.2f}", f"{t.i2t_r1:.2f}", f"{t.t2i_r1:.2f}", f"{t.i2t_r5:.2f}"),
            *(f"{t.t2i_r5:.2f}", f"{r.upload_bytes / 1e6:.2f}", f"{r.global_public_rsum:.1f}", aggregate),
            f"{r.seconds:.1f}",
        )
    table.caption = "global / aggregate: R@1 sum of the server's and the aggregated representations (public subset)"
    return table


if __name__ == "__main__":
    sys.exit(main())
