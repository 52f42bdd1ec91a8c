"""The server-only baseline: the same server, data and seed with no clients, trained in this process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from coordinator_service.demo.report import BASELINE_COLUMNS, baseline_cells, table_header, table_line

if TYPE_CHECKING:
    from creamfl.sim_config import SimulationConfig


def run_baseline(
    scenario: SimulationConfig, *, print_line: Callable[[str], None], checkpoint: Callable[[], None]
) -> dict[str, Any]:
    """The server-only baseline on the same data and seed, in this process (the simulator)."""
    from creamfl.simulation import RoundResult, run_simulation

    config = replace(scenario, strategy="server-only")
    print_line("\nserver-only baseline: the same server, data and seed, no clients (in this process)")
    print_line(table_header(BASELINE_COLUMNS))
    rounds: list[dict[str, Any]] = []

    def on_round(result: RoundResult) -> None:
        record = {
            "round": result.round,
            "seconds": round(result.seconds, 2),
            "i2t_r1": result.test.i2t_r1,
            "t2i_r1": result.test.t2i_r1,
            "rsum": result.test.rsum,
        }
        rounds.append(record)
        print_line(table_line(BASELINE_COLUMNS, baseline_cells(record)))
        checkpoint()

    run_simulation(config, on_round=on_round, progress=lambda *_: checkpoint())
    return {"strategy": "server-only", "rounds": rounds, "final": rounds[-1]}
