"""What the demo prints and keeps: the round, communication and baseline tables, and the summary's rows."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator_service.demo.agents import AgentPlan
from coordinator_service.demo.rounds import ROUND_STATES


@dataclass(frozen=True)
class Column:
    header: str
    width: int


ROUND_COLUMNS = (
    Column("round", 5),
    Column("publish s", 9),
    Column("clients s", 9),
    Column("aggr s", 6),
    Column("distil s", 8),
    Column("eval s", 6),
    Column("total s", 7),
    Column("clients", 7),
    Column("up KB", 8),
    Column("down KB", 8),
    Column("img w min-max", 13),
    Column("img H/logK", 13),
    Column("txt w min-max", 13),
    Column("txt H/logK", 13),
    Column("i2t R@1", 7),
    Column("t2i R@1", 7),
    Column("rsum", 6),
)
BASELINE_COLUMNS = (
    Column("round", 5),
    Column("seconds", 7),
    Column("i2t R@1", 7),
    Column("t2i R@1", 7),
    Column("rsum", 6),
)


def table_line(columns: tuple[Column, ...], cells: list[str]) -> str:
    return "  ".join(cell.rjust(column.width) for column, cell in zip(columns, cells, strict=True))


def table_header(columns: tuple[Column, ...]) -> str:
    return "\n".join(
        [table_line(columns, [c.header for c in columns]), table_line(columns, ["-" * c.width for c in columns])]
    )


def round_cells(record: dict[str, Any]) -> list[str]:
    seconds = record["seconds"]
    cells = [str(record["round"])]
    cells += [f"{seconds[state]:.1f}" for state in ROUND_STATES]
    cells += [f"{seconds['total']:.1f}", str(len(record["participants"]))]
    cells += [f"{record['bytes_up'] / 1e3:.1f}", f"{record['bytes_down'] / 1e3:.1f}"]
    for modality in ("image", "text"):
        spread = record["weights"].get(modality)
        if spread is None:
            cells += ["-", "-"]
        else:
            cells += [
                f"{spread['min']:.4f}-{spread['max']:.4f}",
                f"{spread['entropy']:.4f}/{spread['uniform_entropy']:.4f}",
            ]
    cells += [_number(record["i2t_r1"]), _number(record["t2i_r1"]), _number(record["rsum"])]
    return cells


def baseline_cells(record: dict[str, Any]) -> list[str]:
    return [
        str(record["round"]),
        f"{record['seconds']:.1f}",
        _number(record["i2t_r1"]),
        _number(record["t2i_r1"]),
        _number(record["rsum"]),
    ]


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _spread_kb(values: list[int]) -> str:
    low, high = min(values, default=0) / 1e3, max(values, default=0) / 1e3
    return f"{low:.1f}" if math.isclose(low, high) else f"{low:.1f}-{high:.1f}"


def communication(clients: list[dict[str, Any]], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per client per round: CreamFL's bytes (the coordinator's count) beside FedAvg's for the same model."""
    rows = []
    for record in records:
        for client in clients:
            traffic = record["traffic"].get(client["name"], {"up": 0, "down": 0})
            rows.append(
                {
                    "round": record["round"],
                    "client": client["name"],
                    "model": client["model"],
                    "up": traffic["up"],
                    "down": traffic["down"],
                    "fedavg_up": client["parameter_bytes"],
                    "fedavg_down": client["parameter_bytes"],
                }
            )
    return rows


def describe_clients(clients: list[dict[str, Any]], plans: list[AgentPlan], *, embed_dim: int) -> list[dict[str, Any]]:
    """Each client as enrolled, with what FedAvg would send for its model (float32 parameters)."""
    import torch

    from creamfl.data.scenes import CLASS_NAMES
    from creamfl.models import build_client_model
    from creamfl.rounds import client_tokenizer

    vocab = client_tokenizer().vocab_size
    kinds = {plan.name: plan.slot.kind for plan in plans}
    rows = []
    with torch.random.fork_rng():
        for client in sorted(clients, key=lambda c: c["name"]):
            model = build_client_model(
                client["model"], embed_dim=embed_dim, vocab_size=vocab, num_classes=len(CLASS_NAMES)
            )
            parameters = sum(p.numel() for p in model.parameters())
            rows.append(
                {
                    "name": client["name"],
                    "id": client["id"],
                    "kind": kinds.get(client["name"], "+".join(client["modalities"])),
                    "model": client["model"],
                    "modalities": client["modalities"],
                    "samples": client["samples"],
                    "parameters": parameters,
                    "parameter_bytes": model.parameter_bytes(),
                    "mean_weight": client.get("mean_weight"),
                }
            )
    return rows


def print_communication(
    clients: list[dict[str, Any]], records: list[dict[str, Any]], print_line: Callable[[str], None]
) -> None:
    columns = (
        Column("client", 12),
        Column("model", 11),
        Column("params", 9),
        Column("CreamFL up KB/round", 19),
        Column("down KB/round", 13),
        Column("FedAvg up+down KB/round", 23),
        Column("FedAvg / CreamFL", 16),
    )
    print_line("communication per client (CreamFL: measured by the coordinator; FedAvg: 2 x float32 parameters)")
    print_line(table_header(columns))
    for client in clients:
        ups = [r["traffic"].get(client["name"], {}).get("up", 0) for r in records]
        downs = [r["traffic"].get(client["name"], {}).get("down", 0) for r in records]
        creamfl = (sum(ups) + sum(downs)) / max(len(records), 1)
        fedavg = 2 * client["parameter_bytes"]
        cells = [
            client["name"],
            client["model"],
            f"{client['parameters']:,}",
            _spread_kb(ups),
            _spread_kb(downs),
            f"{fedavg / 1e3:.1f}",
            f"{fedavg / creamfl:.1f}x" if creamfl else "-",
        ]
        print_line(table_line(columns, cells))


def print_ending(
    summary: dict[str, Any], *, token_file: Path | None, run_dir: Path, print_line: Callable[[str], None]
) -> None:
    final = summary["final"]
    print_line("")
    line = f"final: federation rsum {final['rsum']:.2f} (i2t R@1 {final['i2t_r1']:.2f}, t2i R@1 {final['t2i_r1']:.2f})"
    baseline = summary["baseline"]
    if baseline is not None:
        b = baseline["final"]
        line += f"; server-only rsum {b['rsum']:.2f} (i2t {b['i2t_r1']:.2f}, t2i {b['t2i_r1']:.2f})"
        line += f"; difference {final['rsum'] - b['rsum']:+.2f}"
    print_line(line)
    print_line(f"the same federation in one process: {summary['simulate_command']}")
    print_line(
        f"server checkpoint (best rsum): {summary['checkpoint']} (sha256 {summary['checkpoint_sha256'][:16]}...)"
    )
    if token_file is not None:
        print_line(
            f"dashboard: {summary['dashboard']} (log in with the admin token in {token_file}); "
            f"after the demo: creamfl-coordinator serve --data-dir {token_file.parent} --port 8080, "
            "then http://127.0.0.1:8080/dashboard"
        )
    else:
        print_line(f"dashboard: {summary['dashboard']} (log in with the admin token)")
    print_line(f"summary: {run_dir / 'summary.json'}; wall time {summary['wall_seconds']:.0f} s")
