"""Creating, controlling and describing federations."""

from __future__ import annotations

import secrets

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from coordinator_service import repositories as repo
from coordinator_service.artifacts import ArtifactStore
from coordinator_service.db.engine import transaction
from coordinator_service.db.models import Federation, Round
from coordinator_service.errors import Conflict
from coordinator_service.security import new_token, token_hash
from coordinator_service.services.federation_data import build_client_tokenizer, resolve_datasets
from coordinator_service.services.rounds import create_round, resume_failed_round, resume_round, start_next_round
from shared_schemas.federation import FederationCreate, FederationCreated, FederationPublic

# Which control actions each state allows, and the state they lead to.
_CONTROL = {
    "start": ({"created", "paused"}, "running"),
    "pause": ({"running"}, "paused"),
    "stop": ({"created", "running", "paused"}, "stopped"),
    "resume": ({"failed"}, "running"),
}


def create_federation(db: sessionmaker[Session], store: ArtifactStore, config: FederationCreate) -> FederationCreated:
    """A federation on its resolved datasets, with its client tokenizer built (and, for trained:V,
    trained on the public captions) outside any transaction, then stored and recorded with it."""
    with transaction(db) as session:
        resolved, public_shards = resolve_datasets(session, config)
    tokenizer = build_client_tokenizer(store, resolved, public_shards)
    tokenizer_sha = store.put_bytes(tokenizer.encode()) if tokenizer is not None else None
    join_token = new_token("join")
    with transaction(db) as session:
        if resolve_datasets(session, config)[0] != resolved:
            raise Conflict("a dataset of this federation changed while it was being created; try again")
        if tokenizer_sha is not None:
            repo.record_artifact(session, sha256=tokenizer_sha, size=store.size(tokenizer_sha), kind="tokenizer")
        federation = Federation(
            id=f"fed-{secrets.token_hex(6)}",
            name=resolved.name,
            state="created",
            config=resolved.model_dump(mode="json"),
            join_token_hash=token_hash(join_token),
            current_round=0,
            public_dataset_id=getattr(resolved.public_set, "dataset", None),
            evaluation_dataset_id=resolved.evaluation_set.dataset if resolved.evaluation_set else None,
            tokenizer_sha256=tokenizer_sha,
        )
        session.add(federation)
        session.flush()
        return FederationCreated(**describe(session, federation).model_dump(), join_token=join_token)


def control(session: Session, *, federation_id: str, action: str) -> FederationPublic:
    federation = repo.get_federation(session, federation_id=federation_id, lock=True)
    allowed, target = _CONTROL[action]
    if federation.state not in allowed:
        raise Conflict(
            f"cannot {action} a federation that is {federation.state}",
            state=federation.state,
            allowed_from=sorted(allowed),
        )
    federation.state = target
    if action == "start":
        current = repo.current_round(session, federation=federation, lock=True)
        if current is None:
            create_round(session, federation, 1)
        elif current.state == "completed":
            start_next_round(session, federation)  # resumed between rounds
        else:
            resume_round(session, federation, current)  # resumed while collecting: a fresh deadline
    elif action == "resume":
        federation.failure_reason = None
        failed = repo.current_round(session, federation=federation, lock=True)
        assert failed is not None and failed.state == "failed", "a federation fails only with its current round"
        resume_failed_round(session, federation, failed)
    session.flush()
    return describe(session, federation)


def describe(session: Session, federation: Federation) -> FederationPublic:
    completed = session.scalar(
        select(func.count()).select_from(Round).where(Round.federation_id == federation.id, Round.state == "completed")
    )
    last = session.scalars(
        select(Round)
        .where(Round.federation_id == federation.id, Round.state == "completed")
        .order_by(Round.number.desc())
        .limit(1)
    ).one_or_none()
    return FederationPublic(
        id=federation.id,
        name=federation.name,
        state=federation.state,
        config=FederationCreate.model_validate(federation.config),
        current_round=federation.current_round,
        rounds_completed=completed or 0,
        clients_enrolled=repo.count_clients(session, federation_id=federation.id),
        last_rsum=(last.metrics or {}).get("rsum") if last is not None else None,
        best_rsum=federation.best_rsum,
        latest_checkpoint=federation.latest_checkpoint,
        best_checkpoint=federation.best_checkpoint,
        failure_reason=federation.failure_reason,
        created_at=federation.created_at,
    )
