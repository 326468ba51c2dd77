"""What crosses to another process or host: a stage attempt with no secret value in clear.

The local executor runs StageSpecs as they are: nothing leaves the process. An executor
that ships attempts elsewhere (a broker, a worker pool) sends `to_request(spec, masker)`:

- the runbook's secrets travel as references (`SecretRef`: a name and a source, such as
  `{"env": "DB_PASSWORD"}`), which the executing side resolves from its own
  environment, files or secret store (a worker can hold secrets the coordinator lacks);
- what a template already made of a secret (a rendered `{{ secrets.db }}` in Terraform
  vars, an upstream stage's sensitive output) travels sealed: Fernet (AES-128-CBC and
  HMAC-SHA256) under a key both sides hold, `$IACORCH_SEAL_KEY`. The clear copy of the
  action in the request is masked.

`open_request` is the way back: the StageSpec and the Masker the attempt runs with.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from iacorch.errors import UsageError
from iacorch.model.masking import Masker
from iacorch.model.results import SecretRef, StageSpec
from iacorch.model.runbook import SecretSpec
from iacorch.runbook.templating import secret_env_name

from .secrets import resolve_secrets

SEAL_KEY_ENV = "IACORCH_SEAL_KEY"

Resolver = Callable[[tuple[SecretRef, ...], Path], Mapping[str, str]]


@dataclass(frozen=True, slots=True)
class StageRequest:
    """A StageSpec without secret values (`spec`), and its sealed secret-bearing part."""

    spec: Mapping[str, Any]
    sealed: str | None = None

    def to_json(self) -> str:
        return json.dumps({"spec": self.spec, "sealed": self.sealed}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> StageRequest:
        data = json.loads(text)
        return cls(spec=data["spec"], sealed=data.get("sealed"))


def to_request(spec: StageSpec, masker: Masker, *,
               key: str | None = None) -> StageRequest:
    """The request to ship for `spec`; a secret-bearing action is sealed with `key`."""
    declared = set(spec.secret_values)
    learnt = sorted(masker.secrets - declared)  # sensitive outputs of earlier stages
    clear = replace(spec, secret_values=(), secret_env={})
    if masker.mask_value(dict(spec.action)) == dict(spec.action):
        return StageRequest(clear.to_dict())
    sealed = seal({"action": dict(spec.action), "learnt": learnt}, key=key)
    masked = replace(clear, action=masker.mask_value(dict(spec.action)))  # type: ignore[arg-type]
    return StageRequest(masked.to_dict(), sealed)


def open_request(request: StageRequest, *, key: str | None = None,
                 resolve: Resolver | None = None) -> tuple[StageSpec, Masker]:
    """The spec to run (secrets resolved here, the sealed action opened) and its masker."""
    spec = StageSpec.from_dict(request.spec)
    values = (resolve or resolve_refs)(spec.secret_refs, Path(spec.root_dir))
    learnt: list[str] = []
    if request.sealed is not None:
        payload = unseal(request.sealed, key=key)
        spec = replace(spec, action=payload["action"])
        learnt = payload["learnt"]
    spec = replace(spec, secret_values=tuple(values.values()),
                   secret_env={secret_env_name(name): value for name, value in values.items()})
    return spec, Masker([*values.values(), *learnt])


def resolve_refs(refs: tuple[SecretRef, ...], root: Path) -> dict[str, str]:
    """Resolve references from this side's own environment and files."""
    return resolve_secrets({ref.name: SecretSpec.model_validate(ref.source) for ref in refs},
                           root)


def new_seal_key() -> str:
    """A fresh key for $IACORCH_SEAL_KEY."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def _fernet(key: str | None) -> Any:
    from cryptography.fernet import Fernet

    key = key or os.environ.get(SEAL_KEY_ENV)
    if not key:
        raise UsageError(f"a stage's inputs hold a secret, and ${SEAL_KEY_ENV} is not set to "
                         "seal them for the trip to a worker",
                         hint=f"set the same ${SEAL_KEY_ENV} on the coordinator and the workers "
                              "(python -c 'from iacorch.engine.stage_requests import "
                              "new_seal_key; print(new_seal_key())')")
    try:
        return Fernet(key.encode())
    except ValueError:
        raise UsageError(f"${SEAL_KEY_ENV} is not a seal key (32 url-safe base64 bytes)",
                         hint="make one with new_seal_key(); keep it out of the runbook"
                         ) from None


def seal(payload: Any, *, key: str | None = None) -> str:
    """JSON data encrypted for the trip between a coordinator and its workers."""
    return str(_fernet(key).encrypt(json.dumps(payload).encode()).decode())


def unseal(sealed: str, *, key: str | None = None) -> dict[str, Any]:
    """What `seal` sealed (a mapping), opened with this side's key."""
    from cryptography.fernet import InvalidToken

    try:
        data: dict[str, Any] = json.loads(_fernet(key).decrypt(sealed.encode()))
    except InvalidToken:
        raise UsageError("a stage request's sealed inputs do not open with this side's "
                         f"${SEAL_KEY_ENV}", hint="give the coordinator and every worker the "
                         "same key") from None
    return data
