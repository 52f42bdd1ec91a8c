"""Tokens: random, stored only as hashes, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

TOKEN_BYTES = 32


def new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(TOKEN_BYTES)}"


def token_hash(token: str) -> str:
    # Tokens carry 256 random bits, so a plain SHA-256 is enough (no slow KDF needed: nothing to brute-force).
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(token_hash(token), stored_hash)


def load_or_create_admin_token(configured: str | None, data_dir: Path) -> str:
    """``CREAMFL_ADMIN_TOKEN`` if set; else the token in ``<data_dir>/admin-token``, created once with mode 0600."""
    if configured:
        return configured
    path = data_dir / "admin-token"
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    token = new_token("admin")
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return token
