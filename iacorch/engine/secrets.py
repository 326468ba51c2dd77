"""Secrets are resolved once per run, from the environment, files or AWS, and never stored."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from iacorch.errors import IacorchError, Location, UsageError


def resolve_secrets(specs: Mapping[str, Any], root: Path,
                    locations: Mapping[str, Location] | None = None) -> dict[str, str]:
    """name -> value for every declared secret; a missing one stops the run before it starts.

    `locations` (Plan.secret_locations) says where each secret is declared: errors point there.
    """
    values: dict[str, str] = {}
    aws_clients: dict[tuple[str, str | None], Any] = {}
    for name, spec in specs.items():
        try:
            if spec.env is not None:
                values[name] = _from_env(name, spec.env)
            elif spec.file is not None:
                values[name] = _from_file(name, (root / spec.file).expanduser())
            else:
                values[name] = _from_aws(name, spec, aws_clients)
        except IacorchError as exc:
            if exc.location is None and locations and name in locations:
                exc.location = locations[name]
            raise
    return values


def _from_env(name: str, variable: str) -> str:
    value = os.environ.get(variable)
    if value is None:
        raise UsageError(f"secret `{name}` comes from ${variable}, which is not set",
                         hint=f"export {variable}=... before running")
    return value


def _from_file(name: str, path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise UsageError(f"secret `{name}` comes from {path}, which cannot be read "
                         f"({exc.strerror})", hint="check the path and its permissions") from None


def _from_aws(name: str, spec: Any, clients: dict[tuple[str, str | None], Any]) -> str:
    from .aws_clients import describe_aws_error, is_aws_error
    from .aws_secrets import SecretShapeError, fetch_aws_secret

    where = (f"AWS Secrets Manager secret {spec.aws_secretsmanager}"
             if spec.aws_secretsmanager is not None else f"SSM parameter {spec.aws_ssm}")
    try:
        return fetch_aws_secret(spec, clients)
    except SecretShapeError as exc:
        raise UsageError(f"secret `{name}` comes from {where}, but {exc}",
                         hint="check `key:` against the fields the secret holds") from None
    except Exception as exc:
        if not is_aws_error(exc):
            raise
        what, hint = describe_aws_error(exc)
        raise UsageError(f"secret `{name}` comes from {where}, which cannot be read: {what}",
                         hint=hint) from None
