"""Encryption at rest for provider credentials stored in the database (Fernet, keyed from
FAREGATE_SECRET_KEY). Plaintext credentials never leave this module except to an adapter."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

from faregate.errors import FaregateError


class SecretKeyError(FaregateError):
    status = 500
    code = "secret_key_error"


def _fernet(secret_key: str | None) -> Fernet:
    if not secret_key:
        raise SecretKeyError("FAREGATE_SECRET_KEY must be set to store provider credentials.")
    digest = hashlib.sha256(secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt(secret_key: str | None, plaintext: str) -> str:
    return _fernet(secret_key).encrypt(plaintext.encode()).decode()


def decrypt(secret_key: str | None, ciphertext: str) -> str:
    try:
        return _fernet(secret_key).decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        raise SecretKeyError(
            "Stored credential cannot be decrypted with FAREGATE_SECRET_KEY."
        ) from None
