"""Who is asking, and how it was proven: an API token, a signed session cookie, or a
header set by a trusted reverse proxy. Anonymous requests get 401.

Browser POSTs (cookie sessions) must carry the session's CSRF token; a request with a
bearer token cannot be forged by another site, so it needs none.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

from iacorch.engine.tokens import authenticate, authenticate_digest, token_hash
from iacorch.errors import AuthenticationError
from iacorch.store.base import Store

SESSION_COOKIE = "iacorch_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_SECONDS = 12 * 3600
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass(frozen=True, slots=True)
class Identity:
    """A proven user, and the way it was proven (recorded in the audit log as `via`)."""

    user: str
    via: str
    csrf: str | None = None       # the session's CSRF token (cookie sessions only)


@dataclass(frozen=True)
class ProxyTrust:
    """`--trust-proxy-header NAME` accepted only from `--trusted-proxy` addresses."""

    header: str | None = None
    proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()

    @classmethod
    def parse(cls, header: str | None, proxies: Sequence[str]) -> ProxyTrust:
        return cls(header, tuple(ipaddress.ip_network(p, strict=False) for p in proxies))

    def user_from(self, client: str | None, headers: Any) -> str | None:
        """The header's user when the request came from a trusted proxy, else None."""
        if self.header is None or client is None:
            return None
        try:
            address = ipaddress.ip_address(client)
        except ValueError:
            return None
        if not any(address in network for network in self.proxies):
            return None
        user = headers.get(self.header, "").strip()
        return user or None


def session_key(state_dir: Path) -> str:
    """The key that signs session cookies, kept beside state.db (mode 600)."""
    path = state_dir / "server-session.key"
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        key = secrets.token_urlsafe(32)
        with open(path, "x", encoding="ascii", opener=lambda p, f: _private(p, f)) as handle:
            handle.write(key)
        return key


def _private(path: str, flags: int) -> int:
    import os

    return os.open(path, flags, 0o600)


class Authenticator:
    """Turns a request's credentials into an Identity, or AuthenticationError."""

    def __init__(self, store: Store, key: str, trust: ProxyTrust) -> None:
        self.store, self.trust = store, trust
        self.sessions = URLSafeTimedSerializer(key, salt="iacorch-session")

    def identify(self, method: str, client: str | None, headers: Any,
                 cookies: Any, form_csrf: str | None = None) -> Identity:
        authorization = headers.get("authorization", "")
        if authorization:
            scheme, _, secret = authorization.partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                raise AuthenticationError("the Authorization header must be `Bearer TOKEN`")
            record = authenticate(self.store, secret.strip(), now=time.time())
            return Identity(record.user, f"api token {record.id}")
        proxied = self.trust.user_from(client, headers)
        session = self._session(cookies.get(SESSION_COOKIE), proxied)
        if session is None and proxied is not None and method in _SAFE_METHODS:
            return Identity(proxied, f"proxy header {self.trust.header} from {client}")
        if session is None:
            raise AuthenticationError("sign in: send `Authorization: Bearer TOKEN`, or log in "
                                      "on the web page", hint="create a token with "
                                      "`iacorch token create USER`")
        if method not in _SAFE_METHODS:
            given = headers.get(CSRF_HEADER) or form_csrf or ""
            if not session.csrf or not hmac.compare_digest(given, session.csrf):
                raise AuthenticationError("missing or wrong CSRF token",
                                          hint="reload the page and try again")
        return session

    def new_session(self, user: str, via: str, token_digest: str | None) -> tuple[str, str]:
        """A signed cookie value for `user` and the fresh CSRF token it carries."""
        csrf = secrets.token_urlsafe(24)
        return self.sessions.dumps({"user": user, "via": via, "token": token_digest,
                                    "csrf": csrf}), csrf

    def login_with_token(self, secret: str) -> str:
        """A session cookie value for the owner of an API token."""
        record = authenticate(self.store, secret.strip(), now=time.time())
        cookie, _ = self.new_session(record.user, f"session cookie (api token {record.id})",
                                     token_hash(secret.strip()))
        return cookie

    def _session(self, cookie: str | None, proxied: str | None) -> Identity | None:
        """The cookie's session while it holds: a token session until its token is revoked
        or expires, a proxy session while the trusted proxy vouches for the same user."""
        if not cookie:
            return None
        try:
            data = self.sessions.loads(cookie, max_age=SESSION_SECONDS)
        except BadSignature:
            return None
        digest = data.get("token")
        if digest is None:
            return None if proxied != data["user"] else Identity(data["user"], data["via"],
                                                                  data["csrf"])
        try:
            authenticate_digest(self.store, digest, now=time.time())
        except AuthenticationError:
            return None
        return Identity(data["user"], data["via"], data["csrf"])
