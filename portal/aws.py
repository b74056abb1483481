"""The one place boto3 clients are made.

`client(service, environment)` returns a cached, thread-safe boto3 client configured from
settings: region (the environment's, else AWS_REGION), endpoint (AWS_ENDPOINT_URL: the
sandbox, LocalStack, or blank for real AWS), retry mode ``standard`` with at most
AWS_MAX_ATTEMPTS attempts in all,
connect/read timeouts, and — when the environment has a role_arn — credentials from
assuming that role, refreshed automatically before they expire (session name
``onramp-<env>``). Clients and sessions are made once per key and reused: a boto3 Session
costs about 80 ms to build, a cached client nothing.

In sandbox mode (settings.SANDBOX) the base credentials are fixed dummies ("testing"), so
nothing on the machine (env vars, ~/.aws) is ever sent anywhere. No credential value is
logged.

`error_code`, `is_absent` and `describe_error` are the one place an AWS error is read: its
code, whether it means "not there", whether it is worth retrying (`TRANSIENT_CODES`,
5xx, connection and timeout errors) and the message a person sees. Every step and the
run engine use them.

`ensure_kms_key` is the idempotent way to make a KMS key behind an alias: CreateKey is not
idempotent, so the key is found by its alias, or by the tag an interrupted earlier attempt
left on it, before a new one is created.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import DeferredRefreshableCredentials
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from django.conf import settings

if TYPE_CHECKING:
    from portal.models import Environment

logger = logging.getLogger(__name__)

SANDBOX_ACCESS_KEY = "testing"
SANDBOX_SECRET_KEY = "testing"  # noqa: S105 - the sandbox's fixed dummy credential
ASSUME_ROLE_SECONDS = 3600
KMS_ALIAS_TAG = "onramp:alias"

_lock = threading.RLock()
_clients: dict[tuple[Any, ...], Any] = {}
_sessions: dict[tuple[Any, ...], boto3.Session] = {}


def client(service: str, environment: Environment | None = None) -> Any:
    """A boto3 client for `service`, in `environment` (its region and role) or, without
    one, in Onramp's own account and settings.AWS_REGION. Cached and shared by threads."""
    region = (environment.region if environment is not None else "") or settings.AWS_REGION
    role_arn = environment.role_arn if environment is not None else ""
    env_name = environment.name if environment is not None else ""
    endpoint = settings.AWS_ENDPOINT_URL or None
    key = (service, env_name, role_arn, region, endpoint, *_config_key())
    found = _clients.get(key)
    if found is not None:
        return found
    with _lock:  # botocore sessions are not thread-safe while they create clients
        found = _clients.get(key)
        if found is None:
            session = _session(env_name=env_name, role_arn=role_arn, region=region)
            found = session.client(
                service, region_name=region, endpoint_url=endpoint, config=_config(endpoint)
            )
            _clients[key] = found
        return found


def reset_clients() -> None:
    """Forget every cached client and session (tests, settings changes, after fork)."""
    with _lock:
        _clients.clear()
        _sessions.clear()


def _after_fork() -> None:
    # A forked worker must not share its parent's connection pools, and must not wait on
    # a lock some thread of the parent held at the moment of the fork.
    global _lock
    _lock = threading.RLock()
    _clients.clear()
    _sessions.clear()


os.register_at_fork(after_in_child=_after_fork)


def _config_key() -> tuple[Any, ...]:
    return (
        bool(settings.SANDBOX),
        settings.AWS_MAX_ATTEMPTS,
        settings.AWS_CONNECT_TIMEOUT,
        settings.AWS_READ_TIMEOUT,
    )


def _config(endpoint: str | None) -> Config:
    options: dict[str, Any] = {
        # total_max_attempts counts the first call, as AWS_MAX_ATTEMPTS does for the AWS
        # CLI and SDKs; botocore's `max_attempts` key would count only the retries.
        "retries": {"mode": "standard", "total_max_attempts": settings.AWS_MAX_ATTEMPTS},
        "connect_timeout": settings.AWS_CONNECT_TIMEOUT,
        "read_timeout": settings.AWS_READ_TIMEOUT,
        "user_agent_extra": "onramp",
        # settings.AWS_ENDPOINT_URL is the one source of endpoints, not AWS_ENDPOINT_URL_*
        # variables or ~/.aws/config that botocore would otherwise read on its own.
        "ignore_configured_endpoint_urls": True,
    }
    if endpoint:
        # Sandbox and LocalStack endpoints are host:port; buckets cannot be subdomains.
        options["s3"] = {"addressing_style": "path"}
    return Config(**options)


