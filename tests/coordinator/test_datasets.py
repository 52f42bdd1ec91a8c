"""Registered datasets on real SQLite and PostgreSQL: the API, and registration by the worker's
:class:`Registrar`, driven in-process (no worker thread), on fixture files the tests write.

A registration's moments (a shard written, the source edited, the dataset deleted, the worker killed)
are reached through a store that calls the test back before each shard is written."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from coordinator_service.app import create_app
from coordinator_service.artifacts import LocalArtifactStore
from coordinator_service.datasets.registration import Registrar
from coordinator_service.db.engine import transaction
from coordinator_service.db.models import Artifact, Dataset, Federation, utcnow
from coordinator_service.jobs.worker import Worker
from coordinator_service.settings import Settings
from creamfl.data.shards import Shard, dataset_sha256
from tests.coordinator.helpers import ADMIN, API, assert_error, fast_settings

SHARD_ITEMS = 2
ITEMS = 5  # three shards of 2, 2 and 1 items


class Killed(BaseException):
    """The worker process dies here: nothing of the registrar's own handling runs."""


class HookedStore(LocalArtifactStore):
    """The coordinator's store, calling ``before_put(n)`` before the n-th shard (1-based) is written."""

    def __init__(self, root: Path, before_put: Callable[[int], None]) -> None:
        super().__init__(root)
        self.before_put = before_put
        self.puts = 0

    def put_bytes(self, data: bytes) -> str:
        self.puts += 1
        self.before_put(self.puts)
        return super().put_bytes(data)


@dataclass
class Source:
    spec: str
    file: Path
    images: Path
    ids: list[str]


class Registry:
    """The coordinator's API in-process (no worker of its own) and registrars made by the test."""

    def __init__(self, http: TestClient, settings: Settings) -> None:
        self.http = http
        self.settings = settings
        services = http.app.state.services  # type: ignore[attr-defined]
        self.db: sessionmaker[Session] = services.db
        self.store = LocalArtifactStore(settings.resolved_artifact_dir)

    def registrar(
        self, before_put: Callable[[int], None] = lambda _: None, *, owner: str = "worker-a", clock: Any = utcnow
    ) -> Registrar:
        store = HookedStore(self.settings.resolved_artifact_dir, before_put)
        return Registrar(self.db, store, self.settings, owner=owner, shard_items=SHARD_ITEMS, clock=clock)

    def post(self, name: str, source: str) -> Any:
        return self.http.post(f"{API}/datasets", json={"name": name, "source": source}, headers=ADMIN)

    def create(self, name: str, source: str) -> dict[str, Any]:
        response = self.post(name, source)
        assert response.status_code == 202, response.text
        created: dict[str, Any] = response.json()
        return created

    def get(self, dataset_id: str) -> dict[str, Any]:
        response = self.http.get(f"{API}/datasets/{dataset_id}", headers=ADMIN)
        assert response.status_code == 200, response.text
        dataset: dict[str, Any] = response.json()
        return dataset

    def delete(self, dataset_id: str) -> Any:
        return self.http.delete(f"{API}/datasets/{dataset_id}", headers=ADMIN)

    def register(self, name: str, source: str) -> dict[str, Any]:
        created = self.create(name, source)
        assert self.registrar().run_once()
        return self.get(created["id"])

    def stored(self) -> set[str]:
        return {artifact.sha256 for artifact in self.store.list_stored()}

    def shard_rows(self) -> set[str]:
        with transaction(self.db) as session:
            return set(session.scalars(select(Artifact.sha256).where(Artifact.kind == "shard")))

    def assert_nothing_left(self) -> None:
        assert self.shard_rows() == set()
        assert self.stored() == set()
        assert self.store.staging_files() == []


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    root = tmp_path / "roots"
    root.mkdir()
    return root


@pytest.fixture
def settings(db_url: str, tmp_path: Path, roots: Path) -> Settings:
    return fast_settings(tmp_path / "data", db_url, lease_s=5.0, in_process_worker=False, dataset_roots=[roots])


