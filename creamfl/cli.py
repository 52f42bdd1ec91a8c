"""``creamfl``: research commands. ``creamfl simulate`` runs a whole federation in one process."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from creamfl import __version__
from creamfl.data.samples import write_sample_scenario
from creamfl.models import CLIENT_MODELS
from creamfl.participants import Federation, builtin_federation
from creamfl.payload import PAYLOAD_DTYPES
from creamfl.scenario import ClientEntry, new_scenario, parse_client_arg, read_scenario_file, scenario_config
from creamfl.scenario_federation import LoadedScenario, load_scenario, scenario_federation
from creamfl.sim_config import PRESETS, STRATEGIES, SimulationConfig, preset_config
from creamfl.simulation import RoundResult, SimulationResult, run_federation
from creamfl.tokenizers import BUILTIN_WORDS, UNK_WARN_SHARE

SIMULATE_HELP = """\
Run a whole federation in one process: on the built-in scenes (the default), or on data from disk.

Data from disk, on the command line:

  creamfl simulate --public 'karpathy:coco.json?images=coco&split=train' \\
      --test 'karpathy:coco.json?images=coco&split=test' \\
      --client 'image=cifar100:cifar-100-python?share=0/2' \\
      --client 'image=cifar100:cifar-100-python?share=1/2' \\
      --client text=ag-news:train.csv \\
      --client 'multimodal=karpathy:coco.json?images=coco&split=restval' --tokenizer trained:8000

or as a scenario file (see creamfl.scenario): creamfl simulate --scenario FILE.toml.

