"""The security baseline of a raw bucket, re-read from AWS: the AWS Foundational Security
Best Practices S3 controls that apply to a bucket of the pipeline.

`security_baseline(s3, bucket)` reads the bucket's live configuration (with
`onboarding.aws.live.read_bucket_settings`, the reader the plan diff uses) and returns one
`Check` per control. `passed` is True or False, or None when the control does not apply
(S3.9 server access logging on a bucket with no logging configured). The account-level
Block Public Access (S3.1) is read too when `s3control` and `account_id` are given and the
caller may read it; otherwise that check says it could not be read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from onboarding.aws.live import read_bucket_settings
from portal.aws import error_code
from portal.errors import ApplicationError

BPA_SETTINGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")


@dataclass(frozen=True)
class Check:
    control: str  # e.g. "S3.8"
    title: str
    passed: bool | None  # None: not applicable
    evidence: str


def _bpa_check(control: str, title: str, config: dict[str, Any] | None, where: str) -> Check:
    if config is None:
        return Check(control, title, False, f"No Block Public Access configuration on {where}.")
    off = [name for name in BPA_SETTINGS if not config.get(name)]
    if off:
        return Check(control, title, False, f"Off on {where}: {', '.join(off)}.")
    return Check(control, title, True, f"All four settings on for {where}.")


def _public_statements(policy: dict[str, Any] | None, actions: tuple[str, ...]) -> list[str]:
    """Sids (or positions) of Allow statements open to everyone that grant `actions`."""
    found = []
    statements = (policy or {}).get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    for i, statement in enumerate(statements):
        if statement.get("Effect") != "Allow":
            continue
        principal = statement.get("Principal")
        aws = principal.get("AWS") if isinstance(principal, dict) else None
        aws_list = aws if isinstance(aws, list) else [aws]
        if principal != "*" and "*" not in aws_list:
            continue
        granted = statement.get("Action", [])
        granted = granted if isinstance(granted, list) else [granted]
        if any(_grants(g, actions) for g in granted):
            found.append(str(statement.get("Sid") or f"statement {i + 1}"))
    return found


def _grants(granted: str, actions: tuple[str, ...]) -> bool:
    granted = granted.lower()
    if granted in ("*", "s3:*"):
        return True
    if granted.endswith("*"):
        return any(a.lower().startswith(granted[:-1]) for a in actions)
    return granted in (a.lower() for a in actions)


_READ_ACTIONS = ("s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket", "s3:ListBucketVersions")
_WRITE_ACTIONS = ("s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectAcl")


def _denies_insecure_transport(policy: dict[str, Any] | None) -> bool:
    statements = (policy or {}).get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    for statement in statements:
        condition = statement.get("Condition", {}).get("Bool", {})
        value = condition.get("aws:SecureTransport")
        values = value if isinstance(value, list) else [value]
        if statement.get("Effect") == "Deny" and any(str(v).lower() == "false" for v in values):
            principal = statement.get("Principal")
            if principal == "*" or (isinstance(principal, dict) and principal.get("AWS") == "*"):
                return True
    return False


def security_baseline(
    s3: Any, bucket: str, *, s3control: Any = None, account_id: str = ""
) -> list[Check]:
    """Every applicable FSBP S3 control for `bucket`, from its live state."""
    found = read_bucket_settings(s3, bucket)
    if found is None:
        raise ApplicationError(f"The bucket {bucket} does not exist.")
    bpa, encryption, lifecycle = (
        found["public_access_block"],
        found["encryption"],
        found["lifecycle"],
    )
    policy = json.loads(found["policy"]["Policy"]) if found["policy"] else None
    versioning = found["versioning"] or "never enabled"
    logging, ownership = found["logging"], found["ownership"]

    checks = [_account_bpa(s3control, account_id)]
    checks.append(
        _bpa_check(
            "S3.8",
            "Block Public Access is on at the bucket level",
            bpa and bpa.get("PublicAccessBlockConfiguration"),
            bucket,
        )
    )
    for control, title, actions in (
        ("S3.2", "No public read access", _READ_ACTIONS),
        ("S3.3", "No public write access", _WRITE_ACTIONS),
    ):
        public = _public_statements(policy, actions)
        checks.append(
            Check(
                control,
                title,
                not public,
                f"Public Allow in the bucket policy: {', '.join(public)}."
                if public
                else "No Allow statement for Principal * in the bucket policy.",
            )
        )
    tls = _denies_insecure_transport(policy)
    checks.append(
        Check(
            "S3.5",
            "Requests must use TLS",
            tls,
            "The policy denies aws:SecureTransport false for everyone."
            if tls
            else "No Deny on aws:SecureTransport false in the bucket policy.",
        )
    )
    checks.append(
        Check(
            "S3.9",
            "Server access logging",
            True if logging else None,
            f"Logs go to s3://{logging.get('TargetBucket')}/{logging.get('TargetPrefix', '')}."
            if logging
            else "Not applicable: no server access logging is configured for this bucket "
            "(the pipeline's CloudTrail data events cover it).",
        )
    )
    rules = (lifecycle or {}).get("Rules", [])
    enabled = [r.get("ID", "?") for r in rules if r.get("Status") == "Enabled"]
    checks.append(
        Check(
            "S3.13",
            "Lifecycle configuration",
            bool(enabled),
            f"Enabled rules: {', '.join(enabled)}." if enabled else "No enabled lifecycle rule.",
        )
    )
    checks.append(
        Check(
            "S3.14", "Versioning is enabled", versioning == "Enabled", f"Versioning: {versioning}."
        )
    )
    sse = ((encryption or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules") or [{}])[0]
    default = sse.get("ApplyServerSideEncryptionByDefault", {})
    kms = default.get("SSEAlgorithm") in ("aws:kms", "aws:kms:dsse")
    checks.append(
        Check(
            "S3.17",
            "Default encryption with KMS keys",
            kms,
            f"{default.get('SSEAlgorithm')} with {default.get('KMSMasterKeyID')}, bucket key "
            f"{'on' if sse.get('BucketKeyEnabled') else 'off'}."
            if default
            else "No default encryption configured.",
        )
    )
    owner_rules = (ownership or {}).get("OwnershipControls", {}).get("Rules", [])
    setting = owner_rules[0].get("ObjectOwnership") if owner_rules else "not set"
    checks.append(
        Check(
            "S3.ownership",
            "ACLs disabled (Object Ownership: bucket owner enforced)",
            setting == "BucketOwnerEnforced",
            f"Object Ownership: {setting}.",
        )
    )
    return checks


def _account_bpa(s3control: Any, account_id: str) -> Check:
    title = "Block Public Access is on at the account level"
    if s3control is None or not account_id:
        return Check("S3.1", title, None, "Not read: no account-level access was given.")
    try:
        found = s3control.get_public_access_block(AccountId=account_id)
    except ClientError as exc:
        if error_code(exc) == "NoSuchPublicAccessBlockConfiguration":
            return _bpa_check("S3.1", title, None, f"account {account_id}")
        if error_code(exc) in ("AccessDenied", "AccessDeniedException"):
            return Check("S3.1", title, None, "Not readable with the portal's role.")
        raise
    return _bpa_check(
        "S3.1", title, found.get("PublicAccessBlockConfiguration"), f"account {account_id}"
    )