@pytest.fixture
def registry(settings: Settings) -> Iterator[Registry]:
    with TestClient(create_app(settings)) as http:
        yield Registry(http, settings)


def write_image(path: Path, shade: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 3), (shade, 255 - shade, 40)).save(path)
    return path


def karpathy_entry(name: str, split: str, captions: list[str]) -> dict[str, Any]:
    return {"filepath": "train2014", "filename": name, "split": split, "sentences": [{"raw": c} for c in captions]}


def karpathy_source(roots: Path, entries: list[dict[str, Any]] | None = None, *, split: str = "train") -> Source:
    """Five train images with two captions each, and one test image, COCO layout."""
    folder = roots / "coco"
    images = folder / "images"
    for number in range(ITEMS + 1):
        write_image(images / "train2014" / f"{number}.png", 40 * number)
    if entries is None:
        entries = [karpathy_entry(f"{n}.png", "train", [f"picture {n}", f" number {n} "]) for n in range(ITEMS)]
        entries.append(karpathy_entry(f"{ITEMS}.png", "test", ["held out"]))
    file = folder / "captions.json"
    file.write_text(json.dumps({"images": entries}), encoding="utf-8")
    ids = [f"train2014/{e['filename']}" for e in entries if e["split"] == split]
    return Source(f"karpathy:{file}?images={images}&split={split}", file, images, ids)


def captions_source(roots: Path, kind: str) -> Source:
    """Five JPEG images; a CSV with an id and two caption columns, or JSONL records."""
    folder = roots / "caps"
    images = folder / "pictures"
    ids = [f"p{n}" for n in range(ITEMS)]
    for number in range(ITEMS):
        write_image(images / f"{number}.jpg", 50 * number)
    if kind == "csv":
        file = folder / "captions.csv"
        rows = [f"p{n},{n}.jpg,a picture of {n},{'' if n % 2 else f'photo {n}'}" for n in range(ITEMS)]
        file.write_text("\n".join(["id,image,caption,caption2", *rows]) + "\n", encoding="utf-8")
    else:
        file = folder / "captions.jsonl"
        records = [{"id": f"p{n}", "image": f"{n}.jpg", "captions": [f"a picture of {n}"]} for n in range(ITEMS)]
        file.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return Source(f"captions:{file}?images={images}", file, images, ids)


def read_shards(registry: Registry, dataset: dict[str, Any]) -> list[Shard]:
    return [Shard.from_bytes(registry.store.read(ref["sha256"])) for ref in dataset["shards"]]


def assert_failed(registry: Registry, dataset_id: str, reason: str) -> dict[str, Any]:
    dataset = registry.get(dataset_id)
    assert dataset["state"] == "failed", dataset
    assert dataset["failure_reason"] is not None
    assert (dataset["items"], dataset["bytes"]) == (0, 0)
    assert dataset["shards"] == [] and dataset["sha256"] is None
    assert "Traceback" not in dataset["failure_reason"]
    assert str(registry.settings.data_dir) not in dataset["failure_reason"]
    assert re.search(reason, dataset["failure_reason"]), dataset["failure_reason"]
    registry.assert_nothing_left()
    return dataset


# --- registering ------------------------------------------------------------------------------------


