"""Benchmark of ``creamfl.ensemble.ensemble_weights`` against the full-matrix baseline and plain matmul.

What it measures, for each public-set size N (K clients, dimension d, float32 random unit vectors, fixed seed):

* ``ours``   - the library's blocked :func:`creamfl.ensemble.ensemble_weights` (default block size);
* ``naive``  - the reference code's approach, written here: per client ``log_softmax(L_c @ G.T, dim=1)``
  materialised as an ``[N, N]`` float32 matrix, its diagonal, then a softmax over clients (the baseline);
* ``matmul`` - one plain ``torch.matmul`` of ``[K*N, d] @ [d, N]`` into a preallocated float32 output: the
  irreducible ``2*K*N^2*d`` FLOPs of the problem, used as the achievable GFLOP/s rate.

Wall time is the best of ``--repeats`` calls (``time.perf_counter``) after one warm-up call each; the methods are
interleaved repeat by repeat so background load hits them alike. Peak *extra* memory is measured on CPU in a fresh
child process per (method, N) (this script with the hidden ``--child METHOD N`` mode): the child allocates the
inputs, resets its peak RSS to the current RSS, runs the method once and reports the peak RSS above that (falling
back to the ``ru_maxrss`` increase where ``/proc`` is missing; see :func:`run_child`). On CUDA it is
``torch.cuda.max_memory_allocated`` above the allocation before the call. Correctness is the max abs difference of
the returned ``[K, N]`` weights against a float64 reference computed client by client in row chunks (no float64
``[N, N]`` matrix).

Optional diagnostics: ``--profile N`` splits ours' time into its phases (matmul, positive term, max, subtract, exp,
sum+log) with an instrumented copy of the library loop; ``--block-sizes B ...`` sweeps the block size at
``--sweep-n``; ``--candidate`` adds ``candidate``, a prototype of a proposed change to the library (clearly a
candidate, not the library code; see :func:`candidate_weights`).

Run (from the repository root)::

    .venv/bin/python bench/ensemble_bench.py                      # N = 2000 8000 20000, d = 256, K = 4
    .venv/bin/python bench/ensemble_bench.py --sizes 2000 --repeats 5 --json /tmp/ens.json
    .venv/bin/python bench/ensemble_bench.py --sizes 8000 --candidate --profile 8000 --block-sizes 16 64 256 1024
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from creamfl.ensemble import _BLOCK_ELEMENTS, ensemble_weights

METHODS = ("ours", "naive", "matmul", "candidate")
TARGET_MAX_ABS_DIFF = 1e-5
TARGET_MEMORY_RATIO = 20.0  # ours' peak extra memory <= 1/20 of naive's (checked at the largest N)
TARGET_TIME_RATIO = 1.0 / 1.2  # naive/ours >= 1/1.2: ours at most 1.2x slower than naive
TARGET_MATMUL_FRACTION = 0.70
REFERENCE_CHUNK_ROWS = 1024  # float64 reference: [1024, N] logits at a time (160 MB at N = 20k)


# --------------------------------------------------------------------------------------------------------------
# Inputs and the methods under test
# --------------------------------------------------------------------------------------------------------------


def make_inputs(n: int, dim: int, clients: int, seed: int, device: torch.device) -> tuple[list[Tensor], Tensor]:
    """K client matrices and the global matrix, ``[N, d]`` float32 unit rows, normalised in place (no temporaries)."""
    generator = torch.Generator().manual_seed(seed)
    mats = []
    for _ in range(clients + 1):
        mat = torch.randn(n, dim, generator=generator, dtype=torch.float32)
        mat.div_(mat.norm(dim=1, keepdim=True))
        mats.append(mat.to(device))
    return mats[:clients], mats[clients]


def naive_weights(local_reps: Sequence[Tensor], global_other: Tensor) -> Tensor:
    """The reference code's full-matrix approach: ``[N, N]`` logits and log-softmax per client. ``[K, N]``."""
    scores = []
    for reps in local_reps:
        logits = reps @ global_other.T  # [N, N]
        scores.append(torch.log_softmax(logits, dim=1).diagonal().clone())  # [N]
        del logits
    return torch.softmax(torch.stack(scores), dim=0)


