"""Dashboard login sessions: an HMAC-signed cookie value, checked in constant time.

Why a signed value and not a session table in memory: coordinator replicas are stateless behind a
load balancer and restart freely (DESIGN.md section 7). A signed value is accepted by every replica
that runs with the same admin token and survives a restart, with no new table and no sticky
sessions. The signing key is derived from the admin token, so rotating the token ends every
session. The value carries 128 random bits (its id) and its expiry; nothing in it is secret.

Logout puts the session's id on this process's deny list until the session would have expired, so
a copied cookie stops working at logout here; another replica honours it until its expiry (at most
``ttl_s``), the price of keeping replicas stateless.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

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
        self, admin_token_hash: str, *, ttl_s: int = DEFAULT_TTL_S, clock: Callable[[], float] = time.time
    ) -> None:
        # The admin token's hash never leaves memory (the token itself is the secret admins hold).
        self._key = hmac.new(b"creamfl dashboard session key v1", admin_token_hash.encode(), hashlib.sha256).digest()
        self._ttl_s = ttl_s
        self._clock = clock
        self._revoked: dict[str, int] = {}  # session id -> its expiry
        self._lock = threading.Lock()

    def issue(self) -> IssuedSession:
        expires = int(self._clock()) + self._ttl_s
        session_id = secrets.token_urlsafe(16)
        body = f"{_VERSION}.{expires}.{session_id}"
        return IssuedSession(value=f"{body}.{self._mac(body)}", expires_at=expires, max_age=self._ttl_s)

    def verify(self, value: str) -> bool:
        parsed = self._parse(value)
        if parsed is None:
            return False
        expires, session_id = parsed
        if expires <= self._clock():
            return False
        with self._lock:
            return session_id not in self._revoked

    def revoke(self, value: str) -> None:
        """Logout: this (valid) session is refused from now on; garbage and expired values are ignored."""
        parsed = self._parse(value)
        if parsed is None:
            return
        expires, session_id = parsed
        now = self._clock()
        with self._lock:
            for stale in [sid for sid, until in self._revoked.items() if until <= now]:
                del self._revoked[stale]
            if expires > now:
                self._revoked[session_id] = expires

    def _mac(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()

    def _parse(self, value: str) -> tuple[int, str] | None:
        """(expiry, session id) of an authentic value, else None; the MAC is compared in constant time."""
        if len(value) > 256 or not value.isascii():  # compare_digest takes ASCII str only
            return None
        parts = value.split(".")
        if len(parts) != 4 or parts[0] != _VERSION:
            return None
        version, expires, session_id, mac = parts
        if not hmac.compare_digest(self._mac(f"{version}.{expires}.{session_id}"), mac):
            return None
        try:
            return int(expires), session_id
        except ValueError:  # pragma: no cover - only a value we signed reaches here
            return None