def test_a_karpathy_dataset_registers_into_shards_the_store_holds(registry: Registry, roots: Path) -> None:
    # Prepare
    source = karpathy_source(roots)
    created = registry.create("coco-mini", source.spec)

    # Execute
    claimed = registry.registrar().run_once()
    dataset = registry.get(created["id"])

    # Assert: the manifest matches the stored bytes; the shards hold the original files and captions
    assert claimed
    assert (created["state"], created["items"], created["shards"]) == ("registering", 0, [])
    assert (dataset["state"], dataset["items"], dataset["failure_reason"]) == ("ready", ITEMS, None)
    assert [ref["items"] for ref in dataset["shards"]] == [2, 2, 1]
    for ref in dataset["shards"]:
        data = registry.store.read(ref["sha256"])
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (ref["sha256"], ref["size"])
    assert dataset["bytes"] == sum(ref["size"] for ref in dataset["shards"])
    assert dataset["sha256"] == dataset_sha256([ref["sha256"] for ref in dataset["shards"]])
    shards = read_shards(registry, dataset)
    assert [i for s in shards for i in s.index.ids] == source.ids
    assert shards[0].index.captions[1] == ("picture 1", "number 1")
    assert shards[2].image_bytes(0) == (source.images / "train2014" / "4.png").read_bytes()
    assert registry.shard_rows() == registry.stored() == {ref["sha256"] for ref in dataset["shards"]}


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_a_captions_file_registers_with_its_ids_and_captions(registry: Registry, roots: Path, kind: str) -> None:
    # Prepare
    source = captions_source(roots, kind)

    # Execute
    dataset = registry.register(f"caps-{kind}", source.spec)

    # Assert
    assert (dataset["state"], dataset["items"], len(dataset["shards"])) == ("ready", ITEMS, 3)
    shards = read_shards(registry, dataset)
    assert [i for s in shards for i in s.index.ids] == source.ids
    expected = ("a picture of 0", "photo 0") if kind == "csv" else ("a picture of 0",)
    assert shards[0].index.captions[0] == expected
    assert shards[0].index.captions[1] == ("a picture of 1",)


def test_the_worker_registers_datasets_in_its_loop(registry: Registry, roots: Path) -> None:
    # Prepare
    created = registry.create("coco-mini", karpathy_source(roots).spec)
    worker = Worker(registry.db, registry.store, registry.settings)

    # Execute
    worker.run_once()

    # Assert
    dataset = registry.get(created["id"])
    assert (dataset["state"], dataset["items"], len(dataset["shards"])) == ("ready", ITEMS, 1)


def test_progress_is_visible_while_registering(registry: Registry, roots: Path) -> None:
    # Prepare: look at the dataset before each shard is written
    created = registry.create("coco-mini", karpathy_source(roots).spec)
    seen: list[tuple[str, int, int, int]] = []

    def look(_: int) -> None:
        dataset = registry.get(created["id"])
        seen.append((dataset["state"], dataset["items"], dataset["bytes"], len(dataset["shards"])))

    # Execute
    registry.registrar(look).run_once()

    # Assert: items and bytes grow shard by shard; the manifest appears only once ready
    sizes = [ref["size"] for ref in registry.get(created["id"])["shards"]]
    assert seen == [("registering", 0, 0, 0), ("registering", 2, sizes[0], 0), ("registering", 4, sum(sizes[:2]), 0)]


def test_two_datasets_of_the_same_source_share_shards(registry: Registry, roots: Path) -> None:
    # Prepare
    spec = karpathy_source(roots).spec

    # Execute
    first, second = registry.register("one", spec), registry.register("two", spec)

    # Assert: content-addressed, so a registration is deterministic
    assert first["state"] == second["state"] == "ready"
    assert first["shards"] == second["shards"] and first["sha256"] == second["sha256"]


# --- bad items: the registration fails, naming the item, and leaves nothing behind ---------------


def missing_image(source: Source) -> None:
    (source.images / "train2014" / "3.png").unlink()


def corrupt_image(source: Source) -> None:
    (source.images / "train2014" / "3.png").write_bytes(b"not an image at all")


def image_linked_outside(source: Source) -> None:
    outside = write_image(source.images.parents[2] / "outside.png", 0)
    target = source.images / "train2014" / "3.png"
    target.unlink()
    target.symlink_to(outside)


def malformed_json(source: Source) -> None:
    source.file.write_text('{"images": [', encoding="utf-8")