def reference_weights_f64(local_reps: Sequence[Tensor], global_other: Tensor, chunk_rows: int) -> Tensor:
    """The naive computation in float64, client by client in row chunks (no ``[N, N]`` float64 matrix). ``[K, N]``."""
    global64 = global_other.double()
    n = global64.shape[0]
    scores = torch.empty(len(local_reps), n, dtype=torch.float64, device=global64.device)
    for client, reps in enumerate(local_reps):
        reps64 = reps.double()
        for start in range(0, n, chunk_rows):
            stop = min(start + chunk_rows, n)
            logits = reps64[start:stop] @ global64.T  # [B, N]
            own = torch.arange(stop - start, device=global64.device)
            scores[client, start:stop] = logits[own, start + own] - torch.logsumexp(logits, dim=1)
    return torch.softmax(scores, dim=0)


# Largest gap allowed between the Cauchy-Schwarz shift and the positive logit before the candidate falls back to
# the exact row max: exp(-gap) must stay a normal float32 with room to spare (exp(-87) is the smallest).
_CANDIDATE_MAX_SHIFT_GAP = 60.0
_CANDIDATE_BLOCK_ELEMENTS = _BLOCK_ELEMENTS  # the library's block size, so only the passes differ (see the sweep)


def candidate_weights(
    local_reps: Sequence[Tensor],
    global_other: Tensor,
    *,
    block_elements: int = _CANDIDATE_BLOCK_ELEMENTS,
    block_size: int | None = None,
) -> Tensor:
    """CANDIDATE (a prototype of a proposed library change, not library code): same result as ``ensemble_weights``.

    Differences from the library loop (``exclude_self=False`` only, float32 only; enough to measure):

    1. the shift of the log-sum-exp is the Cauchy-Schwarz bound ``|L_c[i]| * max_j |G[j]|`` (>= every logit of the
       row, so exp never overflows) instead of the exact row max, whenever the bound is within
       ``_CANDIDATE_MAX_SHIFT_GAP`` of the positive logit (so the largest term cannot underflow): this removes the
       ``amax`` pass over the block (always true for unit vectors, where the gap is at most 2);
    2. the shift is folded into the matmul by an extra column (``[L, -shift] @ [G, 1].T``), removing the ``sub_``
       pass: per block only matmul -> exp_ -> sum remain;
    3. no ``torch.stack`` of all clients (a ``[K, N, d]`` copy): each block gathers its rows from the K tensors.
    """
    num_clients = len(local_reps)
    n, dim = global_other.shape
    device = global_other.device
    rows_per_block = block_size or max(1, block_elements // (num_clients * n))
    global_aug = torch.cat([global_other, torch.ones(n, 1, device=device)], dim=1)  # [N, d + 1]
    global_norm_max = global_other.norm(dim=1).max()
    scores = torch.empty(num_clients, n, device=device)  # [K, N]
    logits: Tensor | None = None  # reused: [K * B, N]
    rows_aug: Tensor | None = None  # reused: [K, B, d + 1]
    for start in range(0, n, rows_per_block):
        stop = min(start + rows_per_block, n)
        width = stop - start
        if logits is None or rows_aug is None or logits.shape[0] != num_clients * width:
            logits = torch.empty(num_clients * width, n, device=device)
            rows_aug = torch.empty(num_clients, width, dim + 1, device=device)
        for client, reps in enumerate(local_reps):
            rows_aug[client, :, :dim] = reps[start:stop]
        rows = rows_aug[:, :, :dim]  # [K, B, d]
        positive = (rows * global_other[start:stop]).sum(-1)  # [K, B]
        shift = rows.norm(dim=-1) * global_norm_max  # [K, B], >= every logit of its row
        block = logits.view(num_clients, width, n)
        if float((shift - positive).max()) <= _CANDIDATE_MAX_SHIFT_GAP:
            rows_aug[:, :, dim] = -shift
            torch.matmul(rows_aug.view(-1, dim + 1), global_aug.T, out=logits)  # logits - shift, [K * B, N]
            block.exp_()
        else:  # far from unit vectors: the exact row max, as in the library
            torch.matmul(rows.reshape(-1, dim), global_other.T, out=logits)
            shift = block.amax(dim=-1)
            block.sub_(shift.unsqueeze(-1)).exp_()
        scores[:, start:stop] = positive - block.sum(dim=-1).log_().add_(shift)
    return torch.softmax(scores, dim=0)


def _matmul_operands(local_reps: Sequence[Tensor], global_other: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    stacked = torch.cat(list(local_reps))  # [K * N, d]
    out = torch.empty(stacked.shape[0], global_other.shape[0], device=global_other.device)  # [K * N, N]
    return stacked, global_other.T, out


def make_method(name: str, local_reps: list[Tensor], global_other: Tensor) -> Callable[[], Any]:
    """A zero-argument callable running ``name`` on the inputs (operands of ``matmul`` are allocated here)."""
    if name == "ours":
        return lambda: ensemble_weights(local_reps, global_other)
    if name == "naive":
        return lambda: naive_weights(local_reps, global_other)
    if name == "candidate":
        return lambda: candidate_weights(local_reps, global_other)
    if name == "matmul":
        left, right, out = _matmul_operands(local_reps, global_other)
        return lambda: torch.matmul(left, right, out=out)
    raise ValueError(f"unknown method {name!r}")


# --------------------------------------------------------------------------------------------------------------
# Timing and memory
# --------------------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_methods(methods: dict[str, Callable[[], Any]], repeats: int, device: torch.device) -> dict[str, float]:
    """Best-of-``repeats`` seconds per method, one warm-up each, the methods interleaved within each repeat."""
    best = dict.fromkeys(methods, float("inf"))
    for fn in methods.values():
        fn()
        _sync(device)
    for _ in range(repeats):
        for name, fn in methods.items():
            _sync(device)
            begin = time.perf_counter()
            fn()
            _sync(device)
            best[name] = min(best[name], time.perf_counter() - begin)
    return best


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _proc_status_mb(key: str) -> float:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    raise KeyError(key)


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def run_child(args: argparse.Namespace) -> None:
    """Hidden ``--child METHOD N`` mode: print the peak extra memory (MB) of one call as one JSON line.

    CPU: where ``/proc/self/clear_refs`` allows it, the peak RSS (``VmHWM``) is reset to the current RSS after the
    inputs exist and the peak above that RSS is reported; this is needed because ``ru_maxrss`` survives fork+exec,
    so a child of a parent that once held gigabytes starts with the parent's peak and would read 0. Otherwise (no
    ``/proc``), the increase of ``ru_maxrss`` across the call, which can under-read by the import-time peak.
    """
    method, n_text = args.child
    n = int(n_text)
    device = torch.device(args.device)
    local_reps, global_other = make_inputs(n, args.dim, args.clients, args.seed, device)
    torch.matmul(global_other[:64], global_other[:64].T)  # start the thread pool / BLAS before the baseline
    fn = make_method(method, local_reps, global_other)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device) / 2**20
        fn()
        torch.cuda.synchronize(device)
        peak, probe = torch.cuda.max_memory_allocated(device) / 2**20, "cuda.max_memory_allocated"
    elif _reset_peak_rss():
        before = _proc_status_mb("VmRSS")
        fn()
        peak, probe = _proc_status_mb("VmHWM"), "VmHWM after clear_refs"
    else:
        before = _maxrss_mb()
        fn()
        peak, probe = _maxrss_mb(), "ru_maxrss"
    print(json.dumps({"method": method, "n": n, "peak_extra_mb": peak - before, "probe": probe}))


def measure_peak_mb(args: argparse.Namespace, method: str, n: int) -> float:
    """Peak extra memory of one call of ``method`` at ``n``, measured in a fresh child process."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        method,
        str(n),
        "--dim",
        str(args.dim),
        "--clients",
        str(args.clients),
        "--seed",
        str(args.seed),
        "--device",
        args.device,
        "--threads",
        str(args.threads),
    ]
    completed = subprocess.run(command, check=True, capture_output=True, text=True)
    return float(json.loads(completed.stdout.strip().splitlines()[-1])["peak_extra_mb"])


# --------------------------------------------------------------------------------------------------------------
# Main benchmark
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One N of the main table (times in seconds, memory in MB, rates in GFLOP/s)."""

    n: int
    ours_s: float
    naive_s: float
    time_ratio_naive_over_ours: float
    ours_peak_mb: float
    naive_peak_mb: float
    memory_ratio_naive_over_ours: float
    ours_gflops: float
    matmul_s: float
    matmul_gflops: float
    pct_of_matmul_rate: float
    max_abs_diff: float
    naive_max_abs_diff: float
    candidate: dict[str, float] = field(default_factory=dict)


def bench_size(args: argparse.Namespace, n: int, device: torch.device) -> Row:
    local_reps, global_other = make_inputs(n, args.dim, args.clients, args.seed, device)
    reference = reference_weights_f64(local_reps, global_other, REFERENCE_CHUNK_ROWS)
    names = ["ours", "naive", "matmul"] + (["candidate"] if args.candidate else [])
    results = {name: make_method(name, local_reps, global_other)() for name in names if name != "matmul"}
    diffs = {name: float((out.double() - reference).abs().max()) for name, out in results.items()}
    del results
    methods = {name: make_method(name, local_reps, global_other) for name in names}
    times = time_methods(methods, args.repeats, device)
    del methods
    peaks = {name: measure_peak_mb(args, name, n) for name in names if name != "matmul"}
    flops = 2.0 * args.clients * n * n * args.dim
    row = Row(
        n=n,
        ours_s=times["ours"],
        naive_s=times["naive"],
        time_ratio_naive_over_ours=times["naive"] / times["ours"],
        ours_peak_mb=peaks["ours"],
        naive_peak_mb=peaks["naive"],
        memory_ratio_naive_over_ours=peaks["naive"] / max(peaks["ours"], 1e-9),
        ours_gflops=flops / times["ours"] / 1e9,
        matmul_s=times["matmul"],
        matmul_gflops=flops / times["matmul"] / 1e9,
        pct_of_matmul_rate=100.0 * times["matmul"] / times["ours"],
        max_abs_diff=diffs["ours"],
        naive_max_abs_diff=diffs["naive"],
    )
    if args.candidate:
        row.candidate = {
            "candidate_s": times["candidate"],
            "candidate_peak_mb": peaks["candidate"],
            "candidate_pct_of_matmul_rate": 100.0 * times["matmul"] / times["candidate"],
            "candidate_speedup_over_ours": times["ours"] / times["candidate"],
            "candidate_max_abs_diff": diffs["candidate"],
        }
    return row


class _Laps:
    """Accumulates the seconds since the previous lap under a phase name (synchronising CUDA first)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.phases: dict[str, float] = defaultdict(float)
        self.clock = time.perf_counter()

    def __call__(self, phase: str) -> None:
        _sync(self.device)
        now = time.perf_counter()
        self.phases[phase] += now - self.clock
        self.clock = now


def profile_ours(args: argparse.Namespace, n: int, device: torch.device, block_size: int | None) -> dict[str, float]:
    """Seconds per phase of the library's loop (an instrumented copy of it; the repeat with the best total)."""
    local_reps, global_other = make_inputs(n, args.dim, args.clients, args.seed, device)
    num_clients = len(local_reps)
    rows_per_block = block_size or max(1, _BLOCK_ELEMENTS // (num_clients * n))
    best: dict[str, float] = {}
    for _ in range(args.repeats + 1):  # the first pass is the warm-up
        lap = _Laps(device)
        stacked = torch.stack(local_reps)
        lap("stack")
        logits: Tensor | None = None
        for start in range(0, n, rows_per_block):
            stop = min(start + rows_per_block, n)
            width = stop - start
            rows = stacked[:, start:stop]
            if logits is None or logits.shape[0] != num_clients * width:
                logits = torch.empty(num_clients * width, n, device=device)
            lap("other")
            torch.matmul(rows.reshape(-1, args.dim), global_other.T, out=logits)
            lap("matmul")
            block = logits.view(num_clients, width, n)
            (rows * global_other[start:stop]).sum(-1)
            lap("positive")
            row_max = block.amax(dim=-1, keepdim=True)
            lap("amax")
            block.sub_(row_max)
            lap("sub")
            block.exp_()
            lap("exp")
            block.sum(dim=-1).log_().add_(row_max.squeeze(-1))
            lap("sum_log")
        phases = dict(lap.phases)
        phases["total"] = sum(phases.values())
        if not best or phases["total"] < best["total"]:
            best = phases
    best["rows_per_block"] = float(rows_per_block)
    return best


def sweep_block_sizes(args: argparse.Namespace, device: torch.device) -> list[dict[str, float]]:
    """Ours (and the candidate with ``--candidate``) at each ``--block-sizes`` value, N = ``--sweep-n``."""
    n = args.sweep_n
    local_reps, global_other = make_inputs(n, args.dim, args.clients, args.seed, device)
    methods: dict[str, Callable[[], Any]] = {"matmul": make_method("matmul", local_reps, global_other)}
    for size in args.block_sizes:
        methods[f"ours:{size}"] = lambda size=size: ensemble_weights(local_reps, global_other, block_size=size)
        if args.candidate:
            methods[f"candidate:{size}"] = lambda size=size: candidate_weights(
                local_reps, global_other, block_size=size
            )
    times = time_methods(methods, args.repeats, device)
    rows = []
    for size in args.block_sizes:
        entry = {
            "block_size": float(size),
            "block_mb": args.clients * size * n * 4 / 2**20,
            "ours_s": times[f"ours:{size}"],
            "ours_pct_of_matmul_rate": 100.0 * times["matmul"] / times[f"ours:{size}"],
        }
        if args.candidate:
            entry["candidate_s"] = times[f"candidate:{size}"]
            entry["candidate_pct_of_matmul_rate"] = 100.0 * times["matmul"] / times[f"candidate:{size}"]
        rows.append(entry)
    return rows


# --------------------------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------------------------


def print_table(rows: Sequence[Row]) -> None:
    header = (
        f"{'N':>6} {'ours s':>8} {'naive s':>8} {'naive/ours':>10} {'ours MB':>8} {'naive MB':>9} {'mem n/o':>8} "
        f"{'ours GF/s':>9} {'mm GF/s':>8} {'% of mm':>7} {'max|diff|':>9}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.n:>6} {row.ours_s:>8.3f} {row.naive_s:>8.3f} {row.time_ratio_naive_over_ours:>10.2f} "
            f"{row.ours_peak_mb:>8.1f} {row.naive_peak_mb:>9.1f} {row.memory_ratio_naive_over_ours:>8.1f} "
            f"{row.ours_gflops:>9.1f} {row.matmul_gflops:>8.1f} {row.pct_of_matmul_rate:>6.1f}% "
            f"{row.max_abs_diff:>9.1e}"
        )
    if any(row.candidate for row in rows):
        print("\nCANDIDATE (prototype in this script, not the library):")
        print(f"{'N':>6} {'cand s':>8} {'ours/cand':>9} {'cand MB':>8} {'% of mm':>7} {'max|diff|':>9}")
        for row in rows:
            cand = row.candidate
            print(
                f"{row.n:>6} {cand['candidate_s']:>8.3f} {cand['candidate_speedup_over_ours']:>9.2f} "
                f"{cand['candidate_peak_mb']:>8.1f} {cand['candidate_pct_of_matmul_rate']:>6.1f}% "
                f"{cand['candidate_max_abs_diff']:>9.1e}"
            )


def check_targets(rows: Sequence[Row]) -> dict[str, bool]:
    largest = max(rows, key=lambda row: row.n)
    return {
        "max_abs_diff_le_1e-5_all_n": all(row.max_abs_diff <= TARGET_MAX_ABS_DIFF for row in rows),
        "memory_ratio_ge_20_at_largest_n": largest.memory_ratio_naive_over_ours >= TARGET_MEMORY_RATIO,
        "time_within_1.2x_of_naive_all_n": all(row.time_ratio_naive_over_ours >= TARGET_TIME_RATIO for row in rows),
        "ge_70pct_of_matmul_rate_all_n": all(row.pct_of_matmul_rate >= 100 * TARGET_MATMUL_FRACTION for row in rows),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 20000], help="public-set sizes N")
    parser.add_argument("--dim", type=int, default=256, help="representation dimension d")
    parser.add_argument("--clients", type=int, default=4, help="number of clients K")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per method (best is kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads (cores)")
    parser.add_argument("--json", type=str, default=None, help="write the results to this path")
    parser.add_argument("--candidate", action="store_true", help="also run the CANDIDATE prototype")
    parser.add_argument("--profile", type=int, default=None, metavar="N", help="phase breakdown of ours at N")
    parser.add_argument("--block-sizes", type=int, nargs="*", default=[], help="block-size sweep of ours")
    parser.add_argument("--sweep-n", type=int, default=8000, help="N for --block-sizes")
    parser.add_argument("--skip-main", action="store_true", help="only the --profile / --block-sizes diagnostics")
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "N"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None and args.child[0] not in METHODS:
        parser.error(f"--child METHOD must be one of {METHODS}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    if args.child is not None:
        run_child(args)
        return
    device = torch.device(args.device)
    meta = {
        "torch": torch.__version__,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_start": os.getloadavg(),
        "dim": args.dim,
        "clients": args.clients,
        "repeats": args.repeats,
        "seed": args.seed,
        "default_block_elements": _BLOCK_ELEMENTS,
    }
    print(
        f"torch {meta['torch']} on {args.device}, {meta['threads']} threads (cpu_count {meta['cpu_count']}), "
        f"K={args.clients} d={args.dim} repeats={args.repeats}, load average {meta['load_average_start']}"
    )
    report: dict[str, Any] = {"meta": meta}
    if not args.skip_main:
        rows = []
        for n in args.sizes:
            rows.append(bench_size(args, n, device))
            print(f"  N={n} done (load average {os.getloadavg()})", flush=True)
        print()
        print_table(rows)
        targets = check_targets(rows)
        print("\ntargets:", ", ".join(f"{name}={'PASS' if ok else 'MISS'}" for name, ok in targets.items()))
        report["rows"] = [asdict(row) for row in rows]
        report["targets"] = targets
    if args.profile is not None:
        phases = profile_ours(args, args.profile, device, None)
        print(f"\nprofile of ours at N={args.profile} ({int(phases['rows_per_block'])} rows per block), seconds:")
        print("  " + "  ".join(f"{name}={value:.3f}" for name, value in phases.items() if name != "rows_per_block"))
        report["profile"] = {"n": args.profile, **phases}
    if args.block_sizes:
        sweep = sweep_block_sizes(args, device)
        print(f"\nblock-size sweep at N={args.sweep_n}:")
        for entry in sweep:
            print("  " + "  ".join(f"{name}={value:.3f}" for name, value in entry.items()))
        report["block_size_sweep"] = {"n": args.sweep_n, "rows": sweep}
    meta["load_average_end"] = os.getloadavg()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
