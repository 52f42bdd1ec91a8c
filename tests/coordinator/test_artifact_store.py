"""The artifact store's interface, on the local backend: what any backend must do.

Only the helpers that age files and plant a stray one know the local layout; the tests themselves
go through the interface.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path

import pytest

from coordinator_service.api.ranges import parse_range
from coordinator_service.artifacts import CHUNK, ArtifactMissing, LocalArtifactStore

HOUR = 3600.0


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _age_artifact(store: LocalArtifactStore, sha: str, seconds: float) -> None:
    _age(store.root / sha[:2] / sha, seconds)


def _age_staged(store: LocalArtifactStore, name: str, seconds: float) -> None:
    _age(store.root / "tmp" / name, seconds)


def test_put_bytes_stores_the_content_under_its_sha256(store: LocalArtifactStore) -> None:
    # Prepare
    data = b"global representations"

    # Execute
    sha = store.put_bytes(data)

    # Assert
    assert sha == _sha(data)
    assert store.exists(sha)
    assert store.size(sha) == len(data)
    assert store.read(sha) == data
    assert store.staging_files() == []


def test_a_missing_artifact_is_reported_as_missing(store: LocalArtifactStore) -> None:
    # Prepare
    sha = _sha(b"never stored")

    # Execute
    exists = store.exists(sha)

    # Assert: open_range refuses at the call, before a response could start streaming
    assert not exists
    for call in (store.size, store.read, store.open_range):
        with pytest.raises(ArtifactMissing) as missing:
            call(sha)
        assert isinstance(missing.value, KeyError) and sha in str(missing.value)


def test_a_staged_write_is_hashed_on_the_way_and_stored_only_on_commit(store: LocalArtifactStore) -> None:
    # Prepare
    chunks = [b"first chunk, ", b"second chunk, ", b"last"]
    data = b"".join(chunks)
    staged = store.stage()
    for chunk in chunks:
        staged.write(chunk)
    staged.finish()
    with staged.open() as handle:
        read_back = handle.read()
    before_commit = list(store.list_stored())

    # Execute
    staged.commit()

    # Assert
    assert (staged.sha256, staged.size) == (_sha(data), len(data))
    assert read_back == data
    assert before_commit == []
    assert store.read(staged.sha256) == data
    assert store.staging_files() == []


def test_a_staged_write_takes_no_writes_after_finish_and_is_read_only_once_finished(
    store: LocalArtifactStore,
) -> None:
    # Prepare
    staged = store.stage()
    staged.write(b"body")

    # Execute
    with pytest.raises(RuntimeError):
        staged.open()
    staged.finish()
    with pytest.raises(RuntimeError):
        staged.write(b"more")

    # Assert
    assert staged.size == 4
    staged.discard()


def test_a_discarded_write_leaves_nothing_and_discarding_again_is_harmless(store: LocalArtifactStore) -> None:
    # Prepare
    staged = store.stage()
    staged.write(b"refused upload")
    staged.finish()

    # Execute
    staged.discard()
    staged.discard()

    # Assert
    assert list(store.list_stored()) == []
    assert store.staging_files() == []
    with pytest.raises(RuntimeError):
        staged.commit()


def test_leaving_the_context_on_an_error_discards_the_write(store: LocalArtifactStore) -> None:
    # Execute
    with pytest.raises(ValueError, match="validation failed"), store.stage() as staged:
        staged.write(b"bad payload")
        raise ValueError("validation failed")

    # Assert
    assert not store.exists(staged.sha256)
    assert store.staging_files() == []


def test_a_write_committed_inside_the_context_is_kept(store: LocalArtifactStore) -> None:
    # Execute
    with store.stage() as staged:
        staged.write(b"good payload")
        staged.commit()

    # Assert
    assert store.read(staged.sha256) == b"good payload"
    assert store.staging_files() == []


def test_the_same_content_twice_is_stored_once_and_counts_as_fresh(store: LocalArtifactStore) -> None:
    # Prepare: the first copy is old enough for the garbage collector
    data = b"identical bytes"
    sha = store.put_bytes(data)
    _age_artifact(store, sha, 2 * HOUR)

    # Execute
    again = store.put_bytes(data)
    removed = store.collect_garbage([], min_age_s=HOUR)

    # Assert: spared, its row may be on its way
    assert again == sha
    assert [a.sha256 for a in store.list_stored()] == [sha]
    assert removed == []
    assert store.staging_files() == []


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, None, slice(None)),
        (10, 19, slice(10, 20)),
        (CHUNK - 1, CHUNK, slice(CHUNK - 1, CHUNK + 1)),  # across a chunk boundary
        (CHUNK + 5, None, slice(CHUNK + 5, None)),
        (100, 10 * CHUNK, slice(100, None)),  # an end past the artifact stops at its end
        (5 * CHUNK // 2 - 1, None, slice(-1, None)),  # the last byte
    ],
)
def test_open_range_yields_the_inclusive_range_in_chunks_of_at_most_a_mebibyte(
    store: LocalArtifactStore, start: int, end: int | None, expected: slice
) -> None:
    # Prepare
    data = random.Random(0).randbytes(5 * CHUNK // 2)
    sha = store.put_bytes(data)

    # Execute
    chunks = list(store.open_range(sha, start, end))

    # Assert
    assert b"".join(chunks) == data[expected]
    assert all(0 < len(chunk) <= CHUNK for chunk in chunks)


def test_a_suffix_range_resolved_by_the_route_helper_reads_the_last_bytes(store: LocalArtifactStore) -> None:
    # Prepare
    data = random.Random(1).randbytes(3000)
    sha = store.put_bytes(data)
    byte_range = parse_range("bytes=-100", store.size(sha))

    # Execute
    tail = b"".join(store.open_range(sha, byte_range.start, byte_range.end))

    # Assert
    assert tail == data[-100:]
    assert byte_range.content_range(len(data)) == "bytes 2900-2999/3000"


def test_an_empty_artifact_reads_as_no_bytes(store: LocalArtifactStore) -> None:
    # Prepare
    sha = store.put_bytes(b"")

    # Execute
    chunks = list(store.open_range(sha))

    # Assert
    assert (store.size(sha), store.read(sha), b"".join(chunks)) == (0, b"", b"")


def test_delete_removes_the_artifact_and_is_harmless_when_it_is_gone(store: LocalArtifactStore) -> None:
    # Prepare
    kept, deleted = store.put_bytes(b"kept"), store.put_bytes(b"deleted")

    # Execute
    store.delete(deleted)
    store.delete(deleted)

    # Assert
    assert not store.exists(deleted)
    assert store.read(kept) == b"kept"


def test_list_stored_names_every_artifact_with_its_size_and_age_and_nothing_else(store: LocalArtifactStore) -> None:
    # Prepare: a file not named by a hash (not the store's) and a write in progress
    bodies = [b"a", b"bb", b"ccc"]
    shas = [store.put_bytes(body) for body in bodies]
    stray = store.root / shas[0][:2] / "notes.txt"
    stray.write_text("not an artifact")
    staged = store.stage()
    staged.write(b"in progress")
    started = time.time()

    # Execute
    listed = list(store.list_stored())

    # Assert
    assert sorted((a.sha256, a.size) for a in listed) == sorted(zip(shas, map(len, bodies), strict=True))
    assert all(started - 60 < a.modified <= time.time() for a in listed)
    staged.discard()


def test_collect_garbage_spares_referenced_and_young_artifacts_and_drops_stale_staged_writes(
    store: LocalArtifactStore,
) -> None:
    # Prepare: old and referenced, old and orphaned, young and orphaned; a stale and a live staged write
    referenced, orphan, young = (store.put_bytes(body) for body in (b"referenced", b"orphan", b"young"))
    _age_artifact(store, referenced, 2 * HOUR)
    _age_artifact(store, orphan, 2 * HOUR)
    stale = store.stage()
    stale.write(b"a hung-up upload")
    (stale_name,) = store.staging_files()
    _age_staged(store, stale_name, 2 * HOUR)
    live = store.stage()
    live.write(b"an upload arriving now")

    # Execute
    removed = store.collect_garbage([referenced], min_age_s=HOUR)

    # Assert
    assert removed == [orphan]
    assert {a.sha256 for a in store.list_stored()} == {referenced, young}
    assert stale_name not in store.staging_files()
    live.commit()  # the live write was left alone
    assert store.read(live.sha256) == b"an upload arriving now"
    stale.discard()
