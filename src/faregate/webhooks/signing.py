"""Lago's webhook wire format: the envelope, the HMAC-SHA256 signature and the headers.

A receiver verifies a delivery exactly as it verifies Lago's:
`base64(HMAC-SHA256(hmac_key, raw_body)) == X-Lago-Signature`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import orjson

ALGORITHM = "hmac"


def envelope(
    webhook_type: str, object_type: str, obj: dict[str, Any], organization_id: str
) -> bytes:
    """The body Lago sends: `{webhook_type, object_type, organization_id, <object_type>: {…}}`."""
    return orjson.dumps(
        {
            "webhook_type": webhook_type,
            "object_type": object_type,
            "organization_id": organization_id,
            object_type: obj,
        }
    )


def signature(hmac_key: str, body: bytes) -> str:
    digest = hmac.new(hmac_key.encode(), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify(hmac_key: str, body: bytes, received: str) -> bool:
    return hmac.compare_digest(signature(hmac_key, body), received)


def headers(hmac_key: str, body: bytes, unique_key: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "faregate-webhooks",
        "X-Lago-Signature": signature(hmac_key, body),
        "X-Lago-Signature-Algorithm": ALGORITHM,
        "X-Lago-Unique-Key": unique_key,
    }


def derived_hmac_key(secret: str) -> str:
    """A stable organization key derived (one-way) from the server's secret key."""
    return hmac.new(secret.encode(), b"faregate webhooks hmac key", hashlib.sha256).hexdigest()
