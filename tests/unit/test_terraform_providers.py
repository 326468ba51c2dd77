"""Which stacks' inits may install providers (and so must not share the plugin cache)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from iacorch.drivers.terraform_providers import may_install_providers

BUILTIN_STATE = {"version": 4, "resources": [
    {"type": "terraform_data", "name": "a",
     "provider": 'provider["terraform.io/builtin/terraform"]', "instances": []}]}


def stack(tmp_path: Path, main_tf: str, **files: str) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "main.tf").write_text(main_tf)
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize("main_tf", [
    'resource "terraform_data" "a" {\n  input = path.module\n}\n',
    '# a provider is named only in this comment\nresource "terraform_data" "a" {}\n',
    '  # module "x" {}\nresource "terraform_data" "a" {}\n// provider "aws" {}\n',
    'terraform {\n  backend "local" {}\n}\nresource terraform_data a {\n'
    '  provisioner "local-exec" {\n    command = "echo hi # not a comment"\n  }\n}\n',
    'variable "x" {}\noutput "y" {\n  value = var.x\n}\n',
    'variable "names" {\n  type        = list(string)\n  description = "listens on data"\n'
    '}\nresource "terraform_data" "a" {\n  input = var.names\n}\n',
])
def test_a_stack_of_builtin_resources_installs_nothing(tmp_path: Path, main_tf: str) -> None:
    assert not may_install_providers(stack(tmp_path, main_tf))


@pytest.mark.parametrize("main_tf", [
    'resource "aws_s3_bucket" "logs" {}\n',
    'resource aws_s3_bucket logs {}\n',
    'data "http" "ip" {\n  url = "https://example.com"\n}\n',
    'ephemeral "random_password" "p" {}\n',
    'terraform {\n  required_providers {\n    null = {}\n  }\n}\n',
    'provider "google" {}\n',
    'module "net" {\n  source = "./net"\n}\n',
    'terraform {\n  backend "s3" {}\n}\n',
    'terraform {\n  backend "local" {\n    path = "/elsewhere.tfstate"\n  }\n}\n',
    'terraform {\n  cloud {}\n}\n',
    'import {\n  to = terraform_data.a\n  id = "x"\n}\n',
    'output "n" {\n  value = provider::aws::arn_parse("x")\n}\n',
    # what a comment stripper or a strict header pattern would miss (all install `null`)
    'locals {\n  files = fileset(path.module, "files/*")\n}\n'
    'resource "null_resource" "x" {}\n/* end */\n',
    'locals {\n  cron = "*/5 * * * *"\n}\nresource "null_resource" "x" {}\n# */\n',
    'resource"null_resource" "x" {}\n',
    'resource/* c */"null_resource" "x" {}\n',
    'resource "\\u006eull_resource" "x" {}\n',
])
def test_a_stack_that_names_a_provider_may_install_one(tmp_path: Path, main_tf: str) -> None:
    assert may_install_providers(stack(tmp_path, main_tf))


@pytest.mark.parametrize("name, text", [
    (".terraform.lock.hcl", 'provider "registry.terraform.io/hashicorp/null" {}\n'),
    ("extra.tf.json", "{}"),
    ("web.tftest.hcl", "run \"x\" {}\n"),
    ("tests/web.tftest.hcl", "run \"x\" {}\n"),
    ("main.tofu", 'resource "null_resource" "x" {}\n'),
])
def test_files_the_check_does_not_read_count_as_may_install(tmp_path: Path, name: str,
                                                            text: str) -> None:
    assert may_install_providers(stack(tmp_path, 'resource "terraform_data" "a" {}\n',
                                       **{name: text}))


def test_state_of_another_provider_counts_even_after_its_config_is_gone(
        tmp_path: Path) -> None:
    state = {**BUILTIN_STATE, "resources": [
        *BUILTIN_STATE["resources"],
        {"type": "null_resource", "name": "old",
         "provider": 'provider["registry.terraform.io/hashicorp/null"]', "instances": []}]}
    base = 'resource "terraform_data" "a" {}\n'
    assert not may_install_providers(
        stack(tmp_path / "one", base, **{"terraform.tfstate": json.dumps(BUILTIN_STATE)}))
    assert may_install_providers(
        stack(tmp_path / "two", base, **{"terraform.tfstate.d/blue/terraform.tfstate":
                                         json.dumps(state)}))
    assert may_install_providers(
        stack(tmp_path / "three", base, **{"terraform.tfstate": "{not json"}))
    encrypted = json.dumps({"encrypted_data": "x", "meta": {}})  # an OpenTofu state
    assert may_install_providers(
        stack(tmp_path / "four", base, **{"terraform.tfstate": encrypted}))


def test_backend_config_from_the_runbook_counts_as_a_remote_state(tmp_path: Path) -> None:
    path = stack(tmp_path, 'resource "terraform_data" "a" {}\n')
    assert may_install_providers(path, backend_config=True)


def test_init_arguments_from_the_environment_count_as_unknown(tmp_path: Path) -> None:
    path = stack(tmp_path, 'terraform {\n  backend "local" {}\n}\n')
    assert not may_install_providers(path, env={})
    other_state = {"TF_CLI_ARGS_init": "-backend-config=path=/elsewhere.tfstate"}
    assert may_install_providers(path, env=other_state)
