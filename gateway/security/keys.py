"""API key format and hashing: ``kpigw_<key id>_<secret>``; the store keeps only ``sha256(secret)``.

The secret carries 256 bits from :func:`secrets.token_urlsafe`, so a fast hash is enough (no password
stretching needed); comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "kpigw_"


def new_key() -> tuple[str, str]:
    """A fresh ``(key_id, full key)``; show the full key once, store :func:`hash_secret` of its secret."""
    key_id = secrets.token_hex(6)
    return key_id, f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def split_key(key: str) -> tuple[str, str] | None:
    if not key.startswith(PREFIX):
        return None
    key_id, sep, secret = key.removeprefix(PREFIX).partition("_")
    return (key_id, secret) if sep and key_id and secret else None


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)
