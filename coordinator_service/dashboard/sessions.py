"""Dashboard login sessions: an HMAC-signed cookie value, accepted while its row in the database lives.

The value carries 128 random bits (its id) and its expiry, signed with a key derived from the admin
token: an altered or forged value, or one signed under another admin token (rotating the token ends
every session), is refused without a database read. Nothing in the value is secret but its MAC.

A login adds a row (the id's hash and the expiry); logout deletes it. The database is the truth, as
for everything else (DESIGN.md section 4): a cookie refused after logout stays refused on every
replica and after any restart, where a deny list in memory would forget it. Expired rows are deleted
whenever a session is issued.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker

from coordinator_service.db.engine import transaction
from coordinator_service.db.models import DashboardSession
from coordinator_service.security import token_hash

SESSION_COOKIE = "creamfl_dashboard"
# Cookie-authenticated writes must carry this header: a cross-site form cannot set it (defence in
# depth on top of SameSite=Strict).
CSRF_HEADER = "x-creamfl-dashboard"
DEFAULT_TTL_S = 12 * 3600
_VERSION = "v1"


@dataclass(frozen=True)
class IssuedSession:
    value: str
    expires_at: int  # unix seconds
    max_age: int  # seconds


class DashboardSessions:
    def __init__(
        self,
        admin_token_hash: str,
        db: sessionmaker[Session],
        *,
        ttl_s: int = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # The admin token's hash never leaves memory (the token itself is the secret admins hold).
        self._key = hmac.new(b"creamfl dashboard session key v1", admin_token_hash.encode(), hashlib.sha256).digest()
        self._db = db
        self._ttl_s = ttl_s
        self._clock = clock

    def issue(self) -> IssuedSession:
        now = int(self._clock())
        expires = now + self._ttl_s
        session_id = secrets.token_urlsafe(16)
        with transaction(self._db) as session:
            session.execute(delete(DashboardSession).where(DashboardSession.expires_at <= _utc(now)))
            session.add(DashboardSession(id_hash=token_hash(session_id), expires_at=_utc(expires)))
        body = f"{_VERSION}.{expires}.{session_id}"
        return IssuedSession(value=f"{body}.{self._mac(body)}", expires_at=expires, max_age=self._ttl_s)

    def verify(self, value: str) -> bool:
        session_id = self._live_id(value)
        if session_id is None:
            return False
        with transaction(self._db) as session:
            return session.get(DashboardSession, token_hash(session_id)) is not None

    def revoke(self, value: str) -> None:
        """Logout: this session is refused from now on; garbage and expired values are ignored."""
        session_id = self._live_id(value)
        if session_id is None:
            return
        with transaction(self._db) as session:
            session.execute(delete(DashboardSession).where(DashboardSession.id_hash == token_hash(session_id)))

    def _mac(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()

    def _live_id(self, value: str) -> str | None:
        """The session id of an authentic, unexpired value, else None; the MAC is compared in constant time."""
        if len(value) > 256 or not value.isascii():  # compare_digest takes ASCII str only
            return None
        parts = value.split(".")
        if len(parts) != 4 or parts[0] != _VERSION:
            return None
        version, expires, session_id, mac = parts
        if not hmac.compare_digest(self._mac(f"{version}.{expires}.{session_id}"), mac):
            return None
        return session_id if int(expires) > self._clock() else None  # only a value we signed gets here


def _utc(unix_seconds: int) -> datetime:
    return datetime.fromtimestamp(unix_seconds, UTC)
