"""A content-addressed store of files named by their sha256 (uploads, global reps, checkpoints).

Writes go to a temp file, are fsynced and renamed into place, so a file under its hash is always
complete. The database row is the truth: a file with no row (a crash between rename and commit)
is an orphan that :meth:`ArtifactStore.collect_garbage` removes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

CHUNK = 1 << 20


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def new_temp(self) -> Path:
        fd, name = tempfile.mkstemp(dir=self.tmp, suffix=".part")
        os.close(fd)
        return Path(name)

    def put_bytes(self, data: bytes) -> str:
        temp = self.new_temp()
        with temp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        sha = hashlib.sha256(data).hexdigest()
        self.adopt(temp, sha)
        return sha

    def adopt(self, temp: Path, sha256: str) -> Path:
        """Move a complete, fsynced temp file in under its hash (content already there: drop the temp)."""
        target = self.path(sha256)
        if target.is_file():
            temp.unlink(missing_ok=True)
            os.utime(target)  # fresh again: the garbage collector spares it until its row commits
            return target
        target.parent.mkdir(exist_ok=True)
        os.replace(temp, target)
        _fsync_dir(target.parent)
        return target

    def collect_garbage(self, referenced: Iterable[str], *, min_age_s: float = 3600.0) -> list[str]:
        """Delete stored files no row references and stale temp files older than ``min_age_s``."""
        keep = set(referenced)
        cutoff = time.time() - min_age_s
        removed = []
        for path in self.root.glob("??/*"):
            if path.name not in keep and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed.append(path.name)
        for path in self.tmp.glob("*.part"):
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
        return removed


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
