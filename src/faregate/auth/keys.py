"""API key format and hashing. A key is `fg_<prefix>_<secret>`: the prefix finds the row,
the SHA-256 of the whole key proves it. The key itself is never stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "fg_"
_PREFIX_LEN = 10
_SECRET_LEN = 32


def generate_key() -> tuple[str, str, str]:
    """Return (key, prefix, key_hash). Show `key` once; store only prefix and hash."""
    prefix = secrets.token_hex(_PREFIX_LEN // 2)
    secret = secrets.token_urlsafe(_SECRET_LEN)[:_SECRET_LEN].replace("_", "x").replace("-", "y")
    key = f"{KEY_PREFIX}{prefix}_{secret}"
    return key, prefix, hash_key(key)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_prefix(key: str) -> str | None:
    if not key.startswith(KEY_PREFIX):
        return None
    prefix, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    if not sep or len(prefix) != _PREFIX_LEN or not secret:
        return None
    return prefix


def verify(key: str, key_hash: str) -> bool:
    return hmac.compare_digest(hash_key(key), key_hash)


def redact(key: str) -> str:
    """What may appear in a log: the prefix only."""
    prefix = parse_prefix(key)
    return f"{KEY_PREFIX}{prefix}_…" if prefix else "…"
