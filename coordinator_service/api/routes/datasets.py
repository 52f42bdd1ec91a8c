"""Admin: register, list, inspect and delete datasets."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from coordinator_service.api.before_body import CredentialsFirstRoute
from coordinator_service.api.deps import ID_PATTERN, AdminDep, ServicesDep, SessionDep
from coordinator_service.datasets.roots import DatasetRoots
from coordinator_service.db.engine import transaction
from coordinator_service.services import datasets as service
from shared_schemas.datasets import DatasetCreate, DatasetPublic

router = APIRouter(tags=["datasets (admin)"], route_class=CredentialsFirstRoute)
DatasetId = Annotated[str, Path(min_length=1, max_length=32, pattern=ID_PATTERN)]


@router.post("/datasets", status_code=status.HTTP_202_ACCEPTED)
def register_dataset(request: DatasetCreate, services: ServicesDep, _: AdminDep) -> DatasetPublic:
    """Accept a dataset for registration (state registering); a worker validates every item and
    writes its shards. Poll ``GET /datasets/{id}`` until it is ready or failed."""
    roots = DatasetRoots(services.settings.dataset_roots)
    with transaction(services.db) as session:
        return service.create_dataset(session, request=request, roots=roots)


@router.get("/datasets")
def list_datasets(
    db: SessionDep,
    _: AdminDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[DatasetPublic]:
    """Newest first."""
    with transaction(db) as session:
        return service.list_datasets(session, limit=limit, offset=offset)


@router.get("/datasets/{dataset_id}")
def get_dataset(dataset_id: DatasetId, db: SessionDep, _: AdminDep) -> DatasetPublic:
    with transaction(db) as session:
        return service.get_dataset(session, dataset_id=dataset_id)


@router.delete("/datasets/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
def delete_dataset(dataset_id: DatasetId, services: ServicesDep, _: AdminDep) -> None:
    """Delete the dataset and its shards (409 while a federation uses it); a registration in
    progress stops."""
    service.delete_dataset(services.db, services.store, dataset_id=dataset_id)
