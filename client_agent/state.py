"""The agent's state dir: its identity, its model between rounds, and the round in progress.

Layout (the dir is 0700, every file 0600, every write atomic: temp file, fsync, rename):

- ``identity.json``: coordinator URL, federation id, client id and client token. Written once, right
  after enrolling; a restarted agent resumes as this client and never enrolls again.
- ``state.json``: the commit record. ``model`` names the model+optimizer file of the last trained
  round (``model-r<round>.safetensors``, :mod:`creamfl.checkpoint`) with what it was built as;
  ``round`` is the round in progress: its payloads in ``outbox/``, what was uploaded and reported.
  Files the record does not name are leftovers of an interrupted step and are removed.
- ``globals/``: downloaded global representations by sha256 (the ETag), ``.part`` while incomplete.
- ``public/``: the public set: the built-in one generated once and cached (safetensors), or a
  dataset's shards (``<sha256>.shard``), and the federation's tokenizer (``<sha256>.json``), each
  downloaded once (``.part`` while incomplete) and hash-checked on every load
  (:mod:`client_agent.public_files`).
- ``lock``: held (flock) while an agent runs, so two agents never share one state dir.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from client_agent.errors import ConfigError

IDENTITY = "identity.json"
STATE = "state.json"


@dataclass(frozen=True)
class Identity:
    coordinator: str
    federation_id: str
    client_id: str
    token: str
    name: str
    modalities: list[str]
    model: str


@dataclass
class ModelRecord:
    spec: str
    embed_dim: int
    vocab_size: int
    num_classes: int
    file: str
    rounds_trained: int = 0
    last_round: int = 0

    def built_as(self) -> tuple[str, int, int, int]:
        return (self.spec, self.embed_dim, self.vocab_size, self.num_classes)


@dataclass
class RoundRecord:
    """A trained round whose payloads wait in ``outbox`` to be uploaded (and its metrics reported)."""

    round: int
    key: str  # the task's round, global hashes and subset, hashed: the same task finds its payloads
    outbox: dict[str, str]  # modality -> file name in outbox/
    metrics: dict[str, float]
    uploaded: list[str] = field(default_factory=list)
    closed: bool = False  # the coordinator refused the upload for good (round closed, conflict)
    reported: bool = False


@dataclass
class Record:
    model: ModelRecord | None = None
    round: RoundRecord | None = None


class StateDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            root.chmod(0o700)  # it holds the client token
            probe = root / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(
                f"cannot use the state dir {root}: {exc.strerror or exc}; pass a writable --state-dir"
            ) from exc
        for sub in ("outbox", "globals", "public"):
            (root / sub).mkdir(exist_ok=True, mode=0o700)
        self._lock: int | None = None

    def lock(self) -> None:
        """Hold the state dir for this agent alone (released by :meth:`unlock` or at exit)."""
        handle = os.open(self.root / "lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(handle)
            raise ConfigError(
                f"another agent is running with the state dir {self.root}: stop it first, or give this one "
                "its own --state-dir"
            ) from exc
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    @property
    def globals(self) -> Path:
        return self.root / "globals"

    @property
    def public(self) -> Path:
        return self.root / "public"

    # --- identity --------------------------------------------------------------------------------

    def load_identity(self) -> Identity | None:
        path = self.root / IDENTITY
        if not path.exists():
            return None
        try:
            return Identity(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(
                f"the identity file {path} is unreadable ({exc}); restore it from a backup, or move the "
                "state dir away to enroll as a new client"
            ) from exc

    def save_identity(self, identity: Identity) -> None:
        write_atomic(self.root / IDENTITY, json.dumps(asdict(identity), indent=2).encode())

    # --- the commit record -----------------------------------------------------------------------

    def load_record(self) -> Record:
        path = self.root / STATE
        if not path.exists():
            return Record()
        try:
            raw: dict[str, Any] = json.loads(path.read_text())
            model = ModelRecord(**raw["model"]) if raw.get("model") else None
            round_ = RoundRecord(**raw["round"]) if raw.get("round") else None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ConfigError(
                f"the state file {path} is unreadable ({exc}); move it away to start training afresh"
            ) from exc
        return Record(model=model, round=round_)

    def save_record(self, record: Record) -> None:
        """The commit point; afterwards, files the record no longer names are removed."""
        body = {
            "model": asdict(record.model) if record.model else None,
            "round": asdict(record.round) if record.round else None,
        }
        write_atomic(self.root / STATE, json.dumps(body, indent=2).encode())
        self._collect(record)

    def _collect(self, record: Record) -> None:
        keep_model = record.model.file if record.model else None
        for path in self.root.glob("model-r*.safetensors"):
            if path.name != keep_model:
                path.unlink(missing_ok=True)
        keep = set(record.round.outbox.values()) if record.round else set()
        for path in self.outbox.iterdir():
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def forget_globals(self, keep: set[str]) -> None:
        """Drop cached global representations other than ``keep`` (sha256 hex)."""
        for path in self.globals.iterdir():
            if path.name.split(".")[0] not in keep:
                path.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one."""
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(handle, mode)
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