def _base_session() -> boto3.Session:
    """Onramp's own credentials: fixed dummies in the sandbox, the default chain otherwise."""
    key = ("base", bool(settings.SANDBOX))
    session = _sessions.get(key)
    if session is None:
        core = botocore.session.get_session()
        if settings.SANDBOX:
            core.set_credentials(SANDBOX_ACCESS_KEY, SANDBOX_SECRET_KEY)
        session = boto3.Session(botocore_session=core)
        _sessions[key] = session
    return session


def _session(*, env_name: str, role_arn: str, region: str) -> boto3.Session:
    """The session for a role (or the base one). Called with the lock held."""
    if not role_arn:
        return _base_session()
    endpoint = settings.AWS_ENDPOINT_URL or None
    key = ("role", role_arn, env_name, region, endpoint, *_config_key())
    session = _sessions.get(key)
    if session is None:
        sts = _base_session().client(
            "sts", region_name=region, endpoint_url=endpoint, config=_config(endpoint)
        )
        session_name = f"onramp-{env_name or 'portal'}"[:64]

        def refresh() -> dict[str, str]:
            logger.info("assuming %s as %s", role_arn, session_name)
            creds = sts.assume_role(
                RoleArn=role_arn,
                RoleSessionName=session_name,
                DurationSeconds=ASSUME_ROLE_SECONDS,
            )["Credentials"]
            return {
                "access_key": creds["AccessKeyId"],
                "secret_key": creds["SecretAccessKey"],
                "token": creds["SessionToken"],
                "expiry_time": creds["Expiration"].isoformat(),
            }

        core = botocore.session.get_session()
        # Assumed on first use, refreshed by botocore before the credentials expire.
        core._credentials = DeferredRefreshableCredentials(
            refresh_using=refresh, method="sts-assume-role"
        )
        session = boto3.Session(botocore_session=core)
        _sessions[key] = session
    return session


# --- Errors ------------------------------------------------------------------------------

# Codes that say "try again later": throttling, a busy or failing service, a conflicting
# request still in flight. Any other code is permanent: retrying the same call fails again.
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "ProvisionedThroughputExceededException",
        "SlowDown",
        "RequestTimeout",
        "RequestTimeoutException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "InternalServiceError",
        "InternalServiceErrorException",
        "TransactionInProgressException",
        "PriorRequestNotComplete",
        "ResourceConflictException",
        "OperationAbortedException",
    }
)

# Codes that mean "the thing you asked about is not there" across the services Onramp uses
# (S3 answers HEAD requests with the bare status code).
ABSENT_CODES = frozenset(
    {
        "404",
        "NoSuchBucket",
        "NoSuchKey",
        "NoSuchBucketPolicy",
        "NoSuchLifecycleConfiguration",
        "NoSuchTagSet",
        "NoSuchPublicAccessBlockConfiguration",
        "ServerSideEncryptionConfigurationNotFoundError",
        "ObjectLockConfigurationNotFoundError",
        "NotFoundException",
        "ResourceNotFoundException",
        "ResourceNotFound",
        "ParameterNotFound",
        "StateMachineDoesNotExist",
        "ExecutionDoesNotExist",
    }
)

_CONNECTION_ERRORS = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a failed call ("NoSuchBucket", "ThrottlingException", "404"),
    or "" for anything that is not an AWS error response."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_absent(exc: BaseException, *codes: str) -> bool:
    """Does this error say the resource is not there? `codes` adds service-specific ones."""
    code = error_code(exc)
    return bool(code) and (code in ABSENT_CODES or code in codes)


def is_aws_error(exc: BaseException) -> bool:
    return isinstance(exc, ClientError | BotoCoreError)


