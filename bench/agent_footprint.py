"""What the client agent costs a gateway, beside a Flower client doing the same work (issue 4).

For each client model (image-cnn-s|m, text-gru-s|m, dual-s|m), in one run, side by side:

- the agent: a real ``creamfl-coordinator serve`` subprocess (:class:`CoordinatorProcess`) runs a
  small federation (public set 200, d = 128, 4 rounds, 1 client per round, a small server model)
  with one ``creamfl-agent run`` subprocess on the built-in dataset
  (``builtin:0:0/1?samples=400``: the same 400 private scenes for every model); it enrolls, builds
  the public set, long-polls until the federation is started, works every round and exits when
  the federation is done.
- Flower: a legacy Flower server (``flwr.server.start_server`` + ``FedAvg``, numpy/gRPC only) and
  one long-lived Flower client process (``flwr.client.start_client`` with a ``NumPyClient``) that
  does the same local work per round: the same creamfl model, optimiser and
  ``creamfl.training.train_client_round`` on the same private data (its sha256 is checked against
  the agent's), then ``encode_public`` of the same public set; global representations arrive as
  the fit parameters (float16 ``[200, 128]`` per modality) and its own go back the same way.

Per process: idle RSS (VmRSS once set up and waiting for the first round, /proc/<pid>/status),
peak RSS over the whole run (``ru_maxrss`` of ``wait4`` on the child, cross-checked with polled
VmHWM), and per round: the agent's wall time from the task it received to its last upload
(download of the global representations, training, encoding, writing its state dir, upload; from
its log lines), and the Flower client's ``fit`` wall time (training and encoding; Flower's own
(de)serialisation and gRPC transfer are outside it); ``compute`` (train + encode) is the same work
on both sides; ``CPU s`` is the process's CPU time in the same window (/proc/<pid>/stat sampled
every 20 ms), which the other users of a shared machine disturb far less than wall time. Round 1
is shown alone (both build the model and optimiser then, and torch imports more on first use);
the others are medians of rounds 2..N. The JSON has every round. Agent and Flower alternate
model by model (who goes first too), so both see the same (shared, noisy) machine.

Also measured: the RSS of an idle Flower SuperNode (``flower-supernode`` and the
``flower-superexec`` it starts, registered with a ``flower-superlink``; no ClientApp yet), and of
interpreters that only import torch / the agent / Flower's client, to tell what the idle figures
are made of.

Installed size: site-packages of a venv with ``torch==2.13.0`` (the CPU wheel) and
``pip install -e '.[agent]'`` (no coordinator extra), against one with torch, ``flwr`` and
``pip install -e .`` (the creamfl core both clients train with). Editable installs put only a link
in site-packages, so the project's own source is reported on its own line.

Setup (done by the bench itself, once, cached under ``--cache``, default /tmp/creamfl-footprint)::

    python3 -m venv /tmp/creamfl-footprint/agent-venv
    /tmp/creamfl-footprint/agent-venv/bin/python -m pip install torch==2.13.0
    /tmp/creamfl-footprint/agent-venv/bin/python -m pip install -e '.[agent]'
    python3 -m venv /tmp/creamfl-footprint/flwr-venv
    /tmp/creamfl-footprint/flwr-venv/bin/python -m pip install torch==2.13.0
    /tmp/creamfl-footprint/flwr-venv/bin/python -m pip install flwr
    /tmp/creamfl-footprint/flwr-venv/bin/python -m pip install -e .

Nothing goes into .venv or pyproject.toml. The agent runs from the agent-venv (proof that it needs
no coordinator extra), or from this interpreter with ``--skip-size``. Flower's processes get
``FLWR_TELEMETRY_ENABLED=0`` and ``FLWR_DISABLE_UPDATE_CHECK=1``: nothing leaves the machine.
``start_server``/``start_client`` are deprecated since flwr 1.13 in favour of SuperLink/SuperNode,
where a SuperNode runs the ClientApp in further processes (``flower-superexec``,
``flwr-clientapp``): the one-process client measured here is the smallest Flower client there is.

    .venv/bin/python bench/agent_footprint.py --json bench/results/agent_footprint.json
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from datetime import datetime
from pathlib import Path
from typing import Any

# Only the standard library up here: the Flower roles run this file in the flwr venv.

REPO = Path(__file__).resolve().parent.parent
TORCH_SPEC = "torch==2.13.0"
MODELS = {
    "image-cnn-s": "image",
    "image-cnn-m": "image",
    "text-gru-s": "text",
    "text-gru-m": "text",
    "dual-s": "multimodal",
    "dual-m": "multimodal",
}
FLWR_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
IMAGE_SIZE = 32
MIB = 1024 * 1024
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SIZES_SCRIPT = """
import importlib.metadata as md, json, os, sysconfig
site = sysconfig.get_paths()["purelib"]
dists = {}
for dist in md.distributions():
    size = 0
    for f in dist.files or []:
        try:
            size += os.lstat(f.locate()).st_size
        except OSError:
            pass
    dists[dist.metadata["Name"].lower()] = {"version": dist.version, "bytes": size}
