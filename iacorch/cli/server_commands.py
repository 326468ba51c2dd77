"""`iacorch serve` and the API tokens it accepts (`iacorch token create/list/revoke`)."""

from __future__ import annotations

import time
from datetime import datetime

import click

from iacorch.cli.session import open_store, store_option
from iacorch.errors import ToolMissingError

SERVER_EXTRA_HINT = "install the server extra: pip install 'iacorch[server]'"


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (keep it on loopback behind a reverse proxy).")
@click.option("--port", default=8470, show_default=True, type=click.IntRange(0, 65535))
@store_option
@click.option("--project", type=click.Path(file_okay=False, exists=True),
              help="Project root that runbook paths are inside. Default: the current project.")
@click.option("--schedule", "schedules", multiple=True, metavar="RUNBOOK",
              help="Run this runbook's `schedules:` from the server (repeatable).")
@click.option("--trust-proxy-header", metavar="HEADER",
              help="Take the user from this header (e.g. X-Forwarded-User), set by an "
                   "authenticating reverse proxy; only from --trusted-proxy addresses.")
@click.option("--trusted-proxy", "trusted_proxies", multiple=True, metavar="ADDRESS",
              help="Address or network of the reverse proxy (repeatable).")
@click.option("--max-body", default=1 << 20, show_default=True, type=click.IntRange(1024),
              help="Largest request body accepted, in bytes.")
@click.option("--secure-cookies", is_flag=True,
              help="Mark the session cookie Secure (https only): behind a TLS-terminating proxy.")
@click.option("--workers", default=16, show_default=True, type=click.IntRange(1, 256),
              help="Runs driven at once.")
def serve(host: str, port: int, store_url: str | None, project: str | None,
          schedules: tuple[str, ...], trust_proxy_header: str | None,
          trusted_proxies: tuple[str, ...], max_body: int, secure_cookies: bool,
          workers: int) -> None:
    """Serve the web page and JSON API for runs, gates and webhook triggers."""
    from pathlib import Path

    from iacorch.errors import UsageError
    from iacorch.project import project_root

    if trust_proxy_header and not trusted_proxies:
        raise UsageError("--trust-proxy-header needs --trusted-proxy",
                         hint="name the address of the proxy that sets the header")
    try:
        import uvicorn

        from iacorch.server.app import Settings, create_app
        from iacorch.server.auth import ProxyTrust
    except ImportError as exc:
        raise ToolMissingError(f"`iacorch serve` needs {exc.name}, which is not installed",
                               hint=SERVER_EXTRA_HINT) from None
    try:
        trust = ProxyTrust.parse(trust_proxy_header, trusted_proxies)
    except ValueError as exc:
        raise UsageError(f"--trusted-proxy: {exc}", hint="give an address or a network, "
                         "e.g. 127.0.0.1 or 10.0.0.0/8") from None
    root = Path(project).resolve() if project else project_root()
    app = create_app(Settings(store_url=store_url, root=root, trust=trust, max_body=max_body,
                              workers=workers, schedules=schedules,
                              secure_cookies=secure_cookies))
    click.echo(f"iacorch serve: http://{host}:{port}/ (project {root})", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                proxy_headers=False, server_header=False)


@click.group()
def token() -> None:
    """API tokens of `iacorch serve` (only a hash of each is stored)."""


@token.command("create")
@click.argument("user")
@click.option("--expires", metavar="DURATION", help="e.g. 30d or 12h; default: never.")
@store_option
def token_create(user: str, expires: str | None, store_url: str | None) -> None:
    """Create a token for USER and print it once."""
    from iacorch.engine.runtime import current_identity
    from iacorch.engine.tokens import issue_token
    from iacorch.model.fields import parse_duration

    try:
        expires_in = parse_duration(expires) if expires else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--expires") from None
    issued = issue_token(open_store(store_url), user, now=time.time(), expires_in=expires_in,
                         actor=current_identity())
    click.echo(issued.secret)
    until = _when(issued.record.expires_at) if issued.record.expires_at else "until revoked"
    click.echo(f"token {issued.record.id} for {user}, valid {until}; shown once: keep it "
               "in a secret store", err=True)


@token.command("list")
@store_option
def token_list(store_url: str | None) -> None:
    """List tokens: id, user, created, expires, revoked (never the tokens themselves)."""
    tokens = open_store(store_url).list_tokens()
    if not tokens:
        click.echo("no tokens yet")
        return
    click.echo(f"{'ID':13} {'USER':16} {'CREATED':19} {'EXPIRES':19} REVOKED")
    for record in tokens:
        click.echo(f"{record.id:13} {record.user[:16]:16} {_when(record.created_at):19} "
                   f"{_when(record.expires_at):19} {_when(record.revoked_at)}")


@token.command("revoke")
@click.argument("token_id", metavar="ID")
@store_option
def token_revoke(token_id: str, store_url: str | None) -> None:
    """Revoke a token by its id: requests carrying it get 401 from now on."""
    from iacorch.engine.runtime import current_identity
    from iacorch.engine.tokens import revoke_token

    record = revoke_token(open_store(store_url), token_id, now=time.time(),
                          actor=current_identity())
    click.echo(f"revoked {record.id} of {record.user}")


def _when(timestamp: float | None) -> str:
    return "-" if timestamp is None else datetime.fromtimestamp(timestamp).strftime(
        "%Y-%m-%d %H:%M:%S")


COMMANDS = [serve, token]
