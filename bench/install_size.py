"""Installed size per role: a fresh virtual environment with torch pinned first, then the built wheel
with one role's extras, measured on disk. ``--before REV`` measures a git revision's wheel beside the
working tree's, in the same run.

    .venv/bin/python bench/install_size.py --before 67925a6 --json bench/results/install_size.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROLES = {"agent": "agent", "coordinator": "coordinator"}
MIB = 2**20


@dataclass(frozen=True)
class Measured:
    source: str  # "working tree" or a git revision
    role: str
    total_mib: float
    torch_mib: float
    beyond_torch_mib: float
    has_transformers: bool


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a git revision to measure beside the working tree")
    parser.add_argument("--torch", default="torch==2.13.0")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        sources = [("working tree", ROOT)]
        if args.before:
            sources.insert(0, (args.before, _checkout(args.before, work / "before")))
        for label, source in sources:
            wheel = _wheel(source, work / f"dist-{len(results)}")
            for role, extras in ROLES.items():
                results.append(_measure(label, role, wheel, extras, args.torch, work / f"venv-{len(results)}"))
                print(_row(results[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0


def _checkout(revision: str, target: Path) -> Path:
    target.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def _wheel(source: Path, dist: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(source)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("creamfl-*.whl")
    return wheel


def _measure(label: str, role: str, wheel: Path, extras: str, torch_spec: str, venv: Path) -> Measured:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    for requirement in (torch_spec, f"{wheel}[{extras}]"):
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", requirement], check=True, capture_output=True)
    (site,) = venv.glob("lib/python*/site-packages")
    torch_bytes = sum(_size(site / name) for name in ("torch", "torchgen", "functorch"))
    total = _size(venv)
    return Measured(
        source=label,
        role=role,
        total_mib=round(total / MIB, 1),
        torch_mib=round(torch_bytes / MIB, 1),
        beyond_torch_mib=round((total - torch_bytes) / MIB, 1),
        has_transformers=(site / "transformers").is_dir(),
    )


def _size(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _row(m: Measured) -> str:
    return (
        f"{m.source:>14}  {m.role:<11}  total {m.total_mib:8.1f} MiB  torch {m.torch_mib:7.1f}  "
        f"beyond torch {m.beyond_torch_mib:7.1f}  transformers={'yes' if m.has_transformers else 'no'}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
