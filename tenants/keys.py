"""API keys: generated with `secrets`, stored only as a SHA-256 digest, compared
in constant time. Knows nothing about tenants or storage."""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "rs-"


def new_key() -> str:
    """A fresh key: `rs-` and 32 random bytes, URL-safe (printed once)."""
    return PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The stored form: SHA-256 hex. Keys carry 256 bits of entropy, so an
    unsalted fast hash is enough (as GitHub and Stripe tokens are stored)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_matches(key: str, stored_hash: str) -> bool:
    """True when `key` hashes to `stored_hash` (constant time)."""
    return hmac.compare_digest(hash_key(key), stored_hash)


def hint(key: str) -> str:
    """What may be shown of a key: its prefix and last four characters."""
    return f"{key[:5]}...{key[-4:]}"
