"""pulumi-site: a tiny static site as local files, managed by Pulumi without any cloud.

The files are resources of a dynamic provider defined here, so Pulumi downloads no
plugin: the pulumi Python package runs them. Refresh reads each file back, so an edited
or deleted file shows up as drift.

Config: `title`, `site_dir` (where the files go) and `admin_token` (a secret).
"""

from __future__ import annotations

import hashlib
import html
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import (
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)


class LocalFileProvider(ResourceProvider):
    """A file with exact content. Defined in __main__ so that it is pickled by value."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        _write(props["path"], props["content"])
        return CreateResult(id_=props["path"], outs=_outs(props))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        try:
            content = Path(id_).read_text(encoding="utf-8")
        except FileNotFoundError:
            return ReadResult(id_="", outs={})          # a blank id: the file is gone
        return ReadResult(id_=id_, outs=_outs({**props, "content": content}))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changed = [key for key in ("path", "content") if olds.get(key) != news.get(key)]
        return DiffResult(changes=bool(changed),
                          replaces=["path"] if "path" in changed else [])

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        _write(news["path"], news["content"])
        return UpdateResult(outs=_outs(news))

    def delete(self, id_: str, _props: dict[str, Any]) -> None:
        Path(id_).unlink(missing_ok=True)


def _write(path: str, content: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content, encoding="utf-8")


def _outs(props: dict[str, Any]) -> dict[str, Any]:
    return {**props, "sha256": hashlib.sha256(props["content"].encode()).hexdigest()}


class LocalFile(Resource, module="site", name="LocalFile"):
    """A local file: `path` (absolute) and `content`."""

    path: pulumi.Output[str]
    sha256: pulumi.Output[str]

    def __init__(self, name: str, path: str, content: pulumi.Input[str],
                 opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(LocalFileProvider(), name,
                         {"path": path, "content": content, "sha256": None}, opts)


config = pulumi.Config()
title = config.get("title") or "Hello from Pulumi"
site_dir = Path(config.require("site_dir")).expanduser().resolve()
admin_token = config.require_secret("admin_token")
stack = pulumi.get_stack()

index = LocalFile("index", str(site_dir / "index.html"), (
    f"<!doctype html>\n<title>{html.escape(title)}</title>\n"
    f"<h1>{html.escape(title)}</h1>\n<p>stack {html.escape(stack)}</p>\n"))
# Content derived from a secret is a secret: Pulumi keeps it encrypted in the state.
admin = LocalFile("admin", str(site_dir / "admin.html"), admin_token.apply(
    lambda token: f"<!doctype html>\n<title>admin</title>\n<p>token {html.escape(token)}</p>\n"))

pulumi.export("site_dir", str(site_dir))
pulumi.export("index_path", index.path)
pulumi.export("url", index.path.apply(lambda path: Path(path).as_uri()))
pulumi.export("index_sha256", index.sha256)
pulumi.export("admin_url", pulumi.Output.secret(
    pulumi.Output.all(admin.path, admin_token).apply(
        lambda args: f"{Path(args[0]).as_uri()}?token={args[1]}")))