total = 0
for root, _, files in os.walk(site):
    for name in files:
        try:
            total += os.lstat(os.path.join(root, name)).st_size
        except OSError:
            pass
print(json.dumps({"site_packages": site, "bytes": total, "dists": dists}))
"""


# --- shared by both sides: the private data and its digest ------------------------------------


def builtin_task(spec: str, modality: str, tokenizer: Any, image_size: int) -> tuple[Any, int]:
    """``builtin:SEED:I/K[?samples=N&alpha=A]`` as client_agent.data builds it, from creamfl alone
    (the flwr venv has no agent extras); the bench checks that the two give the same bytes."""
    from creamfl.data.builtin import BuiltinSpec, builtin_split
    from creamfl.data.partition import dirichlet_partition
    from creamfl.data.scenes import CLASS_NAMES
    from creamfl.training import TaskData

    kind, _, rest = spec.partition(":")
    where, _, query = rest.partition("?")
    if kind != "builtin":
        raise ValueError(f"only builtin data here, got {spec!r}")
    options = dict(urllib.parse.parse_qsl(query))
    seed_text, share = where.split(":", 1)
    index_text, clients_text = share.split("/", 1)
    seed, index, clients = int(seed_text), int(index_text), int(clients_text)
    builtin = BuiltinSpec(
        seed=seed, private_size=int(options.get("samples", 400)) * clients, image_size=max(image_size, 24)
    )
    private = builtin_split(builtin, "private")
    alpha = float(options.get("alpha", 0.5))
    scenes = private.subset(dirichlet_partition(private.labels, clients, alpha=alpha, seed=seed, min_size=8)[index])
    if modality == "image":
        return TaskData(scenes.images, scenes.labels), len(CLASS_NAMES)
    if modality == "text":
        texts = scenes.labelled_texts(seed + index)
        return TaskData(tokenizer.encode(texts.texts), texts.labels), len(CLASS_NAMES)
    pairs = scenes.pairs()
    return TaskData(pairs.images, tokenizer.encode(pairs.captions), pairs.caption_image), 0


def task_digest(task: Any) -> str:
    digest = hashlib.sha256()
    for tensor in (task.inputs, task.targets, task.caption_image):
        if tensor is None:
            digest.update(b"none")
            continue
        tensor = tensor.contiguous()
        digest.update(f"{tuple(tensor.shape)} {tensor.dtype}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


# --- the Flower side (these two run in the flwr venv) -------------------------------------------


def flower_server(args: argparse.Namespace) -> None:
    """FedAvg over the representations; round 1 waits for the ``go`` file (idle RSS is read first)."""
    import numpy as np
    from flwr.common import ndarrays_to_parameters
    from flwr.server import ServerConfig, start_server
    from flwr.server.strategy import FedAvg

    workdir = Path(args.workdir)
    rng = np.random.default_rng(0)

    def unit_rows() -> Any:
        rows = rng.standard_normal((args.public_size, args.embed_dim))
        return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float16)

    timeline: list[dict[str, Any]] = []

    class GatedFedAvg(FedAvg):
        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            if server_round == 1:
                client_manager.wait_for(1, timeout=600)
                (workdir / "ready").write_text("a client is connected")
                deadline = time.monotonic() + 600
                while not (workdir / "go").exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
            timeline.append({"round": server_round, "sent": time.time()})
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            timeline[-1].update(received=time.time(), results=len(results), failures=len(failures))
            return super().aggregate_fit(server_round, results, failures)

    strategy = GatedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=1,
        min_evaluate_clients=1,
        min_available_clients=1,
        initial_parameters=ndarrays_to_parameters([unit_rows(), unit_rows()]),  # image, text globals
    )
    start_server(
        server_address=f"127.0.0.1:{args.port}", config=ServerConfig(num_rounds=args.rounds), strategy=strategy
    )
    (workdir / "server-timeline.json").write_text(json.dumps(timeline))


def flower_client(args: argparse.Namespace) -> None:
    """One long-lived NumPyClient: data and public set at start, the model and optimiser at the first
    ``fit`` (as the agent builds them at its first task), then trains per ``fit``."""
    import torch

    torch.set_num_threads(args.threads)
    import numpy as np
    from flwr.client import NumPyClient, start_client

    from creamfl.data.builtin import BuiltinSpec, builtin_split
    from creamfl.data.manifest import scenes_manifest
    from creamfl.models import build_client_model
    from creamfl.rounds import client_tokenizer
    from creamfl.training import ClientTrainingConfig, PublicInputs, encode_public, train_client_round

    workdir = Path(args.workdir)
    spec = json.loads(args.training)
    tokenizer = client_tokenizer()
    task, num_classes = builtin_task(args.data, args.modality, tokenizer, IMAGE_SIZE)
    scenes = builtin_split(
        BuiltinSpec(seed=args.public_seed, public_size=args.public_size, image_size=IMAGE_SIZE), "public"
    )
    public = PublicInputs(images=scenes.images, token_ids=tokenizer.encode([c[0] for c in scenes.captions]))
    train_config = ClientTrainingConfig(
        local_epochs=spec["local_epochs"],
        batch_size=spec["batch_size"],
        gamma=spec["gamma"],
        tau=spec["tau"],
        inter=spec["inter"],
        intra=spec["intra"],
    )
    device = torch.device("cpu")
    rounds_log = workdir / "client-rounds.jsonl"

    class CreamFLClient(NumPyClient):
        rounds = 0
        model: Any = None
        optimizer: Any = None

        def get_parameters(self, config: Any) -> Any:
            return []  # never asked: the server starts from its own initial parameters

        def fit(self, parameters: Any, config: Any) -> Any:
            started, started_at = time.perf_counter(), time.time()
            self.rounds += 1
            if self.model is None:
                torch.manual_seed(0)
                self.model = build_client_model(
                    args.model,
                    embed_dim=args.embed_dim,
                    vocab_size=tokenizer.vocab_size,
                    num_classes=max(num_classes, 1),
                )
                self.optimizer = torch.optim.Adam(self.model.parameters(), lr=spec["lr"])
            globals_: dict[Any, Any] = {
                m: torch.from_numpy(p.astype(np.float32)) for m, p in zip(("image", "text"), parameters, strict=True)
            }
            stats = train_client_round(
                self.model,
                self.optimizer,
                task,
                public,
                globals_,
                train_config,
                generator=torch.Generator().manual_seed(self.rounds),
                device=device,
            )
            encode_started = time.perf_counter()
            reps = encode_public(self.model, public, batch_size=256, device=device)
            encode_seconds = time.perf_counter() - encode_started
            out = [reps.get(m, globals_[m]).numpy().astype(np.float16) for m in ("image", "text")]
            record = {
                "round": self.rounds,
                "started_at": started_at,
                "ended_at": time.time(),
                "fit_s": time.perf_counter() - started,
                "train_s": stats.seconds,
                "encode_s": encode_seconds,
                "steps": stats.steps,
            }
            with rounds_log.open("a") as log:
                log.write(json.dumps(record) + "\n")
            return out, len(task), {"task_loss": stats.task_loss}

    setup = {
        "data_sha256": task_digest(task),
        "samples": len(task),
        "public_sha256": scenes_manifest(scenes)["sha256"],
    }
    (workdir / "client-setup.json").write_text(json.dumps(setup))
    start_client(server_address=f"127.0.0.1:{args.port}", client=CreamFLClient().to_client(), insecure=True)


# --- measuring a child process ------------------------------------------------------------------


def proc_status_kib(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, ... in KiB from /proc/<pid>/status ({} once the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key.startswith("Vm") and rest.strip().endswith("kB"):
            values[key] = int(rest.split()[0])
    return values


def wait_measured(
    process: subprocess.Popen[bytes], timeout: float, cpu: list[tuple[float, float]] | None = None
) -> tuple[int, int]:
    """Reap the child with wait4: (exit code, peak RSS KiB = max of its ru_maxrss and polled VmHWM).

    Meanwhile, every 20 ms, appends (wall clock, CPU seconds used so far) of the child to ``cpu``."""
    deadline = time.monotonic() + timeout
    polled = 0
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, max(usage.ru_maxrss, polled)
        polled = max(polled, proc_status_kib(process.pid).get("VmHWM", 0))
        if cpu is not None:
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
                cpu.append((time.time(), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS))
        if time.monotonic() > deadline:
            process.kill()
            raise TimeoutError(f"process {process.pid} ({process.args!r}) did not finish in {timeout:.0f} s")
        time.sleep(0.02)


def cpu_between(samples: list[tuple[float, float]], start: float, end: float) -> float | None:
    """CPU seconds the child used between two wall-clock times (linear between the 20 ms samples)."""

    def at(moment: float) -> float | None:
        index = bisect.bisect_right(samples, (moment, float("inf")))
        if index == 0 or index == len(samples):
            return None
        (t0, c0), (t1, c1) = samples[index - 1], samples[index]
        return c0 + (c1 - c0) * (moment - t0) / (t1 - t0) if t1 > t0 else c0

    first, last = at(start), at(end)
    return None if first is None or last is None else last - first


def kill_if_running(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.returncode is None and process.poll() is None:
        process.kill()
        process.wait(timeout=30)


def wait_until(condition: Any, what: str, timeout: float, *alive: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for process in alive:
            if process.poll() is not None:
                raise RuntimeError(f"{what}: process {process.pid} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.1)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CREAMFL_", "FLWR_"))}
    return {**env, **(extra or {})}


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else "(no log)"


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def client_figures(
    rounds: list[dict[str, Any]],
    cpu: list[tuple[float, float]],
    idle: dict[str, int],
    idle_children: int,
    peak: int,
    *,
    window: tuple[str, str],
    wall: str,
) -> dict[str, Any]:
    """What both sides report of their client: memory idle and at peak, round 1 alone and the medians of
    the others. ``window`` names a round's start and end times (replaced by the CPU time between them),
    ``wall`` its wall time."""
    for entry in rounds:
        entry["cpu_s"] = cpu_between(cpu, entry.pop(window[0]), entry.pop(window[1]))
    return {
        "idle_rss_kib": idle.get("VmRSS"),
        "setup_peak_kib": idle.get("VmHWM"),
        "child_processes_at_idle": idle_children,
        "peak_rss_kib": peak,
        "rounds": rounds,
        "first_round_s": rounds[0][wall],
        "round_s": median([r[wall] for r in rounds[1:]]),
        "train_encode_s": median([r["train_s"] + r["encode_s"] for r in rounds[1:]]),
        "cpu_s": median([r["cpu_s"] for r in rounds[1:] if r["cpu_s"] is not None]),
    }


# --- the agent side ------------------------------------------------------------------------------

_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ \S+ (.*)$")
_TASK = re.compile(r"round=(\d+) attempt=\d+ task rows=")
_UPLOADED = re.compile(r"round=(\d+) upload modality=\w+ outcome=")
_STEP_DONE = re.compile(r"(train|encode|download) round=(\d+) .*done seconds=([\d.]+)")


def agent_rounds(log: str) -> list[dict[str, Any]]:
    """Per round from the agent's plain log lines: task received -> last upload, and its steps."""
    rounds: dict[int, dict[str, float]] = {}
    for line in log.splitlines():
        match = _LOG_LINE.match(line)
        if match is None:
            continue
        at = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        message = match[2]
        if task := _TASK.match(message):
            rounds.setdefault(int(task[1]), {"task_at": at, "download_s": 0.0})
        elif uploaded := _UPLOADED.match(message):
            rounds[int(uploaded[1])]["uploaded_at"] = at
        elif step := _STEP_DONE.match(message):
            entry = rounds[int(step[2])]
            key = f"{step[1]}_s"
            entry[key] = entry.get(key, 0.0) + float(step[3])
    result = []
    for number, entry in sorted(rounds.items()):
        result.append(
            {
                "round": number,
                "task_at": entry["task_at"],
                "uploaded_at": entry["uploaded_at"],
                "round_s": entry["uploaded_at"] - entry["task_at"],
                "train_s": entry["train_s"],
                # The agent's train step covers encoding too: the round engine's local round does both.
                "encode_s": entry.get("encode_s", 0.0),
                "download_s": entry["download_s"],
            }
        )
    return result


