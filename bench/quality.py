"""Quality of CreamFL against its baselines on the built-in dataset, over several seeds.

Runs each variant (server-only, centralized, creamfl, mean, and the two regulariser ablations;
optionally both server schedules) for every seed with the in-process simulator, and prints the
final test rsum (R@1 i2t + t2i) as mean +- std, with the fraction of the server-only ->
centralized gap that each federated variant closes.

    python bench/quality.py --seeds 0 1 2 --json runs/quality.json
    python bench/quality.py --merge runs/a.json runs/b.json   # one table from runs split over processes
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from creamfl.sim_config import SimulationConfig, preset_config
from creamfl.simulation import run_simulation

# A small public set, clients with several times more data: the regime CreamFL targets.
QUALITY_SETTING: dict[str, Any] = {
    "rounds": 5,
    "public_size": 300,
    "test_size": 300,
    "private_per_client": 800,
    "embed_dim": 128,
    "server_lr": 1e-3,
}

VARIANTS: dict[str, dict[str, Any]] = {
    "server-only": {"strategy": "server-only"},
    "centralized": {"strategy": "centralized"},
    "creamfl": {"strategy": "creamfl"},
    "mean": {"strategy": "mean"},
    "creamfl --no-inter": {"strategy": "creamfl", "inter": False},
    "creamfl --no-intra": {"strategy": "creamfl", "intra": False},
}


def run_variant(name: str, seed: int, schedule: str, setting: dict[str, Any]) -> dict[str, Any]:
    config: SimulationConfig = preset_config(
        "tiny", **{**setting, **VARIANTS[name], "seed": seed, "server_schedule": schedule}
    )
    started = time.perf_counter()
    result = run_simulation(config)
    last = result.rounds[-1]
    return {
        "variant": name,
        "schedule": schedule,
        "seed": seed,
        "rsum": last.test.rsum,
        "rsum_per_round": [r.test.rsum for r in result.rounds],
        "aggregate_public_rsum": last.aggregate_public_rsum,
        "global_public_rsum": last.global_public_rsum,
        "seconds": time.perf_counter() - started,
    }


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean +- std per (schedule, variant), and the share of the server-only -> centralized gap closed."""
    rows = []
    for schedule in dict.fromkeys(r["schedule"] for r in runs):
        by_variant: dict[str, list[float]] = {}
        for r in runs:
            if r["schedule"] == schedule:
                by_variant.setdefault(r["variant"], []).append(r["rsum"])
        low = statistics.fmean(by_variant["server-only"]) if "server-only" in by_variant else None
        high = statistics.fmean(by_variant["centralized"]) if "centralized" in by_variant else None
        for variant, values in by_variant.items():
            mean = statistics.fmean(values)
            gap = (mean - low) / (high - low) if low is not None and high is not None and high != low else None
            rows.append(
                {
                    "schedule": schedule,
                    "variant": variant,
                    "seeds": len(values),
                    "rsum_mean": mean,
                    "rsum_std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "gap_closed": gap,
                }
            )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| schedule | variant | seeds | rsum (mean ± std) | gap closed |", "|---|---|---|---|---|"]
    for r in rows:
        gap = (
            "—"
            if r["gap_closed"] is None or r["variant"] in ("server-only", "centralized")
            else f"{r['gap_closed']:+.0%}"
        )
        lines.append(
            f"| {r['schedule']} | {r['variant']} | {r['seeds']} | {r['rsum_mean']:.2f} ± {r['rsum_std']:.2f} | {gap} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--schedules", nargs="+", choices=("joint", "separate"), default=["joint"])
    parser.add_argument("--rounds", type=int, default=QUALITY_SETTING["rounds"])
    parser.add_argument("--threads", type=int, help="torch threads (1 lets two benchmark processes share 2 cores)")
    parser.add_argument("--json", type=Path, help="write every run and the summary here (updated after each run)")
    parser.add_argument(
        "--merge", type=Path, nargs="+", help="summarise runs saved by earlier --json files; run nothing"
    )
    args = parser.parse_args()
    if args.merge:
        merged = [run for path in args.merge for run in json.loads(path.read_text())["runs"]]
        unique = {(r["schedule"], r["variant"], r["seed"]): r for r in merged}
        print(markdown(summarise(list(unique.values()))))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    setting = {**QUALITY_SETTING, "rounds": args.rounds}
    runs: list[dict[str, Any]] = []
    for schedule in args.schedules:
        for seed in args.seeds:
            for variant in args.variants:
                runs.append(run_variant(variant, seed, schedule, setting))
                last = runs[-1]
                print(f"{schedule:8s} seed {seed} {variant:20s} rsum {last['rsum']:6.2f}  ({last['seconds']:.0f} s)")
                if args.json is not None:
                    args.json.parent.mkdir(parents=True, exist_ok=True)
                    payload = {"setting": setting, "runs": runs, "summary": summarise(runs)}
                    args.json.write_text(json.dumps(payload, indent=2))
    print(markdown(summarise(runs)))


if __name__ == "__main__":
    main()
