"""Reading rounds: a round's detail from the API turned into what the summary keeps."""

from __future__ import annotations

import itertools
import math
from datetime import datetime
from typing import Any

ROUND_STATES = ("pending", "open", "aggregating", "training", "evaluating")


def state_seconds(transitions: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds spent in each state (summed over re-openings) and the round's total, from its transitions."""
    times = [(t["state"], datetime.fromisoformat(t["at"])) for t in transitions]
    spent = dict.fromkeys(ROUND_STATES, 0.0)
    for (state, at), (_, after) in itertools.pairwise(times):
        spent[state] = spent.get(state, 0.0) + (after - at).total_seconds()
    spent["total"] = (times[-1][1] - times[0][1]).total_seconds() if times else 0.0
    return {state: round(value, 3) for state, value in spent.items()}


def weight_spread(weights: dict[str, Any] | None, names: dict[str, str]) -> dict[str, Any]:
    """Per modality: the smallest and largest mean ensemble weight a client got, and the weight entropy
    (nats; log K when the ensemble is uniform over its K clients)."""
    spread = {}
    for modality, stats in sorted((weights or {}).items()):
        means = [float(w) for w in stats["mean_weight"]]
        clients = [names.get(c, c) for c in stats["clients"]]
        spread[modality] = {
            "clients": clients,
            "mean_weight": dict(zip(clients, [round(w, 5) for w in means], strict=True)),
            "min": round(min(means), 5),
            "max": round(max(means), 5),
            "max_weight": round(float(stats["max_weight"]), 5),
            "entropy": round(float(stats["entropy"]), 5),
            "uniform_entropy": round(math.log(len(means)), 5),
        }
    return spread


def round_record(detail: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """What the summary keeps of a round's detail (``GET /federations/{id}/rounds/{n}``), with client names."""
    metrics = detail.get("metrics") or {}
    return {
        "round": detail["number"],
        "state": detail["state"],
        "attempts": detail["attempt"] + 1,
        "seconds": state_seconds(detail["transitions"]),
        "participants": sorted(names.get(c, c) for c in detail["selected"]),
        "uploaded": dict(sorted((names.get(c, c), m) for c, m in detail["uploaded"].items())),
        "bytes_up": detail["bytes_up"],
        "bytes_down": detail["bytes_down"],
        "traffic": dict(sorted((names.get(c, c), t) for c, t in detail.get("traffic", {}).items())),
        "weights": weight_spread(detail.get("weights"), names),
        "i2t_r1": metrics.get("i2t_r1"),
        "t2i_r1": metrics.get("t2i_r1"),
        "rsum": metrics.get("rsum"),
        "metrics": metrics,
        "server": detail.get("server") or {},
    }
