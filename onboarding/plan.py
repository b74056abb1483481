"""The onboarding plan: everything runbook 1 (SOP-001) creates for one source in one environment.

`build_plan(spec, env)` is a pure function: no I/O, no clock, no randomness. The same spec and
environment always give the same plan, and `plan_digest` gives the same hash, so approvers can
sign the rendered plan and the worker can check, before it touches AWS, that it is about to
apply exactly what was signed. `onboarding.aws.live` reads the same resources back from AWS and
`onboarding.aws.diff` diffs them against a plan; provisioning and the drift check build on that.

Decisions worth knowing (each is also visible in the plan itself):

- The producer role may only `s3:PutObject`, and only under ``incoming/`` (`PRODUCER_PREFIX`).
  The EventBridge rule matches the same prefix, so the workflow starts for what the producer
  delivers and for nothing else written to the bucket. Smoke tests must upload under
  ``incoming/`` too.
- The bucket policy also denies every request that does not use TLS, for every principal.
- Data is encrypted with the environment's KMS key (``alias/etl-<env>``) unless the source
  needs a dedicated key: when the spec asks for one, or, whatever the spec says, when its
  sensitivity includes PHI or financial data.
- Lifecycle: current versions expire after ``retention_days``; they move to Standard-IA after
  30 days when at least 30 days in IA remain (IA bills 30 days minimum) and to Glacier Instant
  Retrieval after 90 days when at least 90 days remain there (its minimum); a version that is
  overwritten or deleted is kept 30 days (never longer than the retention) so mistakes can be
  undone; incomplete multipart uploads are aborted after 7 days.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from onboarding.models import (
    MAX_RETENTION_DAYS,
    PRODUCER_ROLE_ARN_RE,
    SOURCE_NAME_RE,
    DataFormat,
    LatencySla,
    Sensitivity,
)
from portal.errors import ApplicationError

PLAN_VERSION = 1

FORMATS = tuple(DataFormat.values)
LATENCY_SLAS = tuple(LatencySla.values)
# "none" is how a request states it has no sensitive data; the plan just sees no entries.
SENSITIVITIES = tuple(value for value in Sensitivity.values if value != Sensitivity.NONE)
# Sensitivities that require a KMS key of the source's own.
DEDICATED_KEY_SENSITIVITIES = frozenset({"phi", "financial"})

PRODUCER_PREFIX = "incoming/"
METRIC_NAMESPACE = "ETL/Pipeline"
SCHEMA_CONTENT_TYPE = "application/json"
EVENTS_TARGET_ID = "1"  # SOP-001 step 4 uses Id=1; keeping it matches rules made by hand.
NONCURRENT_VERSION_DAYS = 30
ABORT_MULTIPART_DAYS = 7

# The order sections are read, diffed and rendered in.
SECTIONS = (
    "bucket",
    "kms",
    "rule",
    "target",
    "schema_object",
    "config_item",
    "alarm",
    "dashboard_widget",
)

# The request form's rules (onboarding.models), so a valid request always has a plan.
_SOURCE_NAME = re.compile(SOURCE_NAME_RE)
_ROLE_ARN = re.compile(PRODUCER_ROLE_ARN_RE)  # one named role: no wildcards
_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d$")


@dataclass(frozen=True)
class SourceSpec:
    name: str  # slug, e.g. "clickstream"
    owner_team: str
    format: str  # json, ndjson, csv, parquet, avro
    schema_version: int
    producer_role_arn: str
    sensitivity: tuple[str, ...] = ()  # "pii", "phi", "financial"
    retention_days: int = 365
    latency_sla: str = "hourly"  # "realtime" | "hourly" | "daily"
    dedicated_kms_key: bool | None = None  # None = decide from sensitivity


@dataclass(frozen=True)
class TargetEnvironment:
    name: str
    account_id: str
    region: str
    raw_bucket_prefix: str = "raw-data-"
    state_machine_name: str = "etl-workflow-{env}"
    events_role_name: str = "etl-events-to-sfn-{env}"
    schema_bucket_name: str = "etl-schemas-{env}"
    metadata_table_name: str = "etl-metadata-{env}"
    dashboard_name: str = "etl-pipeline-{env}"
    kms_key_alias: str = "alias/etl-{env}"

    @classmethod
    def from_model(cls, env: Any) -> TargetEnvironment:
        """Copy the naming from a portal.models.Environment (or anything with its attributes)."""
        names = (
            "raw_bucket_prefix",
            "state_machine_name",
            "events_role_name",
            "schema_bucket_name",
            "metadata_table_name",
            "dashboard_name",
            "kms_key_alias",
        )
        optional = {name: getattr(env, name) for name in names if getattr(env, name, None)}
        return cls(name=env.name, account_id=env.account_id, region=env.region, **optional)

    def resource(self, template: str) -> str:
        """A resource name from its template, as Environment.resource does."""
        return template.format(env=self.name)


def dedicated_key_required(spec: SourceSpec) -> tuple[bool, str]:
    """Whether the source gets its own KMS key, and why (shown on the plan)."""
    sensitive = sorted(DEDICATED_KEY_SENSITIVITIES.intersection(_sensitivity(spec)))
    if sensitive:
        return True, f"required: sensitivity includes {', '.join(sensitive)}"
    if spec.dedicated_kms_key:
        return True, "requested in the spec"
    return False, "environment key: no PHI or financial data, no dedicated key requested"


def build_plan(spec: SourceSpec, env: TargetEnvironment) -> dict[str, Any]:
    """Everything runbook 1 will create for `spec` in `env`, as JSON-serialisable data.

    Raises ApplicationError (with the offending field) when the spec or the environment
    cannot produce valid AWS resource names or a least-privilege policy.
    """
    _validate(spec, env)
    name, env_name, region, account = spec.name, env.name, env.region, env.account_id

    bucket = f"{env.raw_bucket_prefix}{name}-{env_name}"
    bucket_arn = f"arn:aws:s3:::{bucket}"
    tags = {
        "CostCenter": name,
        "Environment": env_name,
        "ManagedBy": "onramp",
        "Owner": spec.owner_team,
        "Source": name,
    }

    dedicated, reason = dedicated_key_required(spec)
    alias = f"alias/onramp-{name}-{env_name}" if dedicated else env.resource(env.kms_key_alias)
    alias_arn = f"arn:aws:kms:{region}:{account}:{alias}"
    kms: dict[str, Any] = {
        "alias": alias,
        "alias_arn": alias_arn,
        "dedicated": dedicated,
        "reason": reason,
        "key_state": "Enabled",
    }
    if dedicated:
        kms.update(
            description=f"Onramp: raw data of source {name} in {env_name}",
            key_spec="SYMMETRIC_DEFAULT",
            key_usage="ENCRYPT_DECRYPT",
            rotation_enabled=True,
            key_policy=_key_policy(spec, env, bucket_arn),
            tags=dict(tags),
        )

    rule_name = f"etl-s3-events-{name}-{env_name}"
    schema_bucket = env.resource(env.schema_bucket_name)
    schema_key = f"schemas/{name}/v{spec.schema_version}.json"
    schema_uri = f"s3://{schema_bucket}/{schema_key}"
    state_machine = env.resource(env.state_machine_name)

    return {
        "plan_version": PLAN_VERSION,
        "source": name,
        "environment": {"name": env_name, "account_id": account, "region": region},
        "spec": {
            "name": name,
            "owner_team": spec.owner_team,
            "format": spec.format.lower(),
            "schema_version": spec.schema_version,
            "producer_role_arn": spec.producer_role_arn,
            "sensitivity": _sensitivity(spec),
            "retention_days": spec.retention_days,
            "latency_sla": spec.latency_sla,
            "dedicated_kms_key": spec.dedicated_kms_key,
        },
        "bucket": {
            "name": bucket,
            "arn": bucket_arn,
            "region": region,
            "producer_prefix": PRODUCER_PREFIX,
            "versioning": "Enabled",
            "encryption": {
                "SSEAlgorithm": "aws:kms",
                "KMSMasterKeyID": alias_arn,
                "BucketKeyEnabled": True,
            },
            "public_access_block": {
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
            "ownership": "BucketOwnerEnforced",
            "policy": _bucket_policy(bucket_arn, spec.producer_role_arn),
            "notifications": {"EventBridgeConfiguration": {}},
            "lifecycle": _lifecycle(spec.retention_days),
            "tags": dict(tags),
        },
        "kms": kms,
        "rule": {
            "name": rule_name,
            "arn": f"arn:aws:events:{region}:{account}:rule/{rule_name}",
            "event_bus": "default",
            "description": f"Onramp: objects created under {PRODUCER_PREFIX} in {bucket} "
            f"start {state_machine}",
            "event_pattern": {
                "source": ["aws.s3"],
                "detail-type": ["Object Created"],
                "detail": {
                    "bucket": {"name": [bucket]},
                    "object": {"key": [{"prefix": PRODUCER_PREFIX}]},
                },
            },
            "state": "ENABLED",
            "tags": dict(tags),
        },
        "target": {
            "rule": rule_name,
            "Id": EVENTS_TARGET_ID,
            "Arn": f"arn:aws:states:{region}:{account}:stateMachine:{state_machine}",
            "RoleArn": f"arn:aws:iam::{account}:role/{env.resource(env.events_role_name)}",
        },
        "schema_object": {
            "bucket": schema_bucket,
            "key": schema_key,
            "uri": schema_uri,
            "content_type": SCHEMA_CONTENT_TYPE,
            "version": spec.schema_version,
            "metadata": {"source": name, "schema-version": str(spec.schema_version)},
        },
        "config_item": {
            "table": env.resource(env.metadata_table_name),
            "key": {"pk": f"SOURCE#{name}", "sk": "CONFIG"},
            "item": {
                "pk": f"SOURCE#{name}",
                "sk": "CONFIG",
                "source_name": name,
                "format": spec.format.lower(),
                "schema_location": schema_uri,
                "schema_version": spec.schema_version,
                "output_partitioning": f"source={name}/year=YYYY/",
                "latency_sla": spec.latency_sla,
                "owner": spec.owner_team,
                "raw_bucket": bucket,
                "retention_days": spec.retention_days,
                "sensitivity": _sensitivity(spec),
            },
        },
        "alarm": {
            "AlarmName": f"etl-{name}-{env_name}-validation-errors",
            "AlarmDescription": f"Onramp: more than 5 validation errors in 5 minutes "
            f"for source {name} in {env_name} (SOP-001 step 7).",
            "ActionsEnabled": True,
            "MetricName": "ValidationErrors",
            "Namespace": METRIC_NAMESPACE,
            "Statistic": "Sum",
            "Dimensions": [{"Name": "Source", "Value": name}],
            "Period": 300,
            "EvaluationPeriods": 1,
            "Threshold": 5.0,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
            "Tags": [{"Key": key, "Value": value} for key, value in sorted(tags.items())],
        },
        "dashboard_widget": {
            "dashboard_name": env.resource(env.dashboard_name),
            "widget": _dashboard_widget(name, region),
        },
        "tags": tags,
    }


def plan_digest(plan: dict[str, Any]) -> str:
    """sha256 of the plan's canonical JSON: what an approval of the rendered plan is bound to."""
    return hashlib.sha256(canonical_json(plan).encode("utf-8")).hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _sensitivity(spec: SourceSpec) -> list[str]:
    declared = {item.strip().lower() for item in spec.sensitivity}
    return sorted(declared - {Sensitivity.NONE.value})


