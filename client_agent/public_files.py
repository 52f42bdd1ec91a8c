"""The public set's files in the state dir's public cache: shards and the tokenizer, downloaded
from the coordinator (resumably, hash-checked: :meth:`CoordinatorClient.download_shard`) or found
there from an earlier run (hash-checked again), and nothing else kept.

Files are named by their sha256: ``<sha256>.shard``, ``<sha256>.json`` (the tokenizer), with
``.part`` appended while a download is incomplete.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from client_agent.coordinator_client import PART_SUFFIX, CoordinatorClient, Progress
from client_agent.progress import Reporter
from client_agent.refusals import Refusals
from client_agent.stopping import Stopper
from shared_schemas.datasets import ShardRef

SHARD_SUFFIX = ".shard"
TOKENIZER_SUFFIX = ".json"


def shard_name(sha256: str) -> str:
    return f"{sha256}{SHARD_SUFFIX}"


def tokenizer_name(sha256: str) -> str:
    return f"{sha256}{TOKENIZER_SUFFIX}"


@dataclass(frozen=True)
class PublicFiles:
    """The public cache of one agent, filled from the coordinator (each download one progress step)."""

    client: CoordinatorClient
    refusals: Refusals
    cache_dir: Path
    reporter: Reporter
    stopper: Stopper

    def shards(self, shards: Sequence[ShardRef]) -> list[Path]:
        """Every shard's file, in order; one progress step counts the bytes of them all."""
        total = sum(shard.size for shard in shards)
        paths: list[Path] = []
        with (
            self.stopper.abandonable(),
            self.reporter.step("public set", total, "bytes", shards=len(shards)) as update,
        ):
            before = 0  # bytes of the shards already in hand
            for shard in shards:

                def progress(done: int, _total: int | None, before: int = before) -> None:
                    update(before + done, total)

                paths.append(self._shard(shard.sha256, progress))
                before += shard.size
        return paths

    def _shard(self, sha256: str, progress: Progress) -> Path:
        to = self.cache_dir / shard_name(sha256)
        return self.refusals.call(lambda: self.client.download_shard(sha256, to=to, progress=progress))

    def tokenizer(self, sha256: str, size: int | None) -> Path:
        """The federation's tokenizer JSON."""
        with self.stopper.abandonable(), self.reporter.step("tokenizer", size, "bytes") as update:
            return self.refusals.call(
                lambda: self.client.download_tokenizer(
                    sha256, to=self.cache_dir / tokenizer_name(sha256), progress=update
                )
            )

    def keep_only(self, names: Iterable[str]) -> None:
        """Delete every cached file but ``names`` (and their partial downloads): what an earlier
        public set left, before this one's files take the space."""
        keep = set(names)
        for path in self.cache_dir.iterdir():
            if path.name.removesuffix(PART_SUFFIX) not in keep:
                path.unlink(missing_ok=True)
