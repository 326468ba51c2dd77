"""The server's identity rules without HTTP: proxy trust, sessions and CSRF, signatures."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from iacorch.engine.tokens import issue_token, revoke_token
from iacorch.errors import AuthenticationError
from iacorch.server.auth import CSRF_HEADER, SESSION_COOKIE, Authenticator, ProxyTrust
from iacorch.server.hooks import signature_ok
from iacorch.store.memory import MemoryStore


def test_a_proxy_header_counts_only_from_trusted_addresses() -> None:
    trust = ProxyTrust.parse("X-Forwarded-User", ["10.0.0.0/8", "127.0.0.2"])
    header = {"X-Forwarded-User": "alice"}
    assert trust.user_from("10.1.2.3", header) == "alice"
    assert trust.user_from("127.0.0.2", header) == "alice"
    assert trust.user_from("127.0.0.1", header) is None
    assert trust.user_from("10.1.2.3", {}) is None
    assert trust.user_from("not-an-address", header) is None
    assert ProxyTrust().user_from("10.1.2.3", header) is None   # not enabled


def test_a_session_needs_its_csrf_token_on_posts_and_ends_with_its_token() -> None:
    store = MemoryStore()
    issued = issue_token(store, "alice", now=0.0, expires_in=None, actor="admin")
    auth = Authenticator(store, "key", ProxyTrust())
    cookies = {SESSION_COOKIE: auth.login_with_token(issued.secret)}
    who = auth.identify("GET", "127.0.0.1", {}, cookies)
    assert who.user == "alice" and who.via.startswith("session cookie (api token tok-")
    assert who.csrf
    with pytest.raises(AuthenticationError, match="CSRF"):
        auth.identify("POST", "127.0.0.1", {}, cookies)
    with pytest.raises(AuthenticationError, match="CSRF"):
        auth.identify("POST", "127.0.0.1", {CSRF_HEADER: who.csrf + "x"}, cookies)
    assert auth.identify("POST", "127.0.0.1", {CSRF_HEADER: who.csrf}, cookies).user == "alice"
    assert auth.identify("POST", "127.0.0.1", {}, cookies, form_csrf=who.csrf).user == "alice"
    forged = {SESSION_COOKIE: cookies[SESSION_COOKIE][:-2] + "xx"}
    with pytest.raises(AuthenticationError):
        auth.identify("GET", "127.0.0.1", {}, forged)
    revoke_token(store, issued.record.id, now=1.0, actor="admin")
    with pytest.raises(AuthenticationError):
        auth.identify("GET", "127.0.0.1", {}, cookies)


def test_a_webhook_signature_is_the_hmac_of_the_body() -> None:
    body = b'{"ref": "main"}'
    good = "sha256=" + hmac.new(b"secret", body, hashlib.sha256).hexdigest()
    assert signature_ok("secret", body, good)
    assert not signature_ok("other", body, good)
    assert not signature_ok("secret", body + b" ", good)
    assert not signature_ok("secret", body, good.upper())
    assert not signature_ok("secret", body, "")
    assert not signature_ok("secret", body, "sha256=\u00e9")