def _bucket_policy(bucket_arn: str, producer_role_arn: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
            {
                "Sid": "AllowProducerPutObject",
                "Effect": "Allow",
                "Principal": {"AWS": producer_role_arn},
                "Action": "s3:PutObject",
                "Resource": f"{bucket_arn}/{PRODUCER_PREFIX}*",
            },
        ],
    }


def _key_policy(spec: SourceSpec, env: TargetEnvironment, bucket_arn: str) -> dict[str, Any]:
    """A dedicated key: the account administers it through IAM (so the pipeline's roles get
    decrypt by their own policies), and the producer may use it only through S3, only for
    this bucket (with a bucket key the encryption context is the bucket ARN)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "EnableIamPolicies",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{env.account_id}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "AllowProducerThroughS3",
                "Effect": "Allow",
                "Principal": {"AWS": spec.producer_role_arn},
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": "*",
                "Condition": {
                    "StringEquals": {
                        "kms:ViaService": f"s3.{env.region}.amazonaws.com",
                        "kms:EncryptionContext:aws:s3:arn": bucket_arn,
                    }
                },
            },
        ],
    }


def _lifecycle(retention_days: int) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "ID": "onramp-retention",
        "Status": "Enabled",
        "Filter": {"Prefix": ""},
        "Expiration": {"Days": retention_days},
        "NoncurrentVersionExpiration": {
            "NoncurrentDays": min(NONCURRENT_VERSION_DAYS, retention_days)
        },
        "AbortIncompleteMultipartUpload": {
            "DaysAfterInitiation": min(ABORT_MULTIPART_DAYS, retention_days)
        },
    }
    transitions = []
    if retention_days >= 60:  # 30 days in Standard, then at least IA's 30-day minimum
        transitions.append({"Days": 30, "StorageClass": "STANDARD_IA"})
    if retention_days >= 180:  # 90 days, then at least Glacier IR's 90-day minimum
        transitions.append({"Days": 90, "StorageClass": "GLACIER_IR"})
    if transitions:
        rule["Transitions"] = transitions
    return {"Rules": [rule]}


def _dashboard_widget(name: str, region: str) -> dict[str, Any]:
    """One widget, numbers with sparklines: counts, a percentage and a latency share it
    without fighting over a y-axis. The error rate is validation errors per 100 files."""

    def metric(metric_name: str, metric_id: str, stat: str, label: str) -> list[Any]:
        return [
            METRIC_NAMESPACE,
            metric_name,
            "Source",
            name,
            {"id": metric_id, "stat": stat, "label": label},
        ]

    return {
        "type": "metric",
        "width": 24,
        "height": 6,
        "properties": {
            "title": f"Source {name}: files, error rate, processing latency",
            "region": region,
            "view": "singleValue",
            "sparkline": True,
            "period": 300,
            "metrics": [
                metric("FilesProcessed", "files", "Sum", "Files processed"),
                metric("ValidationErrors", "errors", "Sum", "Validation errors"),
                [
                    {
                        "id": "error_rate",
                        "expression": "IF(files > 0, 100 * errors / files, 0)",
                        "label": "Error rate (%)",
                    }
                ],
                metric("ProcessingLatency", "latency", "p95", "Processing latency p95"),
            ],
        },
    }


def _validate(spec: SourceSpec, env: TargetEnvironment) -> None:
    def fail(message: str, field: str) -> None:
        raise ApplicationError(message, field=field)

    if not _SOURCE_NAME.match(spec.name or ""):
        fail("A source name is 3-40 lower-case letters, digits and hyphens.", "name")
    if not spec.owner_team or not spec.owner_team.strip() or len(spec.owner_team) > 256:
        fail("Name the owning team (at most 256 characters).", "owner_team")
    if (spec.format or "").lower() not in FORMATS:
        fail(f"Format must be one of {', '.join(FORMATS)}.", "format")
    if not isinstance(spec.schema_version, int) or spec.schema_version < 1:
        fail("The schema version is a whole number from 1.", "schema_version")
    if not _ROLE_ARN.match(spec.producer_role_arn or ""):
        fail("The producer must be one IAM role ARN, without wildcards.", "producer_role_arn")
    unknown = set(_sensitivity(spec)) - set(SENSITIVITIES)
    if unknown:
        fail(f"Unknown sensitivity: {', '.join(sorted(unknown))}.", "sensitivity")
    if not isinstance(spec.retention_days, int) or not 1 <= spec.retention_days <= (
        MAX_RETENTION_DAYS
    ):
        fail(f"Retention is 1 to {MAX_RETENTION_DAYS} days.", "retention_days")
    if spec.latency_sla not in LATENCY_SLAS:
        fail(f"Latency SLA must be one of {', '.join(LATENCY_SLAS)}.", "latency_sla")
    if not _SLUG.match(env.name or ""):
        fail("An environment name is lower-case letters, digits and hyphens.", "environment")
    if not _ACCOUNT.match(env.account_id or ""):
        fail("An AWS account id is 12 digits.", "environment")
    if not _REGION.match(env.region or ""):
        fail(f"{env.region!r} is not an AWS region.", "environment")
    bucket = f"{env.raw_bucket_prefix}{spec.name}-{env.name}"
    if len(bucket) > 63 or not _SLUG.match(bucket):
        fail(f"The bucket name {bucket} is not a valid S3 bucket name (at most 63).", "name")
    rule = f"etl-s3-events-{spec.name}-{env.name}"
    if len(rule) > 64:
        fail(f"The rule name {rule} is longer than EventBridge's 64 characters.", "name")