def entries_with(change: Callable[[list[dict[str, Any]]], None]) -> Callable[[Source], None]:
    def rewrite(source: Source) -> None:
        document = json.loads(source.file.read_text(encoding="utf-8"))
        change(document["images"])
        source.file.write_text(json.dumps(document), encoding="utf-8")

    return rewrite


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (missing_image, r"item 'train2014/3\.png' \(.*3\.png\): the image file does not exist"),
        (corrupt_image, r"cannot decode the image of item 'train2014/3\.png'"),
        (image_linked_outside, r"item 'train2014/3\.png': .*3\.png is outside the dataset roots"),
        (malformed_json, r"captions\.json: not a readable JSON file"),
        (entries_with(lambda e: e[2]["sentences"].append({"raw": "  "})), r"image #2 .* has an empty caption"),
        (entries_with(lambda e: e.append(dict(e[1]))), r"image #6 repeats the id 'train2014/1\.png' of image #1"),
        (entries_with(lambda e: e.__setitem__(1, {**e[1], "filepath": "../.."})), r"image #1 has the image path"),
        (entries_with(lambda e: e.__setitem__(slice(None), e[-1:])), r"no image in split\(s\) \['train'\]"),
    ],
    ids=["missing", "corrupt", "symlink-outside", "json", "empty-caption", "duplicate-id", "dotdot", "zero"],
)
def test_a_bad_karpathy_item_fails_the_registration_and_leaves_nothing(
    registry: Registry, roots: Path, spoil: Callable[[Source], None], reason: str
) -> None:
    # Prepare: the source is accepted, then spoiled before the worker reads it
    source = karpathy_source(roots)
    created = registry.create("coco-mini", source.spec)
    spoil(source)

    # Execute
    registry.registrar().run_once()

    # Assert
    assert_failed(registry, created["id"], reason)


@pytest.mark.parametrize(
    ("kind", "bad_line", "reason"),
    [
        ("csv", 'p9,9.jpg,"unclosed', r"captions\.csv, line \d+: malformed CSV"),
        ("csv", "p9,9.jpg", r"captions\.csv: line 7 has 2 fields, the header 4"),
        ("csv", "p9,0.jpg, ,", r"line 7 \('p9'\) has no caption"),
        ("csv", "p1,0.jpg,again,", r"line 7 repeats the id 'p1' of line 3"),
        ("jsonl", '{"id": "p9", "image": "0.jpg", "captions": [', r"captions\.jsonl: line 6 is not valid JSON"),
        ("jsonl", '{"id": "p9", "image": "0.jpg", "captions": [""]}', r"line 6 \('p9'\) has an empty caption"),
    ],
)
def test_a_bad_captions_row_fails_the_registration_and_leaves_nothing(
    registry: Registry, roots: Path, kind: str, bad_line: str, reason: str
) -> None:
    # Prepare: a bad last row, after two shards were written
    source = captions_source(roots, kind)
    with source.file.open("a", encoding="utf-8") as f:
        f.write(bad_line + "\n")
    created = registry.create(f"caps-{kind}", source.spec)

    # Execute
    registry.registrar().run_once()

    # Assert
    assert_failed(registry, created["id"], reason)


def test_an_empty_captions_file_fails(registry: Registry, roots: Path) -> None:
    source = captions_source(roots, "jsonl")
    source.file.write_text("\n", encoding="utf-8")
    created = registry.create("empty", source.spec)
    registry.registrar().run_once()
    assert_failed(registry, created["id"], r"captions\.jsonl: no image$")


def test_a_source_changed_while_registering_fails(registry: Registry, roots: Path) -> None:
    # Prepare: the file is edited while the second shard is written
    source = karpathy_source(roots)
    created = registry.create("coco-mini", source.spec)

    def edit(put: int) -> None:
        if put == 2:
            with source.file.open("a", encoding="utf-8") as f:
                f.write("\n")

    # Execute
    registry.registrar(edit).run_once()

    # Assert
    assert_failed(registry, created["id"], r"captions\.json changed while it was registered; register it again")


