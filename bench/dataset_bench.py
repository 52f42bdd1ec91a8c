"""Register a dataset of generated 64x64 JPEGs and let one agent download it (issue 10).

For each size N (items, two captions each), in one run against one real coordinator (uvicorn on
loopback, SQLite, its in-process worker):

- N scenes (:func:`creamfl.data.scenes.generate_scenes`, 64x64) are written once into a temp dir as
  JPEG files and a captions JSONL, a chunk at a time (all 50k scenes at once would hold ~600 MB);
- registration: ``POST /datasets`` with ``captions:FILE.jsonl?images=DIR``, timed until the dataset
  is ``ready`` (every image read and decoded once, shards of at most 1000 items written): items/s;
- a federation on it (never started) and one enrolled client;
- disk baseline, in a child process: the dataset's shard files read straight from the coordinator's
  artifact dir and hashed (sha256, 1 MiB blocks, as the agent checks a download);
- download, in another child process, with the agent's own code (``CoordinatorClient`` over httpx,
  ``PublicFiles``, ``obtain_public_set``) into a fresh cache dir: every shard streamed to a ``.part``
  file, fsynced, hashed and renamed; then 256 random items (images decoded, first captions
  tokenized) read from the lazy public set to show it is usable. The child reports its RSS right
  after its imports (baseline) and its peak (VmHWM): the peak must not grow with N. Its
  ``ru_maxrss`` is in the JSON too, but Linux keeps the high-water mark of the memory a process had
  before ``execve``, here this parent's (``subprocess`` spawns with vfork), so it is not the agent's.

Both reads find the shards in the page cache (the registration has just written them), so "disk"
is the hashing read alone; the download also writes, fsyncs and re-reads every byte.

    .venv/bin/python bench/dataset_bench.py --items 5000 50000 --json bench/results/dataset_bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from service import ADMIN, ADMIN_TOKEN, API, create_federation, enroll

# The children measure their own memory, so the heavy imports (torch, the agent) happen in the
# functions that need them, never at module level.

IMAGE_SIZE = 64
CHUNK = 1000  # scenes generated and encoded at a time
EVALUATION_ITEMS = 100
MIB = 2**20
STALL_S = 120.0


def write_source(root: Path, items: int, seed: int) -> str:
    """``root/captions.jsonl`` and ``root/images/*/*.jpg`` of ``items`` scenes; returns the source spec."""
    from creamfl.data.samples import jpeg_bytes
    from creamfl.data.scenes import generate_scenes

    images = root / "images"
    images.mkdir(parents=True)
    started = time.perf_counter()
    with (root / "captions.jsonl").open("w", encoding="utf-8") as captions:
        for first in range(0, items, CHUNK):
            scenes = generate_scenes(min(CHUNK, items - first), seed=seed + first // CHUNK, image_size=IMAGE_SIZE)
            folder = images / f"{first // CHUNK:03d}"  # 1000 files per folder
            folder.mkdir()
            for offset in range(len(scenes)):
                name = f"{folder.name}/{first + offset:06d}.jpg"
                (images / name).write_bytes(jpeg_bytes(scenes.images[offset]))
                captions.write(json.dumps({"image": name, "captions": list(scenes.captions[offset])}) + "\n")
            done = first + len(scenes)
            if done % 10_000 == 0 or done == items:
                print(f"  generated {done}/{items} items ({time.perf_counter() - started:.0f} s)", flush=True)
    return f"captions:{root / 'captions.jsonl'}?images={images}"


def register(http: httpx.Client, name: str, source: str) -> tuple[dict[str, Any], float]:
    """Register ``source`` and wait until it is ready; returns the dataset and the seconds it took."""
    started = time.perf_counter()
    response = http.post(f"{API}/datasets", json={"name": name, "source": source}, headers=ADMIN)
    response.raise_for_status()
    dataset_id = response.json()["id"]
    shown = progressed = started
    items = 0
    while True:
        dataset: dict[str, Any] = http.get(f"{API}/datasets/{dataset_id}", headers=ADMIN).raise_for_status().json()
        now = time.perf_counter()
        if dataset["state"] == "ready":
            return dataset, now - started
        if dataset["state"] == "failed":
            raise RuntimeError(f"registering {name} failed: {dataset['failure_reason']}")
        if dataset["items"] != items:
            items, progressed = dataset["items"], now
        elif now - progressed > STALL_S:  # a shard takes about a second: the worker is not working
            raise RuntimeError(f"registering {name}: no progress in {STALL_S:.0f} s (at {items} items)")
        if now - shown >= 15:
            shown = now
            print(f"  registering {name}: {dataset['items']} items, {dataset['bytes'] / MIB:.0f} MiB", flush=True)
        time.sleep(0.2)


def run_child(role: str, request: dict[str, Any]) -> dict[str, Any]:
    """This script as ``--child ROLE``: the request as JSON on stdin, its answer as JSON on stdout."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", role],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the {role} child failed ({done.returncode}):\n{done.stderr}")
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def status_kib(field: str) -> int:
    """A ``kB`` line of /proc/self/status, e.g. VmRSS (now) or VmHWM (the peak so far)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)


def disk_child(request: dict[str, Any]) -> dict[str, Any]:
    from client_agent.coordinator_client import sha256_file

    paths = [Path(p) for p in request["paths"]]
    started = time.perf_counter()
    for path in paths:
        if sha256_file(path) != path.name:
            raise RuntimeError(f"{path} does not match its name")
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "bytes": sum(p.stat().st_size for p in paths)}


def download_child(request: dict[str, Any]) -> dict[str, Any]:
    import logging

    import torch

    from client_agent.coordinator_client import CoordinatorClient
    from client_agent.progress import Reporter
    from client_agent.public_files import PublicFiles
    from client_agent.public_set import federation_tokenizer, obtain_public_set
    from client_agent.refusals import Refusals
    from client_agent.settings import AgentSettings
    from client_agent.stopping import Stopper

    baseline_kib = status_kib("VmRSS")
    cache = Path(request["cache"])
    settings = AgentSettings(
        coordinator=request["url"],
        federation=request["federation"],
        modality="image",
        data="unused",  # no private data: only the public set is fetched
        state_dir=cache.parent,
    )
    stopper = Stopper()
    with httpx.Client(base_url=settings.coordinator, timeout=settings.request_timeout_s) as http:
        client = CoordinatorClient(http, settings.federation, token=request["token"], stop=stopper.event)
        reporter = Reporter("plain", logger=logging.getLogger("bench.agent"))
        files = PublicFiles(client, Refusals(settings), cache, reporter, stopper)
        manifest = client.public_set()
        started = time.perf_counter()
        tokenizer = federation_tokenizer(manifest.tokenizer, files)
        tokenizer_s = time.perf_counter() - started
        started = time.perf_counter()
        public = obtain_public_set(manifest, files, tokenizer)  # downloads every shard, hash-checked
        download_s = time.perf_counter() - started
    started = time.perf_counter()
    rows = torch.randperm(len(public), generator=torch.Generator().manual_seed(0))[: request["touch"]]
    images, token_ids = public.images[rows], public.token_ids[rows]
    touch_s = time.perf_counter() - started
    if images.shape != (len(rows), 3, IMAGE_SIZE, IMAGE_SIZE) or token_ids.shape[0] != len(rows):
        raise RuntimeError(f"unexpected batch: images {tuple(images.shape)}, token ids {tuple(token_ids.shape)}")
    return {
        "items": manifest.size,
        "shards": len(manifest.shards),
        "bytes": sum(shard.size for shard in manifest.shards),
        "tokenizer_s": tokenizer_s,
        "download_s": download_s,
        "touch_s": touch_s,
        "touched": len(rows),
        "baseline_rss_kib": baseline_kib,
        "peak_rss_kib": status_kib("VmHWM"),
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,  # at least the parent's peak
        "final_rss_kib": status_kib("VmRSS"),
    }


def measure(http: httpx.Client, tmp: Path, url: str, items: int, evaluation_id: str, touch: int) -> dict[str, Any]:
    print(f"{items} items:", flush=True)
    source = write_source(tmp / "sources" / f"n{items}", items, seed=items)
    dataset, register_s = register(http, f"scenes-{items}", source)
    print(f"  registered in {register_s:.1f} s; disk read, then download", flush=True)
    federation = create_federation(
        http,
        {
            "name": f"dataset-bench-{items}",
            "public_set": {"dataset": dataset["id"], "image_size": IMAGE_SIZE},
            "evaluation_set": {"dataset": evaluation_id},
            "tokenizer": "wordpiece-minilm",
            "embed_dim": 16,
            "rounds": 1,
            "server": {"image_widths": [8], "batch_size": 64},
        },
    )
    token = enroll(http, federation, "bench", "image")
    # LocalArtifactStore's documented layout: root/<first two hex digits>/<sha256>.
    artifacts = tmp / "data" / "artifacts"
    paths = [str(artifacts / s["sha256"][:2] / s["sha256"]) for s in dataset["shards"]]
    disk = run_child("disk", {"paths": paths})
    cache = tmp / f"agent-{items}" / "public"
    request = {"url": url, "federation": federation["id"], "token": token, "cache": str(cache), "touch": touch}
    agent = run_child("download", request)
    if agent["bytes"] != disk["bytes"] or agent["items"] != items:
        raise RuntimeError(f"the agent saw {agent['items']} items / {agent['bytes']} B, not {items} / {disk['bytes']}")
    megabytes = disk["bytes"] / 1e6
    return {
        "items": items,
        "shards": len(dataset["shards"]),
        "shard_mb": megabytes,
        "register_s": register_s,
        "register_items_s": items / register_s,
        "download_s": agent["download_s"],
        "download_mb_s": megabytes / agent["download_s"],
        "disk_s": disk["seconds"],
        "disk_mb_s": megabytes / disk["seconds"],
        "download_over_disk": disk["seconds"] / agent["download_s"],
        "tokenizer_s": agent["tokenizer_s"],
        "touch_s": agent["touch_s"],
        "touched": agent["touched"],
        "agent_baseline_rss_mib": agent["baseline_rss_kib"] / 1024,
        "agent_peak_rss_mib": agent["peak_rss_kib"] / 1024,
        "agent_ru_maxrss_mib": agent["ru_maxrss_kib"] / 1024,
        "agent_final_rss_mib": agent["final_rss_kib"] / 1024,
        "load_average": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="+", default=[5000, 50000])
    parser.add_argument("--touch", type=int, default=256, help="random items the agent reads after the download")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=["disk", "download"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child = disk_child if args.child == "disk" else download_child
        print(json.dumps(child(json.loads(sys.stdin.read()))))
        return

    from coordinator_service.launcher import CoordinatorProcess

    rows = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        evaluation_source = write_source(tmp / "sources" / "evaluation", EVALUATION_ITEMS, seed=1)
        settings: dict[str, object] = {"admin_token": ADMIN_TOKEN, "dataset_roots": str(tmp / "sources")}
        with (
            CoordinatorProcess(tmp / "data", settings=settings) as service,
            httpx.Client(base_url=service.url, timeout=60) as http,
        ):
            evaluation, _ = register(http, "evaluation", evaluation_source)
            rows = [measure(http, tmp, service.url, n, evaluation["id"], args.touch) for n in args.items]
    load = os.getloadavg()
    print(f"{IMAGE_SIZE}x{IMAGE_SIZE} JPEGs, 2 captions each; agent touched {args.touch} random items; load {load}")
    print(
        f"{'items':>6} {'shards':>6} {'MB':>6} {'reg s':>6} {'items/s':>7} {'dl s':>6} {'dl MB/s':>7} "
        f"{'disk MB/s':>9} {'ratio':>5} {'peak MiB':>8} {'base MiB':>8}"
    )
    for row in rows:
        print(
            f"{row['items']:>6} {row['shards']:>6} {row['shard_mb']:>6.1f} {row['register_s']:>6.1f} "
            f"{row['register_items_s']:>7.0f} {row['download_s']:>6.2f} {row['download_mb_s']:>7.1f} "
            f"{row['disk_mb_s']:>9.1f} {row['download_over_disk']:>5.2f} {row['agent_peak_rss_mib']:>8.1f} "
            f"{row['agent_baseline_rss_mib']:>8.1f}"
        )
    smallest, largest = min(rows, key=lambda r: r["items"]), max(rows, key=lambda r: r["items"])
    growth = largest["agent_peak_rss_mib"] - smallest["agent_peak_rss_mib"]
    print(f"agent peak RSS, {largest['items']} items against {smallest['items']}: {growth:+.1f} MiB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result = {"rows": rows, "peak_rss_growth_mib": growth, "touch": args.touch, "load_average": load}
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
