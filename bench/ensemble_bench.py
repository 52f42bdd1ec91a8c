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

On a shared machine, compare with ``--threads 1`` too: with more OpenMP threads than free cores, every parallel op can
wait for a descheduled thread (a scheduler time slice), which penalises code made of many small ops (small blocks,
small N) far more than one big matmul; the load average is printed and stored for that reason.

Optional diagnostics: ``--profile N`` splits one call of ours into aten ops with ``torch.profiler`` (matmul vs exp vs
sum vs the rest); ``--block-sizes B ...`` sweeps the block size at ``--sweep-n``.

Run (from the repository root)::

    .venv/bin/python bench/ensemble_bench.py                      # N = 2000 8000 20000, d = 256, K = 4
    .venv/bin/python bench/ensemble_bench.py --sizes 2000 --repeats 5 --json /tmp/ens.json
    .venv/bin/python bench/ensemble_bench.py --skip-main --profile 8000 --block-sizes 16 64 256 1024
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from creamfl import ensemble as ensemble_module
from creamfl.ensemble import _BLOCK_ELEMENTS, ensemble_weights

METHODS = ("ours", "naive", "matmul")
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
    record = {"method": method, "n": n, "peak_extra_mb": peak - before, "probe": probe, "library": _library_digest()}
    print(json.dumps(record))


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
    record = json.loads(completed.stdout.strip().splitlines()[-1])
    if record["library"] != _library_digest():
        print(f"WARNING: creamfl/ensemble.py changed during the run (child saw {record['library'][:12]})")
    return float(record["peak_extra_mb"])


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


def bench_size(args: argparse.Namespace, n: int, device: torch.device) -> Row:
    local_reps, global_other = make_inputs(n, args.dim, args.clients, args.seed, device)
    reference = reference_weights_f64(local_reps, global_other, REFERENCE_CHUNK_ROWS)
    names = list(METHODS)
    results = {name: make_method(name, local_reps, global_other)() for name in names if name != "matmul"}
    diffs = {name: float((out.double() - reference).abs().max()) for name, out in results.items()}
    del results
    methods = {name: make_method(name, local_reps, global_other) for name in names}
    times = time_methods(methods, args.repeats, device)
    del methods
    peaks = {name: measure_peak_mb(args, name, n) for name in names if name != "matmul"}
    flops = 2.0 * args.clients * n * n * args.dim
    return Row(
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


def profile_ours(args: argparse.Namespace, n: int, device: torch.device) -> dict[str, Any]:
    """Where ours' time goes at ``n``: a ``torch.profiler`` op breakdown of one real call.

    The breakdown is the self CPU time per aten op (matmul vs exp vs sum vs the rest), so it follows the library
    whatever its loop looks like.
    """
    local_reps, global_other = make_inputs(n, args.dim, args.clients, args.seed, device)
    ensemble_weights(local_reps, global_other)  # warm-up
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    begin = time.perf_counter()
    with torch.profiler.profile(activities=activities) as prof:
        ensemble_weights(local_reps, global_other)
        _sync(device)
    wall = time.perf_counter() - begin
    ops = sorted(
        ((event.key, event.self_cpu_time_total / 1e6, event.count) for event in prof.key_averages()),
        key=lambda item: -item[1],
    )
    top = [{"op": op, "self_s": seconds, "calls": count} for op, seconds, count in ops[:10]]
    return {"n": n, "wall_s_profiled": wall, "top_ops_self": top}


def sweep_block_sizes(args: argparse.Namespace, device: torch.device) -> list[dict[str, float]]:
    """Ours at each ``--block-sizes`` value (B rows of every client: a ``[K * B, N]`` block), N = ``--sweep-n``."""
    n = args.sweep_n
    local_reps, global_other = make_inputs(n, args.dim, args.clients, args.seed, device)
    methods: dict[str, Callable[[], Any]] = {"matmul": make_method("matmul", local_reps, global_other)}
    for size in args.block_sizes:
        methods[f"ours:{size}"] = functools.partial(ensemble_weights, local_reps, global_other, block_size=size)
    times = time_methods(methods, args.repeats, device)
    return [
        {
            "block_size": float(size),
            "block_mb": args.clients * size * n * 4 / 2**20,
            "ours_s": times[f"ours:{size}"],
            "ours_pct_of_matmul_rate": 100.0 * times["matmul"] / times[f"ours:{size}"],
        }
        for size in args.block_sizes
    ]


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


def check_targets(rows: Sequence[Row]) -> dict[str, bool]:
    largest = max(rows, key=lambda row: row.n)
    return {
        "max_abs_diff_le_1e-5_all_n": all(row.max_abs_diff <= TARGET_MAX_ABS_DIFF for row in rows),
        "memory_ratio_ge_20_at_largest_n": largest.memory_ratio_naive_over_ours >= TARGET_MEMORY_RATIO,
        "time_within_1.2x_of_naive_all_n": all(row.time_ratio_naive_over_ours >= TARGET_TIME_RATIO for row in rows),
        "ge_70pct_of_matmul_rate_all_n": all(row.pct_of_matmul_rate >= 100 * TARGET_MATMUL_FRACTION for row in rows),
    }


def _library_digest() -> str:
    """sha256 of the benchmarked ``creamfl/ensemble.py``, so a result can be tied to the code it measured."""
    with open(ensemble_module.__file__, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


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
        "library_block_elements": _BLOCK_ELEMENTS,
        "library_sha256": _library_digest(),
    }
    print(
        f"torch {meta['torch']} on {args.device}, {meta['threads']} threads (cpu_count {meta['cpu_count']}), "
        f"K={args.clients} d={args.dim} repeats={args.repeats}, load average {meta['load_average_start']}, "
        f"creamfl/ensemble.py sha256 {str(meta['library_sha256'])[:12]}"
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
        profile = profile_ours(args, args.profile, device)
        print(
            f"\nprofile of one call of ours at N={args.profile} "
            f"({profile['wall_s_profiled']:.3f} s under the profiler):"
        )
        for entry in profile["top_ops_self"]:
            print(f"  {entry['op']:<32} {entry['self_s']:>8.3f} s self  {entry['calls']:>6} calls")
        report["profile"] = profile
    if args.block_sizes:
        sweep = sweep_block_sizes(args, device)
        print(f"\nblock-size sweep at N={args.sweep_n}:")
        for entry in sweep:
            print("  " + "  ".join(f"{name}={value:.3f}" for name, value in entry.items()))
        report["block_size_sweep"] = {"n": args.sweep_n, "rows": sweep}
    meta["load_average_end"] = os.getloadavg()
    meta["library_sha256_end"] = _library_digest()
    if meta["library_sha256_end"] != meta["library_sha256"]:
        print("WARNING: creamfl/ensemble.py changed during the run; the results mix two versions")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