def test_a_dataset_deleted_while_registering_stops_and_leaves_nothing(registry: Registry, roots: Path) -> None:
    # Prepare
    created = registry.create("coco-mini", karpathy_source(roots).spec)
    deleted: list[int] = []

    def delete(put: int) -> None:
        if put == 2:
            deleted.append(registry.delete(created["id"]).status_code)

    registrar = registry.registrar(delete)

    # Execute
    claimed = registrar.run_once()

    # Assert: it stopped at the progress update after the deletion, before the third shard
    assert claimed and deleted == [204]
    assert isinstance(registrar.store, HookedStore) and registrar.store.puts == 2
    assert_error(registry.http.get(f"{API}/datasets/{created['id']}", headers=ADMIN), 404, "not_found")
    registry.assert_nothing_left()


def test_a_store_error_releases_the_dataset_for_another_attempt(registry: Registry, roots: Path) -> None:
    # Prepare: the store fails once, at the second shard
    created = registry.create("coco-mini", karpathy_source(roots).spec)

    def full(put: int) -> None:
        if put == 2:
            raise OSError(28, "No space left on device")

    # Execute
    registry.registrar(full).run_once()
    between = registry.get(created["id"])
    registry.registrar(owner="worker-b").run_once()

    # Assert: the first attempt left nothing and said why; the second completed
    assert between["state"] == "registering"
    assert between["failure_reason"] == "attempt 1 stopped on OSError (see the worker's log)"
    assert between["shards"] == []
    dataset = registry.get(created["id"])
    assert (dataset["state"], dataset["items"], dataset["failure_reason"]) == ("ready", ITEMS, None)


# --- a killed worker --------------------------------------------------------------------------------


def kill_at(put_number: int) -> Callable[[int], None]:
    def kill(put: int) -> None:
        if put == put_number:
            raise Killed

    return kill


def later(seconds: float) -> Callable[[], datetime]:
    return lambda: utcnow() + timedelta(seconds=seconds)


def test_a_killed_registration_is_claimed_again_after_its_lease_and_writes_the_same_shards(
    registry: Registry, roots: Path
) -> None:
    # Prepare: the same source registered without interruption, for comparison
    spec = karpathy_source(roots).spec
    reference = registry.register("reference", spec)
    created = registry.create("coco-mini", spec)
    with pytest.raises(Killed):
        registry.registrar(kill_at(3)).run_once()
    lease_s = registry.settings.lease_s

    # Execute
    during_lease = registry.registrar(owner="worker-b").run_once()
    after_lease = registry.registrar(owner="worker-b", clock=later(lease_s + 1)).run_once()

    # Assert
    assert not during_lease and after_lease
    dataset = registry.get(created["id"])
    assert dataset["state"] == "ready"
    assert dataset["shards"] == reference["shards"]
    assert registry.stored() == registry.shard_rows() == {ref["sha256"] for ref in reference["shards"]}
    with transaction(registry.db) as session:
        row = session.get(Dataset, created["id"])
        assert row is not None and (row.attempts, row.lease_owner) == (2, None)


def test_a_registration_whose_workers_keep_dying_fails_after_max_attempts(registry: Registry, roots: Path) -> None:
    # Prepare: every attempt dies at its second shard
    created = registry.create("coco-mini", karpathy_source(roots).spec)
    attempts = registry.settings.max_job_attempts
    for attempt in range(attempts):
        with pytest.raises(Killed):
            registry.registrar(kill_at(2), clock=later(attempt * (registry.settings.lease_s + 1))).run_once()

    # Execute
    claimed = registry.registrar(clock=later(attempts * (registry.settings.lease_s + 1))).run_once()

    # Assert: nothing recorded (the dead attempts' files are orphans for the store's collection)
    assert not claimed
    dataset = registry.get(created["id"])
    assert dataset["state"] == "failed"
    assert dataset["failure_reason"] == (
        f"registration did not finish in {attempts} attempts (its worker was lost or hit an error)"
    )
    assert registry.shard_rows() == set()