def describe_error(exc: BaseException) -> tuple[bool, str]:
    """(transient?, a message a person can act on) for an error from an AWS call.

    Transient: a code in TRANSIENT_CODES, any 5xx answer, a connection or timeout error.
    Everything else is permanent."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "Unknown"))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0
        operation = getattr(exc, "operation_name", "call")
        message = f"AWS {operation} failed: {code}: {err.get('Message', '')}".strip()
        return code in TRANSIENT_CODES or status >= 500, message
    if isinstance(exc, _CONNECTION_ERRORS):
        return True, f"AWS could not be reached: {exc}"
    if isinstance(exc, NoCredentialsError):
        return False, "No AWS credentials are configured for this environment."
    return False, f"{type(exc).__name__}: {exc}"


# --- KMS ---------------------------------------------------------------------------------


def ensure_kms_key(
    kms_client: Any,
    *,
    alias: str,
    description: str,
    tags: Mapping[str, str] | None = None,
    on_created: Callable[[str], None] | None = None,
) -> tuple[str, str]:
    """Make sure a usable KMS key sits behind `alias`; return (key_id, action).

    Idempotent even when the process dies between CreateKey and CreateAlias: every key
    this makes is tagged ``onramp:alias=<alias>`` at creation, so a retry adopts that key
    instead of creating a second one. Keys pending deletion are never used.

    action is "unchanged" (the alias already pointed at a usable key), "created" (a new
    key and its alias), or "updated" (the alias was created for, or moved to, a key an
    earlier interrupted attempt had already created). `on_created(key_id)` is called right
    after CreateKey, before CreateAlias.
    """
    if not alias.startswith("alias/"):
        raise ValueError(f"A KMS alias starts with 'alias/': {alias!r}")
    alias_exists = False
    try:
        meta = kms_client.describe_key(KeyId=alias)["KeyMetadata"]
        alias_exists = True
        if meta.get("KeyState") != "PendingDeletion":
            return meta["KeyId"], "unchanged"
    except kms_client.exceptions.NotFoundException:
        pass

    key_id = _find_tagged_key(kms_client, alias)
    action = "updated"
    if key_id is None:
        all_tags = {**(tags or {}), KMS_ALIAS_TAG: alias}
        key_id = kms_client.create_key(
            Description=description,
            KeyUsage="ENCRYPT_DECRYPT",
            KeySpec="SYMMETRIC_DEFAULT",
            Tags=[{"TagKey": k, "TagValue": v} for k, v in all_tags.items()],
        )["KeyMetadata"]["KeyId"]
        action = "created"
        if on_created is not None:
            on_created(key_id)
    if alias_exists:
        kms_client.update_alias(AliasName=alias, TargetKeyId=key_id)
        return key_id, "updated"
    try:
        kms_client.create_alias(AliasName=alias, TargetKeyId=key_id)
    except kms_client.exceptions.AlreadyExistsException:
        # Another worker got there first; whatever it points at is the key to use.
        meta = kms_client.describe_key(KeyId=alias)["KeyMetadata"]
        return meta["KeyId"], "unchanged"
    return key_id, action


def _find_tagged_key(kms_client: Any, alias: str) -> str | None:
    """The oldest usable key tagged onramp:alias=<alias>, if an earlier attempt made one."""
    found: list[tuple[Any, str]] = []
    for page in kms_client.get_paginator("list_keys").paginate():
        for entry in page.get("Keys", []):
            key_id = entry["KeyId"]
            tags = _key_tags(kms_client, key_id)
            if tags.get(KMS_ALIAS_TAG) != alias:
                continue
            meta = kms_client.describe_key(KeyId=key_id)["KeyMetadata"]
            if meta.get("KeyState") in ("PendingDeletion", "PendingReplicaDeletion"):
                continue
            found.append((meta.get("CreationDate"), key_id))
    if not found:
        return None
    found.sort(key=lambda item: (item[0] is None, item[0], item[1]))
    return found[0][1]


def _key_tags(kms_client: Any, key_id: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    kwargs: dict[str, Any] = {"KeyId": key_id}
    while True:
        try:
            page = kms_client.list_resource_tags(**kwargs)
        except kms_client.exceptions.NotFoundException:
            return {}
        for tag in page.get("Tags", []):
            tags[tag["TagKey"]] = tag["TagValue"]
        if not page.get("Truncated"):
            return tags
        kwargs["Marker"] = page["NextMarker"]
