"""Whether a stack's `terraform init` may install provider packages into the plugin cache.

All inits on a host share one plugin cache, which Terraform does not make safe for
concurrent writers, so an init that may install a provider holds the host's init lock
alone. An init of a root module that needs only Terraform's built-in provider
(`terraform_data`) never touches the cache: it may run beside other such inits. The
check is conservative: anything it cannot read for certain (modules, providers named
anywhere, a backend whose state it cannot see, `terraform_remote_state`, which names
one, test files, JSON configuration, init arguments from the environment) counts as
"may install".
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

BUILTIN_PROVIDER = "terraform.io/builtin/terraform"

# Whole-line comments only: a `#`, `//` or `/*` inside a string or heredoc must not hide
# the configuration after it. Comments elsewhere stay, and their words count.
_LINE_COMMENT = re.compile(r"^[ \t]*(?:#|//)[^\n]*", re.MULTILINE)
# The default local backend, written out: its state files are the ones read below.
_LOCAL_BACKEND = re.compile(r"\bbackend\s+\"local\"\s*\{\s*\}")
# Words whose presence may bring in a provider: provider blocks, required_providers,
# provider functions (provider::), child modules, any other backend or HCP Terraform
# (whose state may name providers), and import blocks (which may name an unconfigured
# resource). Matched anywhere, strings included: a false match only costs waiting.
# `provider` matches inside required_providers too; `path.module` is not a module.
_MAY_NEED = re.compile(r"provider|(?<!\.)\bmodule\b|\b(backend|cloud|import)\b")
# A block keyword and what follows it (blanks, block comments, an optional quote): the
# block's type, unless it is a reference (`data.x`), a call (`list(string)`) or an
# attribute, which leave the type empty. Every type but `terraform_*` belongs to a
# provider that must be installed; an escape (`\u006eull`) counts as another type.
_TYPED_BLOCK = re.compile(
    r"\b(?:resource|data|ephemeral|list|action)\b(?:\s|/\*.*?\*/)*\"?([^\s\"{}()=.,:\[\]]*)",
    re.DOTALL)
# Files init reads besides *.tf (OpenTofu's too), which this check does not parse.
_OTHER_CONFIG = ("*.tf.json", "*.tofu", "*.tofu.json", "*.tftest.hcl", "*.tftest.json",
                 "*.tofutest.hcl", "*.tofutest.json", "*.tfquery.hcl", ".terraform.lock.hcl")
# Arguments added to every init from the environment (say, another -backend-config).
_CLI_ARGS = ("TF_CLI_ARGS", "TF_CLI_ARGS_init")


def may_install_providers(stack_dir: Path, *, backend_config: bool = False,
                          env: Mapping[str, str] | None = None) -> bool:
    """False only when `terraform init` in `stack_dir`, with `env`, certainly needs no
    provider package."""
    environment = {**os.environ, **(env or {})}
    if backend_config or any(environment.get(name) for name in _CLI_ARGS):
        return True
    if (stack_dir / "tests").is_dir():
        return True
    if any(next(stack_dir.glob(pattern), None) for pattern in _OTHER_CONFIG):
        return True
    try:
        texts = [path.read_text(encoding="utf-8") for path in stack_dir.glob("*.tf")]
    except (OSError, UnicodeDecodeError):
        return True
    if any(_needs_provider(text) for text in texts):
        return True
    return any(_state_names_provider(path) for path in _local_states(stack_dir))


def _needs_provider(text: str) -> bool:
    text = _LOCAL_BACKEND.sub("", _LINE_COMMENT.sub("", text))
    if _MAY_NEED.search(text):
        return True
    return any(kind and not kind.startswith("terraform_")
               for kind in _TYPED_BLOCK.findall(text))


def _local_states(stack_dir: Path) -> list[Path]:
    """The default local backend's state files: every workspace's."""
    return [stack_dir / "terraform.tfstate",
            *stack_dir.glob("terraform.tfstate.d/*/terraform.tfstate")]


def _state_names_provider(path: Path) -> bool:
    """Whether a state file holds resources of a provider other than the built-in one
    (init installs those too, so that a plan can destroy them)."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return True
    if not isinstance(state, dict) or state.get("version") != 4:
        return True  # another format (an encrypted OpenTofu state, say): unknown
    resources = state.get("resources")
    if not isinstance(resources, list):
        return True
    return any(not isinstance(r, dict) or BUILTIN_PROVIDER not in str(r.get("provider", ""))
               for r in resources)
