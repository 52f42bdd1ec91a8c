"""What a client should do next: train for the open round, wait, or stop."""

from __future__ import annotations

from sqlalchemy.orm import Session

from coordinator_service import repositories as repo
from coordinator_service.db.models import Client
from coordinator_service.services.rounds import config_of, maybe_add_participant, uploaders
from shared_schemas.rounds import DoneTask, TrainTask

API = "/api/v1"


def next_task(session: Session, *, client: Client) -> TrainTask | DoneTask | None:
    """A train task, a done task, or None (wait). Runs in a transaction: it may seat a late client.

    Plain reads, so concurrent polls do not queue behind each other; only seating a client takes the
    federation lock (and re-reads the round under it)."""
    federation = repo.get_federation(session, federation_id=client.federation_id)
    if federation.state in ("stopped", "completed", "failed"):
        return DoneTask(reason=f"the federation is {federation.state}")
    if federation.state != "running":
        return None
    round_ = repo.current_round(session, federation=federation)
    if round_ is None or round_.state != "open":
        return None
    if repo.participant(session, round_=round_, client_id=client.id) is None:
        federation = repo.get_federation(session, federation_id=client.federation_id, lock=True)
        round_ = repo.current_round(session, federation=federation)
        if round_ is None or not maybe_add_participant(session, federation, round_, client):
            return None
    if set(client.modalities) <= uploaders(session, round_).get(client.id, set()):
        return None
    config = config_of(federation)
    base = f"{API}/federations/{federation.id}/rounds/{round_.number}"
    assert round_.global_reps is not None and round_.deadline is not None
    return TrainTask(
        round=round_.number,
        attempt=round_.attempt,
        subset=list(round_.subset),
        embed_dim=config.embed_dim,
        seed=config.seed,
        payload_dtype=config.payload_dtype,
        training=config.client,
        global_urls={m: f"{base}/global/{m}" for m in ("image", "text")},
        global_sha256=dict(round_.global_reps),
        upload_urls={m: f"{base}/uploads/{m}" for m in client.modalities},
        deadline=round_.deadline,
    )
