"""Registering, describing, listing and deleting datasets. A registration is accepted here after the
cheap checks (the spec, the name, where its files are); a worker reads and validates every item."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from coordinator_service import repositories as repo
from coordinator_service.artifacts import ArtifactStore
from coordinator_service.datasets.roots import DatasetRoots, OutsideRoots
from coordinator_service.db.engine import transaction
from coordinator_service.db.models import Dataset
from coordinator_service.errors import Conflict, Forbidden, Invalid
from creamfl.data.sources import PairSource, parse_pair_source
from shared_schemas.datasets import DatasetCreate, DatasetPublic, ShardRef


def create_dataset(session: Session, *, request: DatasetCreate, roots: DatasetRoots) -> DatasetPublic:
    """A dataset row in state registering, once its spec parses and its files are where they may be."""
    source = _readable_source(request.source, roots)
    if repo.dataset_by_name(session, name=request.name) is not None:
        raise Conflict(f"a dataset named {request.name!r} exists already", name=request.name)
    dataset = Dataset(
        id=f"ds-{secrets.token_hex(6)}",
        name=request.name,
        source=source.text,
        state="registering",
        items=0,
        bytes=0,
        attempts=0,
    )
    session.add(dataset)
    try:
        with session.begin_nested():  # the same name created concurrently: a conflict, not a 500
            session.flush()
    except IntegrityError:
        raise Conflict(f"a dataset named {request.name!r} exists already", name=request.name) from None
    return describe(dataset)


def _readable_source(spec: str, roots: DatasetRoots) -> PairSource:
    try:
        source = parse_pair_source(spec)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    for path in source.files():
        try:
            roots.check(path)  # before looking at the file: nothing is said about files outside the roots
        except OutsideRoots as exc:
            raise Forbidden(str(exc), path=str(path)) from None
        except ValueError as exc:
            raise Invalid(str(exc), path=str(path)) from None
        if not path.is_absolute():  # a worker in another folder (or on another host) would read elsewhere
            raise Invalid(f"{path} is a relative path; name source files by absolute paths", path=str(path))
    _check_exists(source.path, "the source file", Path.is_file)
    _check_exists(source.images, "the image folder", Path.is_dir)
    return source


def _check_exists(path: Path, what: str, test: Callable[[Path], bool]) -> None:
    try:
        found = test(path)
    except OSError as exc:  # a name too long, say: bad input, not a server error
        raise Invalid(f"{what} {path} cannot be read: {exc.strerror or exc}", path=str(path)) from None
    if not found:
        raise Invalid(f"{what} {path} does not exist", path=str(path))


def describe(dataset: Dataset) -> DatasetPublic:
    return DatasetPublic(
        id=dataset.id,
        name=dataset.name,
        source=dataset.source,
        state=dataset.state,
        failure_reason=dataset.failure_reason,
        items=dataset.items,
        bytes=dataset.bytes,
        sha256=dataset.sha256,
        shards=[ShardRef.model_validate(shard) for shard in dataset.shards or []],
        created_at=dataset.created_at,
        updated_at=dataset.updated_at,
    )


def list_datasets(session: Session, *, limit: int, offset: int) -> list[DatasetPublic]:
    return [describe(dataset) for dataset in repo.list_datasets(session, limit=limit, offset=offset)]


def get_dataset(session: Session, *, dataset_id: str) -> DatasetPublic:
    return describe(repo.get_dataset(session, dataset_id=dataset_id))


def delete_dataset(db: sessionmaker[Session], store: ArtifactStore, *, dataset_id: str) -> None:
    """Delete the dataset and the shards no other dataset holds; refused while a federation uses it.

    A registration in progress notices at its next progress update and removes what it wrote. The
    shard files go after the commit: the rows are the truth, and a crash in between leaves orphans
    the store's collection removes."""
    with transaction(db) as session:
        dataset = repo.get_dataset(session, dataset_id=dataset_id, lock=True)
        users = repo.federations_using_dataset(session, dataset_id=dataset_id)
        if users:
            raise Conflict(f"dataset {dataset_id!r} is used by {len(users)} federation(s)", federations=users)
        unshared = _shards_of(dataset) - repo.shards_of_other_datasets(session, dataset_id=dataset_id)
        repo.delete_artifact_rows(session, sha256s=unshared)
        session.delete(dataset)
    for sha in unshared:
        store.delete(sha)


def _shards_of(dataset: Dataset) -> set[str]:
    shards: Sequence[dict[str, object]] = dataset.shards or []
    return {str(shard["sha256"]) for shard in shards}
