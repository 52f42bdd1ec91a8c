"""The round state machine (DESIGN.md section 4). Each function runs inside the caller's transaction.

pending -> open -> aggregating -> training -> evaluating -> completed, or failed with a reason.
A round closes when every selected client uploaded every modality it has, or at its deadline
with at least ``min_clients`` uploaders; below quorum it is re-opened with a fresh selection,
``max_reopen`` times at most, then it fails.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from coordinator_service import repositories as repo
from coordinator_service.db.models import Client, Federation, Participant, Round, RoundTransition, utcnow
from coordinator_service.jobs.queue import enqueue, requeue
from coordinator_service.round_config import round_config
from creamfl import rounds as engine
from shared_schemas.federation import FederationCreate

# Which job moves a round out of each working state.
JOB_FOR_STATE = {"pending": "publish", "aggregating": "aggregate", "training": "train", "evaluating": "evaluate"}
# The state a job's success moves the round to.
STATE_AFTER_JOB = {"publish": "open", "aggregate": "training", "train": "evaluating", "evaluate": "completed"}


def config_of(federation: Federation) -> FederationCreate:
    return FederationCreate.model_validate(federation.config)


def move(session: Session, round_: Round, state: str, reason: str | None = None) -> None:
    round_.state = state
    session.add(RoundTransition(round_id=round_.id, state=state, reason=reason))


def create_round(session: Session, federation: Federation, number: int) -> Round:
    """A new pending round with its publish job; becomes the federation's current round."""
    round_ = Round(
        federation_id=federation.id,
        number=number,
        state="pending",
        attempt=0,
        subset=engine.public_subset(round_config(config_of(federation)), number).tolist(),
    )
    session.add(round_)
    session.flush()
    move(session, round_, "pending")
    federation.current_round = number
    enqueue(session, round_=round_, kind="publish")
    return round_


def open_round(session: Session, federation: Federation, round_: Round) -> None:
    """After publishing: select clients, set the deadline."""
    config = config_of(federation)
    round_.deadline = utcnow() + timedelta(seconds=config.round_deadline_s)
    move(session, round_, "open")
    select_clients(session, federation, round_, keep=[])


def select_clients(session: Session, federation: Federation, round_: Round, *, keep: list[str]) -> list[str]:
    """Participants of the round's current attempt: ``keep`` first, then a seeded draw of the others."""
    active = [c.id for c in repo.list_clients(session, federation_id=federation.id) if c.status == "active"]
    config = round_config(config_of(federation))
    chosen = engine.select_clients(config, round_.number, active, attempt=round_.attempt, keep=keep)
    for client_id in chosen:
        session.add(Participant(round_id=round_.id, client_id=client_id, attempt=round_.attempt))
    session.flush()
    return chosen


def maybe_add_participant(session: Session, federation: Federation, round_: Round, client: Client) -> bool:
    """A client that enrolled after the draw takes a free seat of the open round."""
    if round_.state != "open" or client.status != "active":
        return False
    seats = config_of(federation).clients_per_round
    if len(repo.participants(session, round_=round_)) >= seats:
        return False
    session.add(Participant(round_id=round_.id, client_id=client.id, attempt=round_.attempt))
    session.flush()
    return True


def uploaders(session: Session, round_: Round) -> dict[str, set[str]]:
    """client id -> modalities uploaded for this round (any attempt)."""
    done: dict[str, set[str]] = {}
    for up in repo.uploads(session, round_id=round_.id):
        done.setdefault(up.client_id, set()).add(up.modality)
    return done


def complete_uploaders(session: Session, round_: Round) -> list[str]:
    """Clients that uploaded every modality they have."""
    done = uploaders(session, round_)
    complete = []
    for client_id, modalities in done.items():
        client = session.get(Client, client_id)
        if client is not None and set(client.modalities) <= modalities:
            complete.append(client_id)
    return complete


def close_if_complete(session: Session, federation: Federation, round_: Round) -> bool:
    """Every selected client has uploaded everything: stop collecting, aggregate."""
    if round_.state != "open":
        return False
    selected = {p.client_id for p in repo.participants(session, round_=round_)}
    selected -= revoked_clients(session, federation)  # a revoked client will never upload: do not wait for it
    if not selected or not selected <= set(complete_uploaders(session, round_)):
        return False
    _start_aggregation(session, round_, "all selected clients uploaded")
    return True


