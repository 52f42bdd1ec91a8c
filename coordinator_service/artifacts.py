"""A content-addressed store of artifacts named by their sha256 (uploads, global reps, checkpoints).

Callers see this interface only, never where the bytes live: :class:`LocalArtifactStore` keeps
files in a directory, and another backend (object storage) must be a drop-in. A write is staged
and hashed first and committed under its hash only once complete, so a stored artifact is always
whole. The database row is the truth: an artifact with no row (a crash between the commit and the
row's transaction) is an orphan that :meth:`ArtifactStore.collect_garbage` removes.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal, Self

CHUNK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ArtifactMissing(KeyError):
    """No artifact is stored under this sha256."""

    def __init__(self, sha256: str) -> None:
        super().__init__(sha256)
        self.sha256 = sha256

    def __str__(self) -> str:  # KeyError's own would be the quoted key alone
        return f"artifact {self.sha256} is not in the store"


@dataclass(frozen=True)
class StoredArtifact:
    sha256: str
    size: int
    modified: float  # epoch seconds of its last commit: the garbage collector's notion of age


class StagedArtifact(abc.ABC):
    """A write in progress, hashed as it goes; nothing is stored until :meth:`commit`.

    Writing, then finished (durable, readable back), then committed or discarded. As a context
    manager it is discarded on exit unless committed."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._size = 0
        self._state: Literal["writing", "finished", "committed", "discarded"] = "writing"

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    @property
    def size(self) -> int:
        return self._size

    def write(self, chunk: bytes) -> None:
        self._expect("writing")
        self._write(chunk)
        self._digest.update(chunk)
        self._size += len(chunk)

    def finish(self) -> None:
        """Make the written bytes durable; no writes after this."""
        self._expect("writing")
        self._finish()
        self._state = "finished"

    def open(self) -> BinaryIO:
        """The staged bytes to read back, e.g. to validate them before committing."""
        self._expect("finished")
        return self._open()

    def commit(self) -> None:
        """Store the bytes under their sha256 (finishing first if need be); content already stored
        is kept and counts as freshly written."""
        if self._state == "writing":
            self.finish()
        self._expect("finished")
        self._commit(self.sha256)
        self._state = "committed"

    def discard(self) -> None:
        """Drop the staged bytes; harmless when already committed or discarded."""
        if self._state in ("writing", "finished"):
            self._state = "discarded"
            self._discard()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.discard()

    def _expect(self, state: str) -> None:
        if self._state != state:
            raise RuntimeError(f"the staged artifact is {self._state}, not {state}")

    @abc.abstractmethod
    def _write(self, chunk: bytes) -> None: ...

    @abc.abstractmethod
    def _finish(self) -> None: ...

    @abc.abstractmethod
    def _open(self) -> BinaryIO: ...

    @abc.abstractmethod
    def _commit(self, sha256: str) -> None: ...

    @abc.abstractmethod
    def _discard(self) -> None: ...


