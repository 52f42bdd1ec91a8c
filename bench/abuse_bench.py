"""What anonymous clients can make the coordinator hold (issue 11), before and after the fix, side by side.

Two real coordinators (``creamfl-coordinator serve`` on loopback, SQLite in temp dirs) run in the same
run: "before", the code of an older checkout (``--old-tree``, e.g. a git worktree of e59fa43, run by
this interpreter with PYTHONPATH on that tree), and "after", this tree. Against each:

1. bodies: three anonymous 200 MB JSON bodies at once (POST /api/v1/federations, no token,
   Content-Length 200 MB, streamed from a generator); the server's RSS (VmRSS, VmHWM) before, at its
   peak (sampled every 20 ms, and VmHWM) and after; each answer's status and time (from the last
   header byte); the body bytes the client got into the socket before the answer or the close, and
   what the server process read (rchar of /proc/PID/io).
2. idle sockets: N sockets that send a partial request line and never finish it; every 0.5 s for up
   to 20 s, how many the server still holds (a non-blocking recv gives neither EOF nor a reset),
   its open sockets, and whether /healthz answers. "after" runs with header_timeout_s = 2.
3. cap: N + 100 silent sockets ("after" restarted with max_connections = N, header_timeout_s = 30):
   how many were refused with 503, how many the server holds, and /healthz at the cap.

    git -C /work/main worktree add /tmp/abuse-old e59fa43
    .venv/bin/python bench/abuse_bench.py --old-tree /tmp/abuse-old --json bench/results/abuse_bench.json
    git -C /work/main worktree remove --force /tmp/abuse-old
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from service import ADMIN_TOKEN, API

from coordinator_service.launcher import HOST, CoordinatorProcess

MiB = 1 << 20
REPO = Path(__file__).resolve().parent.parent
PARTIAL_REQUEST_LINE = b"GET /healthz HTT"
JSON = {"Content-Type": "application/json"}
BLOCK = 256 * 1024  # the client's send size: its count of body bytes sent is exact to this


@dataclass
class TreeCoordinator(CoordinatorProcess):
    """A coordinator run from ``tree`` (None: this interpreter's own import path, i.e. this tree)."""

    tree: Path | None = None

    def env(self) -> dict[str, str]:
        env = super().env()
        if self.tree is not None:
            # PYTHONSAFEPATH: ``-m`` must not put the working directory (this tree) before PYTHONPATH
            env.update(PYTHONPATH=str(self.tree), PYTHONSAFEPATH="1")
        return env

    def origin(self) -> dict[str, Any]:
        """Where the server's ``coordinator_service`` is imported from, with its env, and its commit."""
        # the package's own directory: a submodule missing there would still import from this tree
        # through the editable install's finder, so find_spec would mislead
        probe = (
            "import os, coordinator_service as m; print(m.__file__); "
            "print(os.path.isfile(os.path.join(os.path.dirname(m.__file__), 'http_server.py')))"
        )
        out = subprocess.run(
            [sys.executable, "-c", probe], env=self.env(), capture_output=True, text=True, check=True
        ).stdout.split()
        tree = self.tree or REPO
        commit = subprocess.run(
            ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        return {"tree": str(tree), "commit": commit, "module": out[0], "has_http_server": out[1] == "True"}


# ---------------------------------------------------------------- the server process (Linux /proc)


def memory_mib(pid: int) -> dict[str, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


def bytes_read(pid: int) -> int:
    """Bytes the process read through read/recv system calls (sockets included)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return int(fields["rchar"])


def open_sockets(pid: int) -> int:
    count = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            count += os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:")
    return count


# ---------------------------------------------------------------- raw HTTP


def readable(raw: socket.socket, timeout_s: float) -> bool:
    poller = select.poll()  # not select(): hundreds of descriptors
    poller.register(raw, select.POLLIN)
    return bool(poller.poll(timeout_s * 1000))


def json_body(size: int) -> Iterator[bytes]:
    """``{"name":"aaa...a"}`` of ``size`` bytes, a block at a time (one filler block, reused)."""
    prefix, suffix = b'{"name":"', b'"}'
    filler = b"a" * BLOCK
    yield prefix
    left = size - len(prefix) - len(suffix)
    while left > 0:
        yield filler[: min(BLOCK, left)]
        left -= BLOCK
    yield suffix


def poll_socket(raw: socket.socket) -> tuple[bool, bytes]:
    """(whether the server closed it: an end of stream or a reset, what it had sent), without waiting."""
    data = b""
    try:
        while piece := raw.recv(65536, socket.MSG_DONTWAIT):
            data += piece
    except BlockingIOError:
        return False, data
    except ConnectionResetError:
        return True, data
    return True, data


@dataclass
class BodyAnswer:
    status: int | None  # None: no answer (reset, closed or timed out first)
    seconds: float  # from the last header byte to the answer (or to giving up)
    body_sent: int  # body bytes the client got into its socket before the answer or the close
    send_error: str | None  # how sending ended early, if it did
    closed: bool  # the server closed the connection after its answer


def post_streamed(port: int, path: str, size: int, timeout_s: float) -> BodyAnswer:
    head = f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    with socket.create_connection((HOST, port)) as raw:
        raw.settimeout(timeout_s)
        raw.sendall(head.encode())
        started = time.monotonic()
        sent, error = 0, None
        for block in json_body(size):
            if readable(raw, 0):
                break  # answered (or closed) before the body was all sent
            view = memoryview(block)
            try:
                while view:
                    count = raw.send(view)
                    sent += count
                    view = view[count:]
            except OSError as exc:
                error = type(exc).__name__
                break
        status = None
        try:
            raw.settimeout(max(0.1, timeout_s - (time.monotonic() - started)))
            data = b""
            while b"\r\n" not in data and (piece := raw.recv(65536)):
                data += piece
            if data.startswith(b"HTTP/"):
                status = int(data.split()[1])
        except (TimeoutError, ConnectionResetError) as exc:
            error = error or type(exc).__name__
        seconds = time.monotonic() - started
        closed = False
        with contextlib.suppress(TimeoutError):
            raw.settimeout(1.0)
            try:
                while raw.recv(65536):
                    pass
                closed = True
            except ConnectionResetError:
                closed = True
        return BodyAnswer(status, seconds, sent, error, closed)


def healthz(url: str) -> tuple[str, float]:
    started = time.monotonic()
    try:
        status = str(httpx.get(f"{url}/healthz", timeout=2.0).status_code)
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    return status, time.monotonic() - started


# ---------------------------------------------------------------- the three measurements


def bodies(coordinator: CoordinatorProcess, count: int, size: int, timeout_s: float) -> dict[str, Any]:
    pid = coordinator.pid
    before, read_before = memory_mib(pid), bytes_read(pid)
    answers: list[BodyAnswer | None] = [None] * count
    barrier = threading.Barrier(count + 1)
    done = threading.Event()
    peak = [before["VmRSS"]]

    def send(position: int) -> None:
        barrier.wait()
        answers[position] = post_streamed(coordinator.port, f"{API}/federations", size, timeout_s)

    def sample() -> None:
        while not done.is_set():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                peak[0] = max(peak[0], memory_mib(pid)["VmRSS"])
            time.sleep(0.02)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(count)]
    sampler = threading.Thread(target=sample)
    sampler.start()
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.monotonic()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    at_end = memory_mib(pid)
    time.sleep(1.0)
    done.set()
    sampler.join()
    settled = memory_mib(pid)
    return {
        "bodies": count,
        "body_bytes": size,
        "answers": [vars(answer) for answer in answers if answer is not None],
        "wall_s": wall,
        "rss_before_mib": before["VmRSS"],
        "hwm_before_mib": before["VmHWM"],
        "rss_peak_sampled_mib": peak[0],
        "hwm_after_mib": at_end["VmHWM"],
        "rss_at_last_answer_mib": at_end["VmRSS"],
        "rss_1s_later_mib": settled["VmRSS"],
        "server_read_mib": (bytes_read(pid) - read_before) / MiB,
    }


def idle_sockets(coordinator: CoordinatorProcess, count: int, watch_s: float, every_s: float) -> dict[str, Any]:
    pid = coordinator.pid
    baseline = open_sockets(pid)
    sockets: list[socket.socket] = []
    samples: list[dict[str, Any]] = []
    try:
        for _ in range(count):
            raw = socket.create_connection((HOST, coordinator.port))
            raw.sendall(PARTIAL_REQUEST_LINE)
            sockets.append(raw)
        opened = time.monotonic()
        shed_s = None
        for tick in range(int(watch_s / every_s) + 1):
            time.sleep(max(0.0, opened + tick * every_s - time.monotonic()))
            held = sum(not poll_socket(raw)[0] for raw in sockets)
            status, latency = healthz(coordinator.url)
            samples.append(
                {
                    "t_s": round(time.monotonic() - opened, 3),
                    "held": held,
                    "server_sockets": open_sockets(pid) - baseline,
                    "healthz": status,
                    "healthz_s": latency,
                }
            )
            if held == 0:
                shed_s = samples[-1]["t_s"]
                break
    finally:
        for raw in sockets:
            raw.close()
    first_shed = next((s["t_s"] for s in samples if s["held"] < count), None)
    return {
        "sockets": count,
        "sent": PARTIAL_REQUEST_LINE.decode(),
        "held_first_sample": samples[0]["held"],
        "held_most": max(s["held"] for s in samples),
        "held_last_sample": samples[-1]["held"],
        "first_shed_s": first_shed,
        "all_shed_s": shed_s,  # None: not within watch_s
        "watched_s": samples[-1]["t_s"],
        "server_sockets_most": max(s["server_sockets"] for s in samples),
        "healthz": sorted({s["healthz"] for s in samples}),
        "healthz_max_s": max(s["healthz_s"] for s in samples),
        "samples": samples,
    }


def capped(coordinator: CoordinatorProcess, count: int, settle_s: float = 3.0) -> dict[str, Any]:
    pid = coordinator.pid
    baseline = open_sockets(pid)
    sockets: list[socket.socket] = []
    ended: dict[int, bytes] = {}
    try:
        for _ in range(count):
            sockets.append(socket.create_connection((HOST, coordinator.port)))
        deadline, stable_since, last = time.monotonic() + settle_s, time.monotonic(), -1
        while time.monotonic() < deadline and time.monotonic() - stable_since < 0.5:
            for index, raw in enumerate(sockets):
                if index not in ended:
                    closed, data = poll_socket(raw)
                    if closed:
                        ended[index] = data
            if len(ended) != last:
                last, stable_since = len(ended), time.monotonic()
            time.sleep(0.05)
        server_sockets = open_sockets(pid) - baseline
        status, latency = healthz(coordinator.url)
        held = [raw for index, raw in enumerate(sockets) if index not in ended]
        at_the_cap = None
        if held:  # a request on a connection the server holds
            held[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            if readable(held[0], 5.0):
                with contextlib.suppress(OSError):
                    at_the_cap = held[0].recv(65536).split(b"\r\n", 1)[0].decode()
    finally:
        for raw in sockets:
            raw.close()
    return {
        "sockets": count,
        "refused": len(ended),
        "refused_503": sum(data.startswith(b"HTTP/1.1 503") for data in ended.values()),
        "held": count - len(ended),
        "server_sockets": server_sockets,
        "healthz_new_connection": status,
        "healthz_s": latency,
        "request_on_a_held_connection": at_the_cap,
    }


# ---------------------------------------------------------------- report


def table(title: str, rows: list[tuple[str, str, str]]) -> None:
    width = max(len(label) for label, _, _ in rows)
    print(f"\n{title}")
    print(f"  {'':<{width}}  {'before':>24}  {'after':>24}")
    for label, before, after in rows:
        print(f"  {label:<{width}}  {before:>24}  {after:>24}")


def report(results: dict[str, Any]) -> None:
    b, a = results["before"], results["after"]
    for name, run in (("before", b), ("after", a)):
        origin = run["origin"]
        print(f"{name}: {origin['commit']} {origin['module']} (has http_server.py: {origin['has_http_server']})")

    def each(run: dict[str, Any], key: str, form: str) -> str:
        return ",".join(form.format(answer[key]) if answer[key] is not None else "-" for answer in run["answers"])

    mib = "{:.0f}"
    bb, ab = b["bodies"], a["bodies"]
    table(
        f"{bb['bodies']} anonymous {bb['body_bytes'] / 1e6:.0f} MB JSON bodies at once (POST {API}/federations)",
        [
            ("status", each(bb, "status", "{}"), each(ab, "status", "{}")),
            ("answer after s", each(bb, "seconds", "{:.2f}"), each(ab, "seconds", "{:.2f}")),
            (
                "body sent by client MiB",
                ",".join(f"{x['body_sent'] / MiB:.1f}" for x in bb["answers"]),
                ",".join(f"{x['body_sent'] / MiB:.1f}" for x in ab["answers"]),
            ),
            ("send ended by", each(bb, "send_error", "{}"), each(ab, "send_error", "{}")),
            ("closed after answer", each(bb, "closed", "{}"), each(ab, "closed", "{}")),
            ("server read MiB (rchar)", f"{bb['server_read_mib']:.1f}", f"{ab['server_read_mib']:.1f}"),
            ("VmRSS before MiB", mib.format(bb["rss_before_mib"]), mib.format(ab["rss_before_mib"])),
            ("VmHWM before MiB", mib.format(bb["hwm_before_mib"]), mib.format(ab["hwm_before_mib"])),
            (
                "VmRSS peak (20 ms samples)",
                mib.format(bb["rss_peak_sampled_mib"]),
                mib.format(ab["rss_peak_sampled_mib"]),
            ),
            ("VmHWM after MiB", mib.format(bb["hwm_after_mib"]), mib.format(ab["hwm_after_mib"])),
            (
                "VmRSS at last answer MiB",
                mib.format(bb["rss_at_last_answer_mib"]),
                mib.format(ab["rss_at_last_answer_mib"]),
            ),
            ("VmRSS 1 s later MiB", mib.format(bb["rss_1s_later_mib"]), mib.format(ab["rss_1s_later_mib"])),
            ("wall s", f"{bb['wall_s']:.2f}", f"{ab['wall_s']:.2f}"),
        ],
    )

    def shed(run: dict[str, Any]) -> str:
        idle = run["idle"]
        if idle["all_shed_s"] is None:
            return f"not within {idle['watched_s']:.1f} s"
        return f"{idle['all_shed_s']:.1f} s"

    bi, ai = b["idle"], a["idle"]
    table(
        f"{bi['sockets']} sockets sending {bi['sent']!r} and nothing more "
        f"(after: header_timeout_s = {a['settings']['header_timeout_s']})",
        [
            ("held at first sample", str(bi["held_first_sample"]), str(ai["held_first_sample"])),
            ("held, most", str(bi["held_most"]), str(ai["held_most"])),
            ("held at last sample", str(bi["held_last_sample"]), str(ai["held_last_sample"])),
            ("first shed after", str(bi["first_shed_s"]), str(ai["first_shed_s"])),
            ("all shed after", shed(b), shed(a)),
            ("server sockets, most", str(bi["server_sockets_most"]), str(ai["server_sockets_most"])),
            ("/healthz answers", ",".join(bi["healthz"]), ",".join(ai["healthz"])),
            ("/healthz slowest s", f"{bi['healthz_max_s']:.3f}", f"{ai['healthz_max_s']:.3f}"),
        ],
    )
    if "cap" in b:
        bc, ac = b["cap"], a["cap"]
        table(
            f"{bc['sockets']} silent sockets (after: max_connections = {a['cap_settings']['max_connections']})",
            [
                ("refused", str(bc["refused"]), str(ac["refused"])),
                ("refused with 503", str(bc["refused_503"]), str(ac["refused_503"])),
                ("held", str(bc["held"]), str(ac["held"])),
                ("server sockets", str(bc["server_sockets"]), str(ac["server_sockets"])),
                ("/healthz, new connection", bc["healthz_new_connection"], ac["healthz_new_connection"]),
                (
                    "request on a held one",
                    str(bc["request_on_a_held_connection"]),
                    str(ac["request_on_a_held_connection"]),
                ),
            ],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old-tree", type=Path, required=True, help="a checkout of the code before the fix")
    parser.add_argument("--bodies", type=int, default=3)
    parser.add_argument("--body-mb", type=int, default=200, help="each body, in MB (10^6 bytes)")
    parser.add_argument("--sockets", type=int, default=300, help="N: idle sockets; N + 100 against a cap of N")
    parser.add_argument("--header-timeout", type=float, default=2.0, help="header_timeout_s of the 'after' server")
    parser.add_argument("--watch-s", type=float, default=20.0)
    parser.add_argument("--no-cap", action="store_true", help="skip the connection-cap measurement")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    old_tree = args.old_tree.resolve()
    if not (old_tree / "coordinator_service" / "cli.py").is_file():
        parser.error(f"{old_tree} is not a checkout of this project")

    load_start = os.getloadavg()
    started = time.monotonic()
    settings: dict[str, dict[str, object]] = {
        "before": {"admin_token": ADMIN_TOKEN},
        "after": {"admin_token": ADMIN_TOKEN, "header_timeout_s": args.header_timeout},
    }
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        coordinators: dict[str, TreeCoordinator] = {}
        for name, tree in (("before", old_tree), ("after", None)):
            coordinator = TreeCoordinator(
                Path(tmp) / name / "data",
                settings=dict(settings[name]),
                inherit_creamfl=False,
                log_path=Path(tmp) / name / "coordinator.log",
                tree=tree,
            )
            coordinators[name] = stack.enter_context(coordinator)
            results[name] = {"origin": coordinator.origin(), "settings": dict(settings[name])}
            results[name]["settings"].pop("admin_token")
        size = args.body_mb * 1_000_000
        for name, coordinator in coordinators.items():
            print(f"{name}: bodies ...", flush=True)
            results[name]["bodies"] = bodies(coordinator, args.bodies, size, timeout_s=120.0)
        for name, coordinator in coordinators.items():
            print(f"{name}: idle sockets ...", flush=True)
            results[name]["idle"] = idle_sockets(coordinator, args.sockets, args.watch_s, 0.5)
        if not args.no_cap:
            cap = {"max_connections": args.sockets, "header_timeout_s": 30.0}
            coordinators["after"].restart(**cap)
            results["after"]["cap_settings"] = cap
            for name, coordinator in coordinators.items():
                print(f"{name}: cap ...", flush=True)
                results[name]["cap"] = capped(coordinator, args.sockets + 100)
        for name, coordinator in coordinators.items():
            results[name]["log_tail"] = coordinator.log_tail(20)
    elapsed = time.monotonic() - started
    load_end = os.getloadavg()
    report(results)
    print(f"\nload average {load_start} at the start, {load_end} at the end; {elapsed:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        document = {**results, "seconds": elapsed, "load_average_start": load_start, "load_average": load_end}
        args.json.write_text(json.dumps(document, indent=2))


if __name__ == "__main__":
    main()
