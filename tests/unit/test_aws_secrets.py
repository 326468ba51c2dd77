"""Secrets from AWS Secrets Manager and SSM Parameter Store, against moto's mock_aws."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count

from iacorch.engine.secrets import resolve_secrets
from iacorch.errors import UsageError
from iacorch.model.masking import Masker
from iacorch.model.runbook import SecretSpec
from iacorch.runbook.compiler import compile_runbook

CANARY = "cAnArY-5e1f0c2d"
REGION = "us-east-1"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")   # never ask 169.254.169.254
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    with mock_aws():
        yield


def specs(**declared: dict) -> dict[str, SecretSpec]:
    return {name: SecretSpec.model_validate(spec) for name, spec in declared.items()}


def test_secrets_manager_and_ssm_values_are_resolved_and_masked(aws, tmp_path) -> None:
    secrets = boto3.client("secretsmanager")
    secrets.create_secret(Name="prod/db", SecretString=json.dumps(
        {"user": "app", "password": CANARY, "port": 5432}))
    secrets.create_secret(Name="prod/plain", SecretString="first-" + CANARY)
    secrets.put_secret_value(SecretId="prod/plain", SecretString="second-" + CANARY)
    boto3.client("ssm").put_parameter(Name="/iac/prod/token", Value="tok-" + CANARY,
                                      Type="SecureString")
    boto3.client("ssm", region_name="eu-west-1").put_parameter(
        Name="/iac/eu", Value="eu-" + CANARY, Type="SecureString")
    values = resolve_secrets(specs(
        db={"aws_secretsmanager": "prod/db", "key": "password"},
        port={"aws_secretsmanager": "prod/db", "key": "port"},
        plain={"aws_secretsmanager": "prod/plain"},
        previous={"aws_secretsmanager": "prod/plain", "version": "AWSPREVIOUS"},
        token={"aws_ssm": "/iac/prod/token"},
        eu={"aws_ssm": "/iac/eu", "region": "eu-west-1"}), tmp_path)
    assert values == {"db": CANARY, "port": "5432", "plain": "second-" + CANARY,
                      "previous": "first-" + CANARY, "token": "tok-" + CANARY,
                      "eu": "eu-" + CANARY}
    line = Masker(values.values()).mask(f"connect with {CANARY} and tok-{CANARY}")
    assert CANARY not in line and line.count("***") == 2


def test_a_version_id_selects_that_version(aws, tmp_path) -> None:
    secrets = boto3.client("secretsmanager")
    first = secrets.create_secret(Name="s", SecretString="one")["VersionId"]
    secrets.put_secret_value(SecretId="s", SecretString="two")
    assert resolve_secrets(specs(s={"aws_secretsmanager": "s", "version": first}),
                           tmp_path) == {"s": "one"}


RUNBOOK = """\
version: 1
name: uses-aws
secrets:
  db: {aws_secretsmanager: prod/missing, key: password}
stages:
  s: {kind: deploy, shell: {run: "true"}}
"""


def test_a_missing_secret_names_the_secret_and_its_line(aws, tmp_path) -> None:
    path = tmp_path / "uses-aws.yaml"
    path.write_text(RUNBOOK)
    plan = compile_runbook(path)
    with pytest.raises(UsageError) as raised:
        resolve_secrets(plan.runbook.secrets, plan.root, plan.secret_locations)
    assert raised.value.render() == (
        f"{path}:4:3: error: secret `db` comes from AWS Secrets Manager secret prod/missing, "
        "which cannot be read: not found (ResourceNotFoundException: Secrets Manager can't "
        "find the specified secret.)\n  hint: check the name, the region and the account")


@set_initial_no_auth_action_count(3)
def test_access_denied_is_a_clear_error(aws, tmp_path, monkeypatch) -> None:
    boto3.client("secretsmanager").create_secret(Name="prod/db", SecretString=CANARY)
    iam = boto3.client("iam")
    iam.create_user(UserName="nobody")
    key = iam.create_access_key(UserName="nobody")["AccessKey"]   # the 3rd and last free call
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    with pytest.raises(UsageError, match=r"secret `db` comes from AWS Secrets Manager secret "
                                         r"prod/db, which cannot be read: access denied") as raised:
        resolve_secrets(specs(db={"aws_secretsmanager": "prod/db"}), tmp_path)
    assert "docs/aws.md" in (raised.value.hint or "") and CANARY not in raised.value.render()


def test_no_credentials_is_a_clear_error(aws, tmp_path, monkeypatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UsageError, match="SSM parameter /p, which cannot be read: no AWS "
                                         "credentials were found") as raised:
        resolve_secrets(specs(p={"aws_ssm": "/p"}), tmp_path)
    assert "AWS_PROFILE" in (raised.value.hint or "")


def test_a_missing_json_field_names_the_fields_not_the_values(aws, tmp_path) -> None:
    boto3.client("secretsmanager").create_secret(
        Name="prod/db", SecretString=json.dumps({"user": "app", "pass": CANARY}))
    with pytest.raises(UsageError) as raised:
        resolve_secrets(specs(db={"aws_secretsmanager": "prod/db", "key": "password"}),
                        tmp_path)
    assert "its JSON has no field `password` (fields: `pass`, `user`)" in raised.value.message
    assert CANARY not in raised.value.render()


@pytest.mark.parametrize("declared, message", [
    ({"aws_ssm": "/p", "key": "k"}, "`key` applies to `aws_secretsmanager` secrets only"),
    ({"env": "X", "region": "eu-west-1"}, "`region` applies to AWS secrets only"),
    ({"env": "X", "aws_ssm": "/p"}, "a secret has exactly one source"),
])
def test_source_rules(declared: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SecretSpec.model_validate(declared)


def test_located_errors_for_env_secrets_too(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent("""\
        version: 1
        name: r
        secrets:
          one: {env: HOME}
          two: {env: NOT_SET_ANYWHERE}
        stages:
          s: {kind: deploy, shell: {run: "true"}}
    """))
    plan = compile_runbook(path)
    with pytest.raises(UsageError) as raised:
        resolve_secrets(plan.runbook.secrets, plan.root, plan.secret_locations)
    assert str(raised.value.location) == f"{path}:5:3"


def test_without_the_aws_extra_the_error_names_the_install(tmp_path, monkeypatch) -> None:
    from iacorch.errors import ExitCode, ToolMissingError

    monkeypatch.setitem(sys.modules, "boto3", None)   # `import boto3` raises ImportError
    path = tmp_path / "uses-aws.yaml"
    path.write_text(RUNBOOK)
    plan = compile_runbook(path)
    with pytest.raises(ToolMissingError) as raised:
        resolve_secrets(plan.runbook.secrets, plan.root, plan.secret_locations)
    assert raised.value.exit_code is ExitCode.TOOL_MISSING
    assert str(raised.value.location) == f"{path}:4:3"
    assert raised.value.hint == "pip install 'iacorch[aws]'"
