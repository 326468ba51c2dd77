"""Secret values from AWS Secrets Manager and SSM Parameter Store (the `[aws]` extra)."""

from __future__ import annotations

import json
import re
from typing import Any

from iacorch.model.runbook import SecretSpec

from .aws_clients import aws_client

# Secrets Manager version ids are UUIDs; anything else under `version:` is a staging label.
_VERSION_ID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                         r"[0-9a-fA-F]{12}$")


class SecretShapeError(ValueError):
    """The secret exists but does not hold what the runbook asks of it."""


def fetch_aws_secret(spec: SecretSpec, clients: dict[tuple[str, str | None], Any]) -> str:
    """The value of an `aws_secretsmanager` or `aws_ssm` secret.

    `clients` caches one client per (service, region) for the secrets of one run.
    Raises botocore's exceptions (see aws_clients.describe_aws_error) or SecretShapeError.
    """
    if spec.aws_ssm is not None:
        ssm = _client(clients, "ssm", spec.region)
        answer = ssm.get_parameter(Name=spec.aws_ssm, WithDecryption=True)
        return str(answer["Parameter"]["Value"])
    assert spec.aws_secretsmanager is not None
    request: dict[str, str] = {"SecretId": spec.aws_secretsmanager}
    if spec.version is not None:
        request["VersionId" if _VERSION_ID.match(spec.version) else "VersionStage"] = \
            spec.version
    answer = _client(clients, "secretsmanager", spec.region).get_secret_value(**request)
    text = answer.get("SecretString")
    if text is None:
        try:
            text = bytes(answer["SecretBinary"]).decode("utf-8")
        except UnicodeDecodeError:
            raise SecretShapeError("it is binary, not UTF-8 text") from None
    return text if spec.key is None else _field(text, spec.key)


def _field(text: str, key: str) -> str:
    try:
        fields = json.loads(text)
    except ValueError:
        raise SecretShapeError(f"it is not JSON, so it has no field `{key}`") from None
    if not isinstance(fields, dict) or key not in fields:
        names = ", ".join(f"`{name}`" for name in sorted(fields)) \
            if isinstance(fields, dict) else "none"
        raise SecretShapeError(f"its JSON has no field `{key}` (fields: {names})")
    value = fields[key]
    return value if isinstance(value, str) else json.dumps(value)


def _client(clients: dict[tuple[str, str | None], Any], service: str,
            region: str | None) -> Any:
    if (service, region) not in clients:
        clients[service, region] = aws_client(service, region)
    return clients[service, region]