def federation_config(model: str, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "name": f"footprint-{model}",
        "embed_dim": args.embed_dim,
        "public_set": {"seed": args.public_seed, "size": args.public_size, "test_size": 100},
        "rounds": args.rounds,
        "clients_per_round": 1,
        "min_clients": 1,
        "round_deadline_s": 600,
        # A small server model: its pass runs between rounds, while the client waits; not measured.
        "server": {"image_widths": [16, 32], "batch_size": 64},
    }


def data_spec(args: argparse.Namespace) -> str:
    return f"builtin:{args.data_seed}:0/1?samples={args.samples}"


def run_agent(model: str, args: argparse.Namespace, coordinator: Any, agent_bin: Path, work: Path) -> dict[str, Any]:
    from service import ADMIN, API

    from client_agent.command import AgentCommand

    modality = MODELS[model]
    with coordinator.http() as http:
        created = http.post(f"{API}/federations", json=federation_config(model, args), headers=ADMIN)
        created.raise_for_status()
        federation = created.json()
    state, log = work / f"agent-{model}", work / f"agent-{model}.log"
    command = AgentCommand(
        coordinator=coordinator.url,
        federation=federation["id"],
        join_token=federation["join_token"],
        modality=modality,
        model=model,
        data=data_spec(args),
        name=f"footprint-{model}",
        state_dir=state,
        device="cpu",
        threads=args.threads,
        poll_wait_s=5,
        backoff_max_s=0.5,
        progress="plain",
    ).argv(str(agent_bin))
    process: subprocess.Popen[bytes] | None = None
    cpu: list[tuple[float, float]] = []
    try:
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, env=child_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        # Set up (enrolled, public set built) and long-polling a federation that is not started yet.
        wait_until(lambda: "public set done" in log.read_text(errors="replace"), "agent setup", 300, process)
        time.sleep(args.settle)
        idle = proc_status_kib(process.pid)
        idle_children = len(descendants(process.pid))
        with coordinator.http() as http:
            http.post(f"{API}/federations/{federation['id']}/start", headers=ADMIN).raise_for_status()
        code, peak = wait_measured(process, timeout=args.rounds * 300, cpu=cpu)
    finally:
        kill_if_running(process)
    if code != 0:
        raise RuntimeError(f"creamfl-agent for {model} exited with {code}:\n{tail(log)}")
    with coordinator.http() as http:
        summary = http.get(f"{API}/federations/{federation['id']}", headers=ADMIN).json()
    if summary["state"] != "completed" or summary["rounds_completed"] != args.rounds:
        raise RuntimeError(f"federation for {model}: {summary['state']}, {summary['rounds_completed']} rounds")
    rounds = agent_rounds(log.read_text(errors="replace"))
    if len(rounds) != args.rounds:
        raise RuntimeError(f"agent log for {model} shows {len(rounds)} rounds:\n{tail(log)}")
    public_files = list((state / "public").glob("public-*.safetensors"))
    return {
        **client_figures(rounds, cpu, idle, idle_children, peak, window=("task_at", "uploaded_at"), wall="round_s"),
        "public_sha256": public_files[0].stem.removeprefix("public-") if public_files else None,
        "training": federation["config"]["client"],
    }


