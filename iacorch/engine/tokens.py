"""API tokens: issued once to a user, kept only as a hash, checked on every request.

The token text is shown once (`iacorch token create`); the store keeps its SHA-256,
so a copy of state.db lets nobody act as anyone. A token is refused when unknown,
revoked or expired, and issuing and revoking are audited.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from iacorch.errors import AuthenticationError, UsageError
from iacorch.store.base import Store, TokenRecord

PREFIX = "iacorch_"   # makes a leaked token easy to recognise (secret scanners)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A new token: its record, and the secret text shown once."""

    record: TokenRecord
    secret: str


def token_hash(secret: str) -> str:
    """What the store keeps of a token."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def issue_token(store: Store, user: str, *, now: float, expires_in: float | None,
                actor: str) -> IssuedToken:
    """A new token for `user`, valid for `expires_in` seconds (None: until revoked)."""
    if not user.strip() or any(ch.isspace() for ch in user):
        raise UsageError(f"{user!r} is not a user name", hint="give one word, e.g. alice")
    secret = PREFIX + secrets.token_urlsafe(32)
    record = TokenRecord(id="tok-" + secrets.token_hex(4), user=user,
                         token_hash=token_hash(secret), created_at=now,
                         expires_at=None if expires_in is None else now + expires_in)
    with store.transaction(durable=True):
        store.add_token(record)
        store.append_audit("token_created", actor=actor,
                           data={"token": record.id, "user": user,
                                 "expires_at": record.expires_at})
    return IssuedToken(record, secret)


def revoke_token(store: Store, token_id: str, *, now: float, actor: str) -> TokenRecord:
    """Revoke a token by its id; requests carrying it are refused from now on."""
    with store.transaction(durable=True):
        record = store.revoke_token(token_id, now)
        if record is None:
            known = ", ".join(t.id for t in store.list_tokens()) or "(none)"
            raise UsageError(f"no token with id {token_id!r}", hint=f"tokens: {known}")
        store.append_audit("token_revoked", actor=actor,
                           data={"token": record.id, "user": record.user})
    return record


def authenticate(store: Store, secret: str, *, now: float) -> TokenRecord:
    """The token record a request's secret belongs to, or AuthenticationError."""
    return authenticate_digest(store, token_hash(secret) if secret.startswith(PREFIX) else "",
                               now=now)


def authenticate_digest(store: Store, digest: str, *, now: float) -> TokenRecord:
    """The valid token whose hash is `digest` (as a session remembers it), or
    AuthenticationError: unknown, revoked or expired."""
    record = store.token_by_hash(digest) if digest else None
    if record is None:
        raise AuthenticationError("unknown API token",
                                  hint="create one with `iacorch token create USER`")
    if record.revoked_at is not None:
        raise AuthenticationError(f"API token {record.id} was revoked",
                                  hint="ask for a new one (`iacorch token create`)")
    if record.expires_at is not None and now >= record.expires_at:
        raise AuthenticationError(f"API token {record.id} expired",
                                  hint="ask for a new one (`iacorch token create`)")
    return record
