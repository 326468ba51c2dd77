"""API tokens: shown once, stored as a hash, refused when unknown, revoked or expired."""

from __future__ import annotations

import pytest

from iacorch.engine.tokens import authenticate, issue_token, revoke_token, token_hash
from iacorch.errors import AuthenticationError, UsageError
from iacorch.store.memory import MemoryStore


def test_a_token_proves_its_user_until_it_expires() -> None:
    store = MemoryStore()
    issued = issue_token(store, "alice", now=100.0, expires_in=60.0, actor="admin")
    assert issued.secret.startswith("iacorch_") and len(issued.secret) > 40
    [stored] = store.list_tokens()
    assert stored.token_hash == token_hash(issued.secret) != issued.secret
    assert authenticate(store, issued.secret, now=159.0).user == "alice"
    with pytest.raises(AuthenticationError, match="expired"):
        authenticate(store, issued.secret, now=160.0)
    [audit] = store.audit_entries()
    assert audit.kind == "token_created" and issued.secret not in str(audit.data)


def test_a_revoked_or_unknown_token_is_refused() -> None:
    store = MemoryStore()
    issued = issue_token(store, "bob", now=0.0, expires_in=None, actor="admin")
    assert authenticate(store, issued.secret, now=1e12).user == "bob"   # no expiry
    revoke_token(store, issued.record.id, now=5.0, actor="admin")
    with pytest.raises(AuthenticationError, match="revoked"):
        authenticate(store, issued.secret, now=6.0)
    for wrong in ("", "iacorch_guess", issued.record.token_hash, issued.secret + "x"):
        with pytest.raises(AuthenticationError, match="unknown"):
            authenticate(store, wrong, now=6.0)
    with pytest.raises(UsageError, match="no token"):
        revoke_token(store, "tok-missing", now=7.0, actor="admin")
    with pytest.raises(UsageError, match="not a user name"):
        issue_token(store, "two words", now=0.0, expires_in=None, actor="admin")