def run_flower(
    model: str, args: argparse.Namespace, training: dict[str, Any], flwr_python: Path, work: Path
) -> dict[str, Any]:
    workdir = work / f"flower-{model}"
    workdir.mkdir()
    port = free_port()
    common = ["--port", str(port), "--workdir", str(workdir), "--rounds", str(args.rounds)]
    common += ["--public-size", str(args.public_size), "--public-seed", str(args.public_seed)]
    common += ["--embed-dim", str(args.embed_dim)]
    env = child_env(FLWR_ENV)
    server = client = None
    cpu: list[tuple[float, float]] = []
    try:
        with (workdir / "server.log").open("wb") as out:
            server = subprocess.Popen(
                [str(flwr_python), __file__, "--role", "flower-server", *common],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(lambda: listening(port), "Flower server start", 120, server)
        client_args = ["--model", model, "--modality", MODELS[model], "--data", data_spec(args)]
        client_args += ["--threads", str(args.threads), "--training", json.dumps(training)]
        with (workdir / "client.log").open("wb") as out:
            client = subprocess.Popen(
                [str(flwr_python), __file__, "--role", "flower-client", *common, *client_args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        ready = [workdir / "ready", workdir / "client-setup.json"]
        wait_until(lambda: all(p.exists() for p in ready), "Flower client setup", 300, server, client)
        time.sleep(args.settle)
        idle = proc_status_kib(client.pid)
        idle_children = len(descendants(client.pid))
        (workdir / "go").touch()
        code, peak = wait_measured(client, timeout=args.rounds * 300, cpu=cpu)
        server.wait(timeout=120)
    finally:
        kill_if_running(client)
        kill_if_running(server)
    if code != 0 or server.returncode != 0:
        raise RuntimeError(
            f"Flower for {model}: client {code}, server {server.returncode}:\n"
            f"{tail(workdir / 'client.log')}\n{tail(workdir / 'server.log')}"
        )
    rounds_file = workdir / "client-rounds.jsonl"
    rounds = [json.loads(line) for line in rounds_file.read_text().splitlines()] if rounds_file.is_file() else []
    timeline = json.loads((workdir / "server-timeline.json").read_text())
    if len(rounds) != args.rounds or any(entry.get("failures") for entry in timeline):
        raise RuntimeError(
            f"Flower for {model}: {len(rounds)} rounds, timeline {timeline}:\n{tail(workdir / 'client.log')}"
        )
    setup = json.loads((workdir / "client-setup.json").read_text())
    return {
        **client_figures(rounds, cpu, idle, idle_children, peak, window=("started_at", "ended_at"), wall="fit_s"),
        "server_round_s": [e["received"] - e["sent"] for e in timeline],
        **setup,
    }


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc's parent links)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def process_name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    named = [Path(a.decode()).name for a in argv[:2] if a]
    return named[-1] if named else "?"


def supernode_idle(flwr_python: Path, work: Path, settle: float) -> dict[str, Any]:
    """Flower's recommended client at rest: ``flower-supernode`` (and the ``flower-superexec`` it
    starts) registered with a ``flower-superlink``. No ClientApp runs: a SuperNode starts one, a
    further process that imports torch, for each run."""
    bin_dir, workdir = flwr_python.parent, work / "supernode"
    workdir.mkdir()
    env = child_env({**FLWR_ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"})
    link_port, node_port = free_port(), free_port()
    roots: list[subprocess.Popen[bytes]] = []
    below: set[int] = set()
    try:
        for name, command in (
            ("superlink", ["flower-superlink", "--insecure", "--port", str(link_port)]),
            (
                "supernode",
                ["flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{link_port}", "--port", str(node_port)],
            ),
        ):
            with (workdir / f"{name}.log").open("wb") as out:
                command[0] = str(bin_dir / command[0])
                roots.append(
                    subprocess.Popen(
                        command, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
                    )
                )
            if name == "superlink":
                wait_until(lambda: listening(link_port), "flower-superlink start", 120, *roots)
        supernode = roots[1]

        def registered() -> bool:
            log = (workdir / "superlink.log").read_text(errors="replace")
            return "Activated node_id" in log and bool(descendants(supernode.pid))

        wait_until(registered, "flower-supernode start", 120, *roots)
        time.sleep(settle + 2)
        for root in roots:
            below.update(descendants(root.pid))
        processes = {
            process_name(pid): proc_status_kib(pid).get("VmRSS", 0)
            for pid in [supernode.pid, *descendants(supernode.pid)]
        }
        return {"processes_rss_kib": processes, "total_rss_kib": sum(processes.values())}
    finally:
        for root in reversed(roots):
            if root.poll() is None:
                root.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    root.wait(timeout=20)
            kill_if_running(root)
        for pid in below:  # a superexec outlives its parent for a while
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def agent_data_digests(args: argparse.Namespace) -> dict[str, str]:
    """The agent's own reading of the data spec (client_agent.data), per modality."""
    from client_agent.data import parse_data_spec
    from creamfl.rounds import client_tokenizer

    tokenizer = client_tokenizer()
    spec = parse_data_spec(data_spec(args))
    return {
        modality: task_digest(spec.load(modality, tokenizer, image_size=IMAGE_SIZE).task)  # type: ignore[arg-type]
        for modality in sorted(set(MODELS.values()))
    }


# --- venvs and installed size ----------------------------------------------------------------------


def ensure_venv(path: Path, steps: list[list[str]]) -> Path:
    """A venv at ``path`` with ``steps`` pip-installed in order; cached (rebuilt if the steps change)."""
    python, marker = path / "bin" / "python", path / ".footprint-steps.json"
    if marker.is_file() and json.loads(marker.read_text()) == steps and python.exists():
        return python
    shutil.rmtree(path, ignore_errors=True)
    base = getattr(sys, "_base_executable", None) or "python3"
    log = path.with_name(f"{path.name}.pip.log")
    print(f"creating {path} (once; cached for later runs; pip's output in {log})", flush=True)
    subprocess.run([base, "-m", "venv", str(path)], check=True)
    with log.open("w") as out:
        for step in steps:
            print(f"  pip install {' '.join(step)}", flush=True)
            done = subprocess.run([str(python), "-m", "pip", "install", *step], stdout=out, stderr=subprocess.STDOUT)
            if done.returncode != 0:
                raise RuntimeError(f"pip install {' '.join(step)} failed in {path}:\n{tail(log)}")
    marker.write_text(json.dumps(steps))
    return python


def venv_sizes(python: Path) -> dict[str, Any]:
    answer = subprocess.run([str(python), "-c", SIZES_SCRIPT], check=True, capture_output=True, text=True)
    sizes: dict[str, Any] = json.loads(answer.stdout)
    torch_bytes = sizes["dists"].get("torch", {}).get("bytes", 0)
    sizes["torch_bytes"] = torch_bytes
    sizes["without_torch_bytes"] = sizes["bytes"] - torch_bytes
    return sizes


def source_bytes(*packages: str) -> int:
    total = 0
    for package in packages:
        for path in (REPO / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                total += path.stat().st_size
    return total


def size_report(agent: dict[str, Any], flower: dict[str, Any]) -> dict[str, Any]:
    only_agent = sorted(set(agent["dists"]) - set(flower["dists"]))
    only_flower = sorted(set(flower["dists"]) - set(agent["dists"]))
    return {
        "agent_venv": agent,
        "flower_venv": flower,
        "only_in_agent_venv": {name: agent["dists"][name] for name in only_agent},
        "only_in_flower_venv": {name: flower["dists"][name] for name in only_flower},
        "project_source_bytes": {
            "creamfl+shared_schemas+client_agent": source_bytes("creamfl", "shared_schemas", "client_agent"),
            "coordinator_service": source_bytes("coordinator_service"),
        },
    }


# --- the bench ---------------------------------------------------------------------------------------


def mib(kib_or_bytes: float | None, *, kib: bool = True) -> str:
    if kib_or_bytes is None:
        return "-"
    return f"{kib_or_bytes / (1024 if kib else MIB):.0f}"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_report(report: dict[str, Any]) -> None:
    p = report["parameters"]
    print(
        f"\nclient footprint: {p['rounds']} rounds, public set {p['public_size']}, d={p['embed_dim']}, "
        f"data {p['data']}, {p['threads']} torch thread(s); torch {report['versions']['torch']}, "
        f"flwr {report['versions'].get('flwr', '?')}; load average before {report['load_before']}, "
        f"after {report['load_after']}"
    )
    print(
        "RSS MiB (idle: set up, waiting for round 1; peak: whole run). Seconds: round 1 wall, then medians over "
        "rounds 2..N of wall (agent: task -> uploaded; Flower: fit), train+encode, and the process's CPU time"
    )
    labels = ("idle", "peak", "round 1", "s/round", "compute", "CPU s")
    width = 9 * len(labels)
    print(f"{'':13}|{'creamfl-agent':^{width}} |{'Flower client (NumPyClient)':^{width}}")
    print(f"{'model':13}|" + "".join(f"{label:>9}" for label in labels) + " |" + "".join(f"{x:>9}" for x in labels))
    for model, row in report["models"].items():
        cells = []
        for side in ("agent", "flower"):
            r = row[side]
            cells.append(
                f"{mib(r['idle_rss_kib']):>9}{mib(r['peak_rss_kib']):>9}{seconds(r['first_round_s']):>9}"
                f"{seconds(r['round_s']):>9}{seconds(r['train_encode_s']):>9}{seconds(r['cpu_s']):>9}"
            )
        print(f"{model:13}|{cells[0]} |{cells[1]}")
    supernode = report.get("flower_supernode_idle") or {}
    if "error" in supernode:
        print(f"idle Flower SuperNode: not measured: {supernode['error']}")
    elif supernode:
        parts = " + ".join(f"{name} {mib(kib)}" for name, kib in supernode["processes_rss_kib"].items())
        print(
            f"idle Flower SuperNode (the deployment flwr recommends; no ClientApp yet, each run starts one that "
            f"imports torch): {parts} = {mib(supernode['total_rss_kib'])} MiB RSS"
        )
    baselines = report["baselines_peak_rss_kib"]
    print(
        "peak RSS MiB of an interpreter that only imports: " + ", ".join(f"{k} {mib(v)}" for k, v in baselines.items())
    )
    sizes = report.get("sizes")
    if sizes:
        print(f"\ninstalled size, site-packages MiB {'total':>8}{'torch':>8}{'without torch':>15}")
        for label, key in (
            ("agent: torch + creamfl[agent]", "agent_venv"),
            ("flower: torch + creamfl + flwr", "flower_venv"),
        ):
            v = sizes[key]
            print(
                f"{label:33}{mib(v['bytes'], kib=False):>8}{mib(v['torch_bytes'], kib=False):>8}"
                f"{mib(v['without_torch_bytes'], kib=False):>15}"
            )
        for key in ("only_in_agent_venv", "only_in_flower_venv"):
            items = sorted(sizes[key].items(), key=lambda kv: -kv[1]["bytes"])
            total = sum(v["bytes"] for _, v in items)
            listed = ", ".join(f"{name} {v['bytes'] / MIB:.1f}" for name, v in items[:8])
            print(f"{key.replace('_', ' ')}: {total / MIB:.1f} MiB ({listed}{', ...' if len(items) > 8 else ''})")
        shared = sorted(
            (
                (v["bytes"], name)
                for name, v in sizes["agent_venv"]["dists"].items()
                if name in sizes["flower_venv"]["dists"]
            ),
            reverse=True,
        )
        print("largest in both: " + ", ".join(f"{name} {size / MIB:.0f}" for size, name in shared[:8]) + " (MiB)")
        src = sizes["project_source_bytes"]
        print(
            "project source (editable installs link it): " + ", ".join(f"{k} {v / MIB:.1f} MiB" for k, v in src.items())
        )


def bench(args: argparse.Namespace) -> None:
    import torch

    cache = args.cache
    cache.mkdir(parents=True, exist_ok=True)
    flwr_python = ensure_venv(cache / "flwr-venv", [[TORCH_SPEC], [args.flwr_spec], ["-e", str(REPO)]])
    sizes = None
    agent_python = Path(sys.executable)
    agent_bin = agent_python.parent / "creamfl-agent"
    if not args.skip_size:
        agent_python = ensure_venv(cache / "agent-venv", [[TORCH_SPEC], ["-e", f"{REPO}[agent]"]])
        agent_bin = agent_python.parent / "creamfl-agent"
        sizes = size_report(venv_sizes(agent_python), venv_sizes(flwr_python))
    flwr_version = subprocess.run(
        [str(flwr_python), "-c", "import importlib.metadata as m; print(m.version('flwr'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    report: dict[str, Any] = {
        "parameters": {
            "rounds": args.rounds,
            "public_size": args.public_size,
            "embed_dim": args.embed_dim,
            "data": data_spec(args),
            "threads": args.threads,
            "agent": str(agent_bin),
            "flower_client": "flwr.client.start_client + NumPyClient (grpc-bidi), server flwr.server.start_server",
        },
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "flwr": flwr_version},
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "models": {},
    }
    report["baselines_peak_rss_kib"] = {
        "agent python: import torch": import_peak(agent_python, "import torch"),
        "agent python: import client_agent.agent": import_peak(agent_python, "import client_agent.agent"),
        "flwr python: import torch, creamfl.training; from flwr.client import start_client": import_peak(
            flwr_python, "import torch, creamfl.training; from flwr.client import start_client"
        ),
    }
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="agent-footprint-"))
    try:
        measure_models(args, report, work, agent_bin, flwr_python, started)
        try:
            report["flower_supernode_idle"] = supernode_idle(flwr_python, work, args.settle)
        except (RuntimeError, TimeoutError, OSError) as exc:
            report["flower_supernode_idle"] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        if args.keep:
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    report["wall_s"] = time.monotonic() - started
    report["sizes"] = sizes
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def measure_models(
    args: argparse.Namespace, report: dict[str, Any], work: Path, agent_bin: Path, flwr_python: Path, started: float
) -> None:
    """Agent and Flower client for each model, alternating which goes first."""
    from service import ADMIN_TOKEN

    from coordinator_service.launcher import CoordinatorProcess

    digests = agent_data_digests(args)
    settings = {"admin_token": ADMIN_TOKEN, "worker_poll_s": 0.05, "watch_interval_s": 0.05, "threads": 1}
    coordinator = CoordinatorProcess(
        work / "coordinator", settings=settings, inherit_creamfl=False, log_path=work / "coordinator.log"
    )
    with coordinator:
        for index, model in enumerate(args.models):
            print(f"{model}: ", end="", flush=True)
            results: dict[str, Any] = {}
            order = ("agent", "flower") if index % 2 == 0 else ("flower", "agent")
            for side in order:
                if side == "agent":
                    results["agent"] = run_agent(model, args, coordinator, agent_bin, work)
                else:
                    training = results["agent"]["training"] if "agent" in results else training_defaults()
                    results["flower"] = run_flower(model, args, training, flwr_python, work)
                print(f"{side} done ", end="", flush=True)
            agent, flower = results["agent"], results["flower"]
            if flower["data_sha256"] != digests[MODELS[model]]:
                raise RuntimeError(f"{model}: the Flower client's private data differs from the agent's")
            if flower["public_sha256"] != agent["public_sha256"]:
                raise RuntimeError(f"{model}: the Flower client's public set differs from the agent's")
            if agent["training"] != training_defaults():
                raise RuntimeError(f"{model}: the federation's client training {agent['training']} changed")
            report["models"][model] = {"agent": agent, "flower": flower}
            print(f"({time.monotonic() - started:.0f} s)", flush=True)


def import_peak(python: Path, code: str) -> int:
    """Peak RSS (KiB) of a fresh interpreter that only runs ``code``."""
    process = subprocess.Popen([str(python), "-c", code], env=child_env(FLWR_ENV), stdin=subprocess.DEVNULL)
    code_, peak = wait_measured(process, timeout=120)
    if code_ != 0:
        raise RuntimeError(f"{python} -c {code!r} exited with {code_}")
    return peak


def training_defaults() -> dict[str, Any]:
    from shared_schemas.federation import ClientTrainingSpec

    return ClientTrainingSpec().model_dump()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--rounds", type=int, default=4, help="s/round: median of rounds 2..N")
    parser.add_argument("--public-size", type=int, default=200)
    parser.add_argument("--public-seed", type=int, default=0)
    parser.add_argument("--embed-dim", type=int, default=128)
    parser.add_argument("--samples", type=int, default=400, help="private scenes of the one client")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of each client")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds idle before reading idle RSS")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/creamfl-footprint"), help="where the venvs live")
    parser.add_argument("--flwr-spec", default="flwr", help="what to pip install for Flower")
    parser.add_argument("--skip-size", action="store_true", help="no agent venv, no sizes; agent from this venv")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the logs and state dirs (the path is printed)")
    # Internal: the Flower processes (run with the flwr venv's python).
    parser.add_argument("--role", choices=["bench", "flower-server", "flower-client"], default="bench")
    parser.add_argument("--port", type=int)
    parser.add_argument("--workdir")
    parser.add_argument("--model")
    parser.add_argument("--modality")
    parser.add_argument("--data")
    parser.add_argument("--training")
    args = parser.parse_args()
    if args.role == "flower-server":
        flower_server(args)
    elif args.role == "flower-client":
        flower_client(args)
    else:
        bench(args)


if __name__ == "__main__":
    main()