# --- refused at once --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("flickr:{file}?images={images}", r"unknown kind 'flickr'"),
        ("{file}", r"unknown kind"),
        ("karpathy:{file}?images={images}&size=3", r"unknown option 'size' for karpathy"),
        ("karpathy:{file}", r"say where the images are"),
        ("captions:{file}?images={images}", r"a captions file is \.jsonl or \.csv"),
        ("karpathy:{file}x?images={images}", r"the source file .*captions\.jsonx does not exist"),
        ("karpathy:{file}?images={images}x", r"the image folder .*imagesx does not exist"),
        ("karpathy:coco/captions.json?images={images}", r"coco/captions\.json is a relative path"),
        ("karpathy:{roots}/loop.json?images={images}", r"loop\.json cannot be resolved"),
        ("karpathy:{roots}/%s.json?images={images}" % ("n" * 300), r"cannot be read: File name too long"),
    ],
)
def test_a_bad_spec_is_refused_at_once(
    registry: Registry, roots: Path, spec: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: relative paths would resolve inside the roots
    monkeypatch.chdir(roots)
    source = karpathy_source(roots)
    (roots / "loop.json").symlink_to(roots / "loop.json")

    # Execute
    response = registry.post("bad", spec.format(file=source.file, images=source.images, roots=roots))

    # Assert
    error = assert_error(response, 422, "invalid")
    assert re.search(message, error["message"]), error
    assert registry.http.get(f"{API}/datasets", headers=ADMIN).json() == []


def copied_outside(roots: Path, source: Source) -> Path:
    """A copy of the source's caption file next to the roots, not inside them."""
    copy = roots.parent / "elsewhere" / "captions.json"
    copy.parent.mkdir()
    copy.write_bytes(source.file.read_bytes())
    return copy


def outside_file(roots: Path, source: Source) -> str:
    return f"karpathy:{copied_outside(roots, source)}?images={source.images}"


def linked_file(roots: Path, source: Source) -> str:
    link = roots / "innocent.json"
    link.symlink_to(copied_outside(roots, source))
    return f"karpathy:{link}?images={source.images}"


def dotdot_file(roots: Path, source: Source) -> str:
    copied_outside(roots, source)
    return f"karpathy:{roots}/coco/../../elsewhere/captions.json?images={source.images}"


def linked_images(roots: Path, source: Source) -> str:
    link = roots / "pictures"
    link.symlink_to(source.images.rename(roots.parent / "pictures"))
    return f"karpathy:{source.file}?images={link}"


@pytest.mark.parametrize("where", [outside_file, linked_file, dotdot_file, linked_images])
def test_a_source_outside_the_roots_is_forbidden(
    registry: Registry, roots: Path, where: Callable[[Path, Source], str]
) -> None:
    # Prepare
    spec = where(roots, karpathy_source(roots))

    # Execute
    response = registry.post("outside", spec)

    # Assert
    error = assert_error(response, 403, "forbidden")
    assert "is outside the dataset roots (CREAMFL_DATASET_ROOTS" in error["message"]


def test_without_roots_registering_is_off(db_url: str, tmp_path: Path, roots: Path) -> None:
    # Prepare
    settings = fast_settings(tmp_path / "data", db_url, in_process_worker=False)
    spec = karpathy_source(roots).spec

    # Execute
    with TestClient(create_app(settings)) as http:
        response = http.post(f"{API}/datasets", json={"name": "coco", "source": spec}, headers=ADMIN)

    # Assert
    error = assert_error(response, 403, "forbidden")
    assert "registering datasets is off: set CREAMFL_DATASET_ROOTS" in error["message"]


def test_a_duplicate_name_is_a_conflict(registry: Registry, roots: Path) -> None:
    # Prepare
    spec = karpathy_source(roots).spec
    registry.create("coco-mini", spec)

    # Execute
    response = registry.post("coco-mini", spec)

    # Assert
    error = assert_error(response, 409, "conflict")
    assert error["details"] == {"name": "coco-mini"}


@pytest.mark.parametrize(
    "body",
    [{"name": "x"}, {"name": "", "source": "karpathy:/a.json?images=/b"}, {"name": "x", "source": "s", "extra": 1}],
)
def test_a_malformed_body_is_invalid(registry: Registry, body: dict[str, Any]) -> None:
    assert_error(registry.http.post(f"{API}/datasets", json=body, headers=ADMIN), 422, "invalid")


# --- listing and deleting ---------------------------------------------------------------------------


def test_the_list_is_newest_first_and_paginated(registry: Registry, roots: Path) -> None:
    # Prepare
    spec = karpathy_source(roots).spec
    ids = [registry.create(f"d{n}", spec)["id"] for n in range(3)]

    def page(**params: int) -> list[str]:
        response = registry.http.get(f"{API}/datasets", params=params, headers=ADMIN)
        assert response.status_code == 200, response.text
        return [d["id"] for d in response.json()]

    # Execute / Assert
    assert page() == ids[::-1]
    assert page(limit=2) == ids[:0:-1]
    assert page(limit=2, offset=2) == ids[:1]
    for params in ({"limit": 0}, {"limit": 501}, {"offset": -1}):
        assert_error(registry.http.get(f"{API}/datasets", params=params, headers=ADMIN), 422, "invalid")


def test_deleting_a_dataset_removes_its_shards_unless_another_holds_them(registry: Registry, roots: Path) -> None:
    # Prepare: two datasets of the same source share their shards
    spec = karpathy_source(roots).spec
    first, second = registry.register("one", spec), registry.register("two", spec)
    shards = {ref["sha256"] for ref in first["shards"]}

    # Execute / Assert
    assert registry.delete(first["id"]).status_code == 204
    assert registry.shard_rows() == registry.stored() == shards
    assert registry.delete(second["id"]).status_code == 204
    registry.assert_nothing_left()
    assert registry.http.get(f"{API}/datasets", headers=ADMIN).json() == []


@pytest.mark.parametrize("column", ["public_dataset_id", "evaluation_dataset_id"])
def test_a_dataset_a_federation_uses_cannot_be_deleted(registry: Registry, roots: Path, column: str) -> None:
    # Prepare
    dataset = registry.register("coco-mini", karpathy_source(roots).spec)
    with transaction(registry.db) as session:
        federation = Federation(
            id="fed-uses", name="f", state="created", config={}, join_token_hash="0" * 64, current_round=0
        )
        setattr(federation, column, dataset["id"])
        session.add(federation)

    # Execute
    response = registry.delete(dataset["id"])

    # Assert
    error = assert_error(response, 409, "conflict")
    assert error["details"] == {"federations": ["fed-uses"]}
    assert registry.get(dataset["id"])["state"] == "ready"
    assert registry.stored() == {ref["sha256"] for ref in dataset["shards"]}


@pytest.mark.parametrize("method", ["get", "delete"])
def test_an_unknown_dataset_is_not_found(registry: Registry, method: str) -> None:
    response = registry.http.request(method.upper(), f"{API}/datasets/ds-nothing", headers=ADMIN)
    error = assert_error(response, 404, "not_found")
    assert error["details"] == {"dataset_id": "ds-nothing"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-the-admin-token-at-all"}])
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/datasets"), ("GET", "/datasets"), ("GET", "/datasets/ds-x"), ("DELETE", "/datasets/ds-x")],
)
def test_only_the_admin_may_use_datasets(registry: Registry, method: str, path: str, headers: dict[str, str]) -> None:
    body = {"name": "x", "source": "karpathy:/a.json?images=/b"} if method == "POST" else None
    response = registry.http.request(method, f"{API}{path}", json=body, headers=headers)
    assert_error(response, 401, "unauthorized")