Public and test sets: karpathy:FILE.json?images=DIR[&split=S] or captions:FILE.jsonl|FILE.csv?images=DIR.
A client's data: image=image-folder:DIR or image=cifar100:DIR[?split=train|test], text=ag-news:FILE.csv,
multimodal=karpathy:... or multimodal=captions:..., any modality: builtin:SEED:I/K. All but builtin
take share=I/K[&alpha=A]: client I's Dirichlet non-IID share of K of the file (IID for image-caption
pairs), drawn from --seed. --public-size, --test-size, --private-per-client, the client counts and
--dirichlet-alpha describe the built-in data; the other flags override the preset and the scenario file.
"""


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    return int(args.handler(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="creamfl", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    sim = commands.add_parser(
        "simulate",
        help="run a federation in one process, on the built-in scenes or on data from disk",
        description=SIMULATE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sim.set_defaults(handler=_simulate)
    sim.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="sizes to start from (default: tiny)")
    disk = sim.add_argument_group("data from disk (default: the built-in scenes)")
    disk.add_argument("--scenario", type=Path, metavar="FILE.toml", help="public, test, tokenizer, clients, settings")
    disk.add_argument("--public", metavar="SPEC", help="the public image-caption pairs")
    disk.add_argument("--test", metavar="SPEC", help="the held-out evaluation pairs")
    disk.add_argument(
        "--client", action="append", metavar="MODALITY=SPEC", help="a client (image, text or multimodal); repeat"
    )
    disk.add_argument(
        "--tokenizer",
        metavar="CHOICE",
        help=f"the client tokenizer: {BUILTIN_WORDS} (built-in data only), wordpiece-minilm or trained:V "
        "(V tokens learnt from the public captions)",
    )
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
    sim.add_argument("--image-size", type=int, help="the side images are brought to (default: 32)")
    sim.add_argument("--server-image-widths", type=_widths, metavar="W1,W2,W3", help="the server's ResNet stage widths")
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
    samples = commands.add_parser(
        "samples",
        help="write a small sample scenario in real formats (Karpathy JSON, CIFAR-100, AG_NEWS) to try them",
        description="Writes, from the built-in scenes: DIR/coco (a Karpathy caption file and its JPEGs: train = "
        "the public set, test = the evaluation set, restval = an image+text client's pairs), "
        "DIR/cifar-100-python (an image client), DIR/ag_news.csv (a text client) and DIR/scenario.toml "
        "(for creamfl simulate --scenario); prints their specs.",
    )
    samples.set_defaults(handler=_samples)
    samples.add_argument("directory", type=Path)
    samples.add_argument("--seed", type=int, default=0)
    return parser


def _samples(args: argparse.Namespace) -> int:
    scenario = write_sample_scenario(args.directory, seed=args.seed)
    print(f"public: {scenario.public}\ntest:   {scenario.test}")
    for modality, spec in scenario.clients.items():
        print(f"client {modality}: {spec}")
    print(f"scenario: {scenario.toml}")
    return 0


_CONFIG_FIELDS = set(SimulationConfig.__dataclass_fields__)


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 32,64,128; got {text!r}") from exc
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"widths must be positive, got {text!r}")
    return widths


def _simulate(args: argparse.Namespace) -> int:
    console = Console(stderr=True, soft_wrap=True)  # soft wrap: an error stays one line
    overrides = {k: v for k, v in vars(args).items() if k in _CONFIG_FIELDS and v is not None}
    from_disk = args.scenario is not None or args.public is not None or args.test is not None or args.client
    try:
        federation = _from_disk(args, overrides, console) if from_disk else _builtin(args, overrides, console)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return 2
    result = _run_with_progress(federation, console)
    Console().print(rounds_table(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result.as_dict(), indent=2))
        console.print(f"wrote {args.json}")
    return 0


def _builtin(args: argparse.Namespace, overrides: dict[str, Any], console: Console) -> Federation:
    if args.tokenizer not in (None, BUILTIN_WORDS):
        raise ValueError(
            f"--tokenizer {args.tokenizer}: the built-in scenes read with {BUILTIN_WORDS}; other tokenizers are "
            "for data from disk (--public or --scenario)"
        )
    config = preset_config(args.preset, **overrides)
    _check_device(config.device)
    console.print(
        f"CreamFL simulation: strategy={config.strategy} rounds={config.rounds} seed={config.seed} "
        f"clients={config.image_clients} image + {config.text_clients} text + {config.multimodal_clients} "
        f"image+text, public={config.public_size} test={config.test_size} (client models: "
        f"{', '.join(sorted(CLIENT_MODELS))})"
    )
    return builtin_federation(config)


def _from_disk(args: argparse.Namespace, overrides: dict[str, Any], console: Console) -> Federation:
    """The scenario of ``--scenario`` or of ``--public``/``--test``/``--client``, read from disk."""
    if args.scenario is not None:
        if args.public is not None or args.test is not None or args.client:
            raise ValueError("--scenario names the data itself: leave out --public, --test and --client")
        written = read_scenario_file(args.scenario)
        public, test, tokenizer = written.public, written.test, args.tokenizer or written.tokenizer
        clients: list[ClientEntry] = list(written.clients)
        settings = written.settings
    else:
        if args.public is None or args.test is None:
            raise ValueError("data from disk needs both --public and --test (and a --client per client)")
        public, test, tokenizer = args.public, args.test, args.tokenizer
        clients = [parse_client_arg(text) for text in args.client or []]
        settings = {}
    scenario = new_scenario(public=public, test=test, tokenizer=tokenizer, clients=clients)
    config = scenario_config(args.preset, {**settings, **overrides})
    _check_device(config.device)
    loaded = load_scenario(scenario, config)
    _print_scenario(loaded, console)
    return scenario_federation(loaded)


def _print_scenario(loaded: LoadedScenario, console: Console) -> None:
    """What was read, and each text-bearing client's [UNK] share (a warning above the agents' threshold)."""
    config, public, test = loaded.config, loaded.public, loaded.test
    console.print(
        escape(
            f"CreamFL simulation on data from disk: strategy={config.strategy} rounds={config.rounds} "
            f"seed={config.seed} image_size={config.image_size}; public {public.num_images} images with "
            f"{len(public.captions)} captions, test {test.num_images} images with {len(test.captions)} captions; "
            f"tokenizer {loaded.scenario.tokenizer} ({loaded.tokenizer.vocab_size} tokens)"
        )
    )
    for client in loaded.clients:
        unknown = client.unknown
        share = "" if unknown is None else f"; [UNK] {unknown.share:.1%} of {unknown.tokens} tokens"
        console.print(escape(f"  {client.slot.name} ({client.slot.model_spec}): {client.data.description}{share}"))
        if unknown is not None and unknown.share > UNK_WARN_SHARE:
            console.print(
                f"[yellow]warning:[/yellow] {escape(client.slot.name)}: {unknown.share:.1%} of its tokens are "
                f"{escape('[UNK]')} with {loaded.scenario.tokenizer}: its text reads poorly; a larger trained:V "
                "or other public captions would cover more of it"
            )


def _check_device(device: str) -> None:
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available here; use --device cpu")


def _run_with_progress(federation: Federation, console: Console) -> SimulationResult:
    if not console.is_terminal:
        return run_federation(federation, on_round=lambda r: console.print(_round_line(r)))
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console, transient=True,
    ) as bar:  # fmt: skip
        rounds = bar.add_task("rounds", total=federation.config.rounds)
        stage = bar.add_task("starting", total=1)

        def on_round(result: RoundResult) -> None:
            bar.advance(rounds)
            console.print(_round_line(result))

        def on_stage(name: str, done: int, total: int) -> None:
            bar.update(stage, description=name, completed=done, total=max(total, 1))

        return run_federation(federation, on_round=on_round, progress=on_stage)


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
