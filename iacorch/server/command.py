"""`iacorch serve`: the command that starts the server (listed by the CLI's command table).

It lives with the server so that the CLI never imports it; FastAPI and uvicorn load only
when the command runs, so the rest of the CLI works without the `server` extra.
"""

from __future__ import annotations

from pathlib import Path

import click

from iacorch.errors import ToolMissingError, UsageError

SERVER_EXTRA_HINT = "install the server extra: pip install 'iacorch[server]'"


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (keep it on loopback behind a reverse proxy).")
@click.option("--port", default=8470, show_default=True, type=click.IntRange(0, 65535))
@click.option("--store", "store_url", metavar="URL", envvar="IACORCH_STORE",
              help="State store, as for every command. Default: .iacorch/state.db.")
@click.option("--project", type=click.Path(file_okay=False, exists=True),
              help="Project root that runbook paths are inside. Default: the current project.")
@click.option("--schedule", "schedules", multiple=True, metavar="RUNBOOK",
              help="Run this runbook's `schedules:` from the server (repeatable).")
@click.option("--listen", "listen", multiple=True, metavar="RUNBOOK",
              help="Start runs from this runbook's `sqs:` and `s3:` triggers, as "
                   "`iacorch listen` does (repeatable; the [aws] extra).")
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
          schedules: tuple[str, ...], listen: tuple[str, ...],
          trust_proxy_header: str | None,
          trusted_proxies: tuple[str, ...], max_body: int, secure_cookies: bool,
          workers: int) -> None:
    """Serve the web page and JSON API for runs, gates and webhook triggers."""
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
                              workers=workers, schedules=schedules, listen=listen,
                              secure_cookies=secure_cookies))
    click.echo(f"iacorch serve: http://{host}:{port}/ (project {root})", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                proxy_headers=False, server_header=False)


COMMANDS = [serve]
