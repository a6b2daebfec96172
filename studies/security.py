"""Secrets of a study: owner password hashes, reader link tokens, the audit hash chain.

* **Owner password**: scrypt (n=2**14, r=8, p=1, 16-byte random salt), stored as
  ``scrypt$n$r$p$salt_hex$hash_hex`` so the cost can be raised later without breaking
  old rows. Compared with :func:`hmac.compare_digest`.
* **Reader token**: ``secrets.token_urlsafe(24)`` (192 random bits) goes into the
  personal link and is shown once; only its SHA-256 is stored. A salted slow hash buys
  nothing for a 192-bit random secret, and an unsalted digest can be looked up by index.
* **Audit chain**: each event's hash covers its content and the previous hash, so
  editing or deleting a past row breaks every later link.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import datetime
from typing import Any

GENESIS_HASH = "0" * 64
MIN_PASSWORD_LENGTH = 8
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def hash_password(password: str) -> str:
    """Salted scrypt hash of an owner password.

    Args:
        password: at least :data:`MIN_PASSWORD_LENGTH` characters.
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"owner password must have at least {MIN_PASSWORD_LENGTH} characters, "
                         f"got {len(password)}")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a hash made by :func:`hash_password` (constant-time compare).

    Args:
        password: candidate password.
        stored: ``scrypt$n$r$p$salt_hex$hash_hex``.
    """
    try:
        scheme, n, r, p, salt_hex, hash_hex = stored.split("$")
    except ValueError:
        raise ValueError("stored password hash is not in the form scrypt$n$r$p$salt$hash") from None
    if scheme != "scrypt":
        raise ValueError(f"unknown password hash scheme {scheme!r}; expected 'scrypt'")
    expected = bytes.fromhex(hash_hex)
    digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), n=int(n), r=int(r), p=int(p),
                            dklen=len(expected))
    return hmac.compare_digest(digest, expected)


def new_token() -> str:
    """A fresh reader link token (192 random bits, URL-safe)."""
    return secrets.token_urlsafe(24)


def hash_token(token: str) -> str:
    """SHA-256 hex digest of a reader token (what the database stores)."""
    return hashlib.sha256(token.encode()).hexdigest()


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces) used inside hashes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def event_hash(*, prev_hash: str, ts: datetime, actor: str, action: str, study_id: int | None,
               payload: dict) -> str:
    """Hash of one audit event chained to its predecessor.

    Args:
        prev_hash: hash of the previous event, :data:`GENESIS_HASH` for the first.
        ts: aware UTC timestamp as stored.
        actor: who acted ("owner", "reader:<id>", "system").
        action: what happened ("submit_rating", ...).
        study_id: study concerned, or None.
        payload: JSON-serialisable details.
    """
    body = canonical_json([prev_hash, ts.isoformat(), actor, action, study_id, payload])
    return hashlib.sha256(body.encode()).hexdigest()