class ArtifactStore(abc.ABC):
    """Artifacts by sha256. A backend implements the abstract methods; writing whole bytes and the
    garbage collection are built on them here, once."""

    @abc.abstractmethod
    def stage(self) -> StagedArtifact:
        """Begin a write; see :class:`StagedArtifact`."""

    @abc.abstractmethod
    def exists(self, sha256: str) -> bool: ...

    @abc.abstractmethod
    def size(self, sha256: str) -> int:
        """Bytes stored under ``sha256``; :class:`ArtifactMissing` if none."""

    @abc.abstractmethod
    def read(self, sha256: str) -> bytes:
        """The whole artifact (for the worker's modest payloads); :class:`ArtifactMissing` if none."""

    @abc.abstractmethod
    def open_range(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes ``start`` to ``end`` inclusive (HTTP's convention; None: to the last byte), cut off at
        the artifact's end, in chunks of :data:`CHUNK`. :class:`ArtifactMissing` is raised at the call,
        before any chunk."""

    @abc.abstractmethod
    def delete(self, sha256: str) -> None:
        """Remove the artifact; harmless when it is not there."""

    @abc.abstractmethod
    def list_stored(self) -> Iterator[StoredArtifact]:
        """Every stored artifact, in no particular order (staged writes are not stored yet)."""

    @abc.abstractmethod
    def _drop_staged_before(self, cutoff: float) -> None:
        """Remove staged writes idle since before ``cutoff`` (epoch seconds): left by a crash or a hang-up."""

    def put_bytes(self, data: bytes) -> str:
        with self.stage() as staged:
            staged.write(data)
            staged.commit()
        return staged.sha256

    def collect_garbage(self, referenced: Iterable[str], *, min_age_s: float = 3600.0) -> list[str]:
        """Delete artifacts no row references and stale staged writes, all older than ``min_age_s``.

        The age spares a commit whose row is still on its way. Returns the deleted sha256s."""
        keep = set(referenced)
        cutoff = time.time() - min_age_s
        removed = []
        for artifact in list(self.list_stored()):  # listed first: no deleting under a listing in progress
            if artifact.sha256 not in keep and artifact.modified < cutoff:
                self.delete(artifact.sha256)
                removed.append(artifact.sha256)
        self._drop_staged_before(cutoff)
        return removed


class LocalArtifactStore(ArtifactStore):
    """Files at ``root/<first two hex digits>/<sha256>``; staged writes are temp files in ``root/tmp``.

    Durable: a staged file is fsynced, renamed into place and its directory fsynced."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._staging = root / "tmp"
        self._staging.mkdir(parents=True, exist_ok=True)

    def stage(self) -> StagedArtifact:
        path, handle = self._open_staging_file()
        return _LocalStagedArtifact(path, handle, self._adopt)

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).is_file()

    def size(self, sha256: str) -> int:
        try:
            return self._path(sha256).stat().st_size
        except FileNotFoundError:
            raise ArtifactMissing(sha256) from None

    def read(self, sha256: str) -> bytes:
        try:
            return self._path(sha256).read_bytes()
        except FileNotFoundError:
            raise ArtifactMissing(sha256) from None

    def open_range(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        if start < 0 or (end is not None and end < start):
            raise ValueError(f"not a byte range: {start}-{end}")
        try:
            handle = self._path(sha256).open("rb")
        except FileNotFoundError:
            raise ArtifactMissing(sha256) from None
        stop = os.fstat(handle.fileno()).st_size if end is None else end + 1
        return _read_chunks(handle, start, stop)

    def delete(self, sha256: str) -> None:
        self._path(sha256).unlink(missing_ok=True)

    def list_stored(self) -> Iterator[StoredArtifact]:
        for path in self.root.glob("??/*"):
            if not _SHA256.match(path.name) or path.parent.name != path.name[:2]:
                continue  # not ours: never listed, so never collected
            try:
                stat = path.stat()
            except FileNotFoundError:  # deleted since the listing
                continue
            yield StoredArtifact(sha256=path.name, size=stat.st_size, modified=stat.st_mtime)

    def staging_files(self) -> list[str]:
        """Names of the temp files of staged writes, in progress or left behind (local backend only:
        for tests that nothing was left behind)."""
        return sorted(path.name for path in self._staging.iterdir())

    def _open_staging_file(self) -> tuple[Path, BinaryIO]:
        """A new temp file in the staging directory, open for writing."""
        fd, name = tempfile.mkstemp(dir=self._staging, suffix=".part")
        return Path(name), os.fdopen(fd, "wb")

    def _drop_staged_before(self, cutoff: float) -> None:
        for path in self._staging.glob("*.part"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
            except FileNotFoundError:  # committed or discarded meanwhile
                continue

    def _path(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):  # a name from elsewhere must never reach outside the root
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def _adopt(self, temp: Path, sha256: str) -> None:
        """Move a complete, fsynced temp file in under its hash (content already there: drop the temp)."""
        target = self._path(sha256)
        if target.is_file():
            temp.unlink(missing_ok=True)
            os.utime(target)  # fresh again: the garbage collector spares it until its row commits
            return
        target.parent.mkdir(exist_ok=True)
        os.replace(temp, target)
        _fsync_dir(target.parent)


class _LocalStagedArtifact(StagedArtifact):
    def __init__(self, path: Path, handle: BinaryIO, adopt: Callable[[Path, str], None]) -> None:
        super().__init__()
        self._path = path
        self._handle = handle
        self._adopt = adopt

    def _write(self, chunk: bytes) -> None:
        self._handle.write(chunk)

    def _finish(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()

    def _open(self) -> BinaryIO:
        return self._path.open("rb")

    def _commit(self, sha256: str) -> None:
        self._adopt(self._path, sha256)

    def _discard(self) -> None:
        # Closing flushes what is still buffered, which fails again on a full disk: the bytes are
        # dropped anyway, and the temp file must go now, not at the next orphan collection.
        with contextlib.suppress(OSError):
            self._handle.close()
        self._path.unlink(missing_ok=True)


def _read_chunks(handle: BinaryIO, start: int, stop: int) -> Iterator[bytes]:
    with handle:
        handle.seek(start)
        while start < stop and (chunk := handle.read(min(CHUNK, stop - start))):
            start += len(chunk)
            yield chunk


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
