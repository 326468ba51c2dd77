"""The API tokens `iacorch serve` accepts: `iacorch token create/list/revoke`."""

from __future__ import annotations

import time
from datetime import datetime

import click

from iacorch.cli.session import open_store, store_option


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


COMMANDS = [token]