def revoked_clients(session: Session, federation: Federation) -> set[str]:
    return {c.id for c in repo.list_clients(session, federation_id=federation.id) if c.status != "active"}


def handle_deadline(session: Session, federation: Federation, round_: Round, now: datetime) -> str | None:
    """An open round past its deadline: close with quorum, re-open below it, fail when out of retries.

    Only while the federation runs: a paused federation hands out no tasks, so its round's clock
    stops (:func:`resume_round` gives it a fresh deadline), and a stopped one is left as it is.
    """
    if federation.state != "running":
        return None
    if round_.state != "open" or round_.deadline is None or round_.deadline > now:
        return None
    config = config_of(federation)
    done = complete_uploaders(session, round_)
    if len(done) >= config.min_clients:
        _start_aggregation(session, round_, f"deadline with quorum: {len(done)} of {config.min_clients} needed")
        return "aggregating"
    if round_.attempt >= config.max_reopen:
        reason = f"quorum missed at the deadline {round_.attempt + 1} times ({len(done)} of {config.min_clients})"
        fail_round(session, federation, round_, reason)
        return "failed"
    _reopen(session, federation, round_, now, f"re-opened: quorum missed ({len(done)} of {config.min_clients})")
    return "open"


def _reopen(session: Session, federation: Federation, round_: Round, now: datetime, reason: str) -> None:
    """The round's next attempt: a fresh deadline and selection, keeping the clients that uploaded."""
    round_.attempt += 1
    round_.deadline = now + timedelta(seconds=config_of(federation).round_deadline_s)
    move(session, round_, "open", reason)
    select_clients(session, federation, round_, keep=complete_uploaders(session, round_))


def resume_round(session: Session, federation: Federation, round_: Round) -> None:
    """On resume: clients were told to wait while paused, so an open round gets a full deadline again."""
    if round_.state != "open":
        return
    fresh = utcnow() + timedelta(seconds=config_of(federation).round_deadline_s)
    if round_.deadline is None or round_.deadline < fresh:
        round_.deadline = fresh


def resume_failed_round(session: Session, federation: Federation, round_: Round) -> None:
    """On an admin's resume: the round goes back to the state it failed in, and only that state's
    step runs again (its job re-queued with fresh attempts); what earlier steps committed stays. A
    round that failed collecting (quorum missed) opens its next attempt."""
    state = next(t.state for t in reversed(repo.transitions(session, round_id=round_.id)) if t.state != "failed")
    round_.failure_reason = None
    if state == "open":
        _reopen(session, federation, round_, utcnow(), "resumed by an admin: re-opened")
        return
    move(session, round_, state, "resumed by an admin")
    job = repo.round_job(session, round_=round_, kind=JOB_FOR_STATE[state])
    assert job is not None, "a round fails in a working state only with the job of that state"
    requeue(job)


def _start_aggregation(session: Session, round_: Round, reason: str) -> None:
    move(session, round_, "aggregating", reason)
    enqueue(session, round_=round_, kind="aggregate")


def advance_after_job(session: Session, federation: Federation, round_: Round, kind: str) -> None:
    """The round transition that commits with a job's result."""
    state = STATE_AFTER_JOB[kind]
    if kind == "publish":
        open_round(session, federation, round_)
        return
    move(session, round_, state)
    if state in JOB_FOR_STATE:
        enqueue(session, round_=round_, kind=JOB_FOR_STATE[state])
    elif state == "completed":
        start_next_round(session, federation)


def start_next_round(session: Session, federation: Federation) -> None:
    """After a completed round: the next one, or the federation is done. A paused federation waits."""
    if federation.state != "running":
        return
    config = config_of(federation)
    if federation.current_round >= config.rounds:
        federation.state = "completed"
        return
    create_round(session, federation, federation.current_round + 1)


def fail_round(session: Session, federation: Federation, round_: Round, reason: str) -> None:
    round_.failure_reason = reason
    move(session, round_, "failed", reason)
    if federation.state in ("running", "paused"):  # a stopped federation stays stopped
        federation.state = "failed"
        federation.failure_reason = f"round {round_.number}: {reason}"
