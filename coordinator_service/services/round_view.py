"""A round as the admin API shows it."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from coordinator_service import repositories as repo
from coordinator_service.db.models import Participant, Round
from coordinator_service.services.rounds import JOB_FOR_STATE, uploaders
from shared_schemas.rounds import ClientTraffic, ExcludedUpload, RoundPublic, RoundTransition


def describe_round(session: Session, round_: Round) -> RoundPublic:
    done = uploaders(session, round_)
    downloads = session.execute(
        select(Participant.client_id, func.coalesce(func.sum(Participant.downloaded_bytes), 0))
        .where(Participant.round_id == round_.id)
        .group_by(Participant.client_id)
    ).all()
    uploads = repo.uploads(session, round_id=round_.id)
    traffic: dict[str, ClientTraffic] = {client: ClientTraffic(up=0, down=int(down)) for client, down in downloads}
    for upload in uploads:
        traffic.setdefault(upload.client_id, ClientTraffic(up=0, down=0)).up += upload.size
    return RoundPublic(
        number=round_.number,
        state=round_.state,
        attempt=round_.attempt,
        deadline=round_.deadline,
        failure_reason=round_.failure_reason,
        held_reason=_held_reason(session, round_),
        subset_size=len(round_.subset),
        selected=[p.client_id for p in repo.participants(session, round_=round_)],
        uploaded={client: sorted(modalities) for client, modalities in done.items()},
        transitions=[
            RoundTransition(state=t.state, at=t.at, reason=t.reason)
            for t in repo.transitions(session, round_id=round_.id)
        ],
        weights=round_.weights,
        excluded=[ExcludedUpload.model_validate(record) for record in round_.excluded or []],
        metrics=round_.metrics,
        server=round_.server_stats,
        bytes_up=sum(u.size for u in uploads),
        bytes_down=sum(t.down for t in traffic.values()),
        traffic=dict(sorted(traffic.items())),
    )


def _held_reason(session: Session, round_: Round) -> str | None:
    """Why the job of the round's current step waits for the environment, if it does."""
    kind = JOB_FOR_STATE.get(round_.state)
    job = repo.round_job(session, round_=round_, kind=kind) if kind is not None else None
    return job.held_reason if job is not None else None
