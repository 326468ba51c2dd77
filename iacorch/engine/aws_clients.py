"""boto3 clients made one way, and AWS failures told as sentences a person can act on.

boto3 is the `[aws]` extra: it is imported here, when a runbook first needs AWS, never at
start-up. Credentials and region come from boto3's standard chain (`AWS_PROFILE`, the
environment, an instance role); `AWS_ENDPOINT_URL` (and `AWS_ENDPOINT_URL_<SERVICE>`) is
honoured by botocore itself.
"""

from __future__ import annotations

import re
from typing import Any

from iacorch.errors import ToolMissingError

INSTALL_HINT = "pip install 'iacorch[aws]'"
# Errors that mean "the credentials may not do this" rather than "it is not there".
_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnrecognizedClientException",
                     "InvalidClientTokenId", "ExpiredTokenException", "ExpiredToken",
                     "InvalidSignatureException", "SignatureDoesNotMatch",
                     "KMSAccessDeniedException"})
_NOT_FOUND = frozenset({"ResourceNotFoundException", "ParameterNotFound",
                        "ParameterVersionNotFound", "AWS.SimpleQueueService.NonExistentQueue",
                        "QueueDoesNotExist", "NoSuchBucket"})


def aws_client(service: str, region: str | None = None, *, read_timeout: float = 30.0) -> Any:
    """A boto3 client for `service` (in `region`, else the standard chain's)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise ToolMissingError(f"AWS support is not installed (boto3), and {service} needs it",
                               hint=INSTALL_HINT) from None
    config = Config(connect_timeout=5, read_timeout=read_timeout,
                    retries={"max_attempts": 3, "mode": "standard"})
    return boto3.session.Session().client(service, region_name=region, config=config)


def is_aws_error(exc: BaseException) -> bool:
    """Whether `exc` is a failure botocore raised (an AWS answer or no answer)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, (BotoCoreError, ClientError))


def describe_aws_error(exc: BaseException) -> tuple[str, str]:
    """(what went wrong, what to do) for a botocore exception."""
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
    )

    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return ("no AWS credentials were found",
                "set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where "
                "an instance or task role gives them")
    if isinstance(exc, NoRegionError):
        return ("no AWS region is set",
                "add `region:` to it, or set AWS_REGION (or a region in the AWS profile)")
    if isinstance(exc, EndpointConnectionError):
        return (f"AWS could not be reached ({exc})",
                "check the network, the region and AWS_ENDPOINT_URL if set")
    if isinstance(exc, ClientError):
        code, detail = _code_and_message(exc.response)
        said = f"{code}: {detail}" if detail else code
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _DENIED or status == 403:
            return (f"access denied ({said})",
                    "grant the credentials in use the permission named in docs/aws.md "
                    "(`aws sts get-caller-identity` shows who they are)")
        if code in _NOT_FOUND:
            return (f"not found ({said})", "check the name, the region and the account")
        return (said, "see the AWS error above")
    return (f"AWS call failed ({exc})", "check the network and AWS_ENDPOINT_URL if set")


def _code_and_message(response: dict[str, Any]) -> tuple[str, str]:
    """The error's code and message; also from an XML body where JSON was expected (some
    proxies and emulators answer a JSON-protocol service that way)."""
    error = response.get("Error", {})
    code = str(error.get("Code", "error"))
    message = str(error.get("Message") or "").strip()
    if message.startswith("<"):
        inner_code = re.search(r"<Code>([^<]*)</Code>", message)
        inner_message = re.search(r"<Message>([^<]*)</Message>", message)
        code = inner_code.group(1) if inner_code else code
        message = inner_message.group(1) if inner_message else ""
    return code, message
