"""Dashboard session values: signed, expiring, revocable, bound to the admin token."""

from __future__ import annotations

from coordinator_service.dashboard.sessions import DashboardSessions
from coordinator_service.security import token_hash

ADMIN_HASH = token_hash("admin-test-token-0123456789")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_an_issued_session_verifies_until_it_expires() -> None:
    # Prepare
    clock = Clock()
    sessions = DashboardSessions(ADMIN_HASH, ttl_s=60, clock=clock)
    issued = sessions.issue()

    # Execute
    fresh = sessions.verify(issued.value)
    clock.now += 59
    almost = sessions.verify(issued.value)
    clock.now += 1
    expired = sessions.verify(issued.value)

    # Assert
    assert (fresh, almost, expired) == (True, True, False)
    assert issued.max_age == 60 and issued.expires_at == 1_000_060


def test_a_changed_value_or_another_admin_token_is_refused() -> None:
    # Prepare
    sessions = DashboardSessions(ADMIN_HASH)
    value = sessions.issue().value
    version, expires, session_id, mac = value.split(".")
    later = str(int(expires) + 10**6)
    other_token = DashboardSessions(token_hash("another-admin-token-0123456789"))

    # Execute
    verdicts = {
        "genuine": sessions.verify(value),
        "longer expiry": sessions.verify(f"{version}.{later}.{session_id}.{mac}"),
        "other id": sessions.verify(f"{version}.{expires}.x{session_id[1:]}.{mac}"),
        "mac flipped": sessions.verify(value[:-1] + ("1" if value.endswith("0") else "0")),
        "no mac": sessions.verify(f"{version}.{expires}.{session_id}"),
        "non-ascii": sessions.verify(value[:-1] + "é"),
        "empty": sessions.verify(""),
        "other admin token": other_token.verify(value),
    }

    # Assert
    assert verdicts == {name: name == "genuine" for name in verdicts}


def test_logout_revokes_only_that_session() -> None:
    # Prepare
    sessions = DashboardSessions(ADMIN_HASH)
    first, second = sessions.issue().value, sessions.issue().value

    # Execute
    sessions.revoke(first)
    sessions.revoke("garbage")

    # Assert
    assert first != second
    assert not sessions.verify(first)
    assert sessions.verify(second)
