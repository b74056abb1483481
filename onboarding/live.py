"""What a plan's resources look like in AWS now, and how that differs from the plan.

`read_live(plan, clients)` reads every section of a plan (`onboarding.plan.SECTIONS`) from
AWS and returns it in the plan's own shape; a resource that does not exist reads as None.
`diff_plan(plan, live)` is pure: for every (section, field) the plan defines it says
"create" (nothing there yet), "update" (there, but different) or "unchanged". The set of
(section, field) pairs depends only on the plan, so a ticket, a provisioning step and the
drift check all show the same rows.

Provisioning steps should use the per-section pieces: `read_section(plan, clients, name)`
then `diff_section(plan, live, name)`, and change only the fields that are not unchanged.

Values are compared after normalising what AWS is free to reorder or restate: policies as
parsed JSON with statements, actions, resources and condition values as sets; event patterns
with their value lists as sets; tags as dicts; alarm dimensions by name; lifecycle rules by
id. A KMS key named in the bucket encryption by key id or key ARN matches the plan's alias
when the alias points at that key. Attributes AWS or the pipeline add and the plan does not
name (extra config-item attributes, other dashboard widgets, alarm state) are not compared.

`clients(service)` returns a boto3 client for the plan's account and region, e.g.
``functools.partial(portal.aws.client, environment=env)``. Errors other than "not found"
(access denied, throttling) propagate for the caller to classify.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import Binary, TypeDeserializer
from botocore.exceptions import ClientError

from onboarding.plan import SECTIONS, canonical_json

Clients = Callable[[str], Any]

CREATE, UPDATE, UNCHANGED = "create", "update", "unchanged"

_DESERIALIZER = TypeDeserializer()


@dataclass
class PlanChange:
    section: str
    field: str
    expected: Any
    actual: Any
    action: str  # "create" | "update" | "unchanged"


# Error codes that mean "this does not exist (yet)". HEAD requests carry no body, so S3
# answers them with the bare status code.
_ABSENT = frozenset(
    {
        "404",
        "NoSuchBucket",
        "NoSuchKey",
        "NotFound",
        "NoSuchBucketPolicy",
        "ServerSideEncryptionConfigurationNotFoundError",
        "NoSuchPublicAccessBlockConfiguration",
        "OwnershipControlsNotFoundError",
        "NoSuchLifecycleConfiguration",
        "NoSuchTagSet",
        "ResourceNotFoundException",
        "ResourceNotFound",
        "NotFoundException",
    }
)

# The fields compared per section (identity fields such as names and ARNs are how the
# resource is found, so they are not compared again). config_item compares every attribute
# of the planned item, the alarm every put_metric_alarm parameter.
_BUCKET_FIELDS = (
    "region",
    "versioning",
    "encryption",
    "public_access_block",
    "ownership",
    "policy",
    "notifications",
    "lifecycle",
    "tags",
)
_DEDICATED_KEY_FIELDS = (
    "description",
    "key_spec",
    "key_usage",
    "rotation_enabled",
    "key_policy",
    "tags",
)


def section_fields(plan: dict[str, Any], section: str) -> tuple[str, ...]:
    """The fields of `section` the diff compares, in display order."""
    if section == "bucket":
        return _BUCKET_FIELDS
    if section == "kms":
        return ("key_state", *(_DEDICATED_KEY_FIELDS if plan["kms"]["dedicated"] else ()))
    if section == "rule":
        return ("event_pattern", "state", "description", "tags")
    if section == "target":
        return ("Arn", "RoleArn")
    if section == "schema_object":
        return ("content_type", "metadata")
    if section == "config_item":
        return tuple(k for k in plan["config_item"]["item"] if k not in plan["config_item"]["key"])
    if section == "alarm":
        return tuple(plan["alarm"])
    if section == "dashboard_widget":
        return ("widget",)
    raise KeyError(section)


# --- reading -----------------------------------------------------------------------------


def read_live(plan: dict[str, Any], clients: Clients) -> dict[str, Any]:
    """Every section of `plan` as it is in AWS now (None where the resource is absent)."""
    return {section: read_section(plan, clients, section) for section in SECTIONS}


def read_section(plan: dict[str, Any], clients: Clients, section: str) -> dict[str, Any] | None:
    return _READERS[section](plan, clients)


def _absent(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in _ABSENT


def _optional(call: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any] | None:
    """The response, or None when AWS says the thing is not there."""
    try:
        return call(**kwargs)
    except ClientError as exc:
        if _absent(exc):
            return None
        raise


def _read_bucket(plan: dict[str, Any], clients: Clients) -> dict[str, Any] | None:
    s3, name = clients("s3"), plan["bucket"]["name"]
    try:
        s3.head_bucket(Bucket=name)
        location = s3.get_bucket_location(Bucket=name).get("LocationConstraint")
        versioning = s3.get_bucket_versioning(Bucket=name).get("Status")
        encryption = _optional(s3.get_bucket_encryption, Bucket=name)
        public_access = _optional(s3.get_public_access_block, Bucket=name)
        ownership = _optional(s3.get_bucket_ownership_controls, Bucket=name)
        policy = _optional(s3.get_bucket_policy, Bucket=name)
        notifications = s3.get_bucket_notification_configuration(Bucket=name)
        lifecycle = _optional(s3.get_bucket_lifecycle_configuration, Bucket=name)
        tagging = _optional(s3.get_bucket_tagging, Bucket=name)
    except ClientError as exc:
        if _absent(exc):  # the bucket is not there, or was deleted while we read it
            return None
        raise
    rules = (encryption or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    ownership_rules = (ownership or {}).get("OwnershipControls", {}).get("Rules", [])
    notified = {
        key: value
        for key, value in notifications.items()
        if key != "ResponseMetadata" and (value or key == "EventBridgeConfiguration")
    }
    return {
        "name": name,
        # us-east-1 answers no constraint; "EU" is the legacy name of eu-west-1.
        "region": {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location),
        "versioning": versioning,
        "encryption": (
            {
                **rules[0].get("ApplyServerSideEncryptionByDefault", {}),
                "BucketKeyEnabled": rules[0].get("BucketKeyEnabled", False),
            }
            if rules
            else None
        ),
        "public_access_block": (
            public_access["PublicAccessBlockConfiguration"] if public_access else None
        ),
        "ownership": ownership_rules[0]["ObjectOwnership"] if ownership_rules else None,
        "policy": json.loads(policy["Policy"]) if policy else None,
        "notifications": notified or None,
        "lifecycle": {"Rules": lifecycle["Rules"]} if lifecycle else None,
        "tags": tags_dict(tagging["TagSet"]) if tagging else None,
    }


def _read_kms(plan: dict[str, Any], clients: Clients) -> dict[str, Any] | None:
    kms, planned = clients("kms"), plan["kms"]
    described = _optional(kms.describe_key, KeyId=planned["alias"])
    if described is None:
        return None
    meta = described["KeyMetadata"]
    live: dict[str, Any] = {
        "alias": planned["alias"],
        "key_id": meta["KeyId"],
        "key_arn": meta["Arn"],
        "key_state": meta["KeyState"],
    }
    if planned["dedicated"]:  # the environment's shared key is not ours to inspect further
        key_id = meta["KeyId"]
        policy = kms.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]
        live.update(
            description=meta.get("Description", ""),
            key_spec=meta.get("KeySpec"),
            key_usage=meta.get("KeyUsage"),
            rotation_enabled=kms.get_key_rotation_status(KeyId=key_id)["KeyRotationEnabled"],
            key_policy=json.loads(policy),
            tags=tags_dict(_kms_tags(kms, key_id)),
        )
    return live


def _kms_tags(kms: Any, key_id: str) -> list[dict[str, str]]:
    tags, marker = [], None
    while True:
        page = kms.list_resource_tags(KeyId=key_id, **({"Marker": marker} if marker else {}))
        tags.extend(page.get("Tags", []))
        marker = page.get("NextMarker")
        if not page.get("Truncated") or not marker:
            return tags


def _read_rule(plan: dict[str, Any], clients: Clients) -> dict[str, Any] | None:
    events, planned = clients("events"), plan["rule"]
    rule = _optional(events.describe_rule, Name=planned["name"], EventBusName=planned["event_bus"])
    if rule is None:
        return None
    tags = events.list_tags_for_resource(ResourceARN=rule["Arn"])["Tags"]
    return {
        "name": rule["Name"],
        "arn": rule["Arn"],
        "event_bus": rule.get("EventBusName", "default"),
        "description": rule.get("Description"),
        "event_pattern": json.loads(rule["EventPattern"]) if rule.get("EventPattern") else None,
        "state": rule.get("State"),
        "tags": tags_dict(tags),
    }


def _read_target(plan: dict[str, Any], clients: Clients) -> dict[str, Any] | None:
    events, planned = clients("events"), plan["target"]
    kwargs = {"Rule": planned["rule"], "EventBusName": plan["rule"]["event_bus"]}
    targets: list[dict[str, Any]] = []
    while True:
        page = _optional(events.list_targets_by_rule, **kwargs)
        if page is None:  # no rule, so no target
            return None
        targets.extend(page.get("Targets", []))
        if not page.get("NextToken"):
            break
        kwargs["NextToken"] = page["NextToken"]
    for target in targets:
        if target["Id"] == planned["Id"]:
            return {
                "rule": planned["rule"],
                "Id": target["Id"],
                "Arn": target.get("Arn"),
                "RoleArn": target.get("RoleArn"),
            }
    return None


def _read_schema_object(plan: dict[str, Any], clients: Clients) -> dict[str, Any] | None:
    planned = plan["schema_object"]
    head = _optional(clients("s3").head_object, Bucket=planned["bucket"], Key=planned["key"])
    if head is None:
        return None
    return {
        "bucket": planned["bucket"],
        "key": planned["key"],
        "content_type": head.get("ContentType"),
        "metadata": head.get("Metadata", {}),
    }


def _read_config_item(plan: dict[str, Any], clients: Clients) -> dict[str, Any] | None:
    planned = plan["config_item"]
    key = {name: {"S": value} for name, value in planned["key"].items()}
    response = _optional(
        clients("dynamodb").get_item, TableName=planned["table"], Key=key, ConsistentRead=True
    )
    if response is None or "Item" not in response:
        return None
    item = {name: _from_dynamodb(value) for name, value in response["Item"].items()}
    return {"table": planned["table"], "key": dict(planned["key"]), "item": item}


def _read_alarm(plan: dict[str, Any], clients: Clients) -> dict[str, Any] | None:
    cloudwatch, name = clients("cloudwatch"), plan["alarm"]["AlarmName"]
    alarms = cloudwatch.describe_alarms(AlarmNames=[name], AlarmTypes=["MetricAlarm"])
    found = [alarm for alarm in alarms.get("MetricAlarms", []) if alarm["AlarmName"] == name]
    if not found:
        return None
    alarm = found[0]
    tags = cloudwatch.list_tags_for_resource(ResourceARN=alarm["AlarmArn"])["Tags"]
    live = {param: alarm.get(param) for param in plan["alarm"] if param != "Tags"}
    live["Tags"] = tags
    return live


def _read_dashboard_widget(plan: dict[str, Any], clients: Clients) -> dict[str, Any] | None:
    planned = plan["dashboard_widget"]
    response = _optional(
        clients("cloudwatch").get_dashboard, DashboardName=planned["dashboard_name"]
    )
    if response is None:
        return None
    title = planned["widget"]["properties"]["title"]
    for widget in json.loads(response.get("DashboardBody") or "{}").get("widgets", []):
        if widget.get("properties", {}).get("title") == title:
            placed = {key: value for key, value in widget.items() if key not in ("x", "y")}
            return {"dashboard_name": planned["dashboard_name"], "widget": placed}
    return None


_READERS: dict[str, Callable[[dict[str, Any], Clients], dict[str, Any] | None]] = {
    "bucket": _read_bucket,
    "kms": _read_kms,
    "rule": _read_rule,
    "target": _read_target,
    "schema_object": _read_schema_object,
    "config_item": _read_config_item,
    "alarm": _read_alarm,
    "dashboard_widget": _read_dashboard_widget,
}


# --- diffing -----------------------------------------------------------------------------


def diff_plan(plan: dict[str, Any], live: dict[str, Any]) -> list[PlanChange]:
    """Every field the plan sets, with what AWS has and what applying the plan would do."""
    return [change for section in SECTIONS for change in diff_section(plan, live, section)]


def diff_section(plan: dict[str, Any], live: dict[str, Any], section: str) -> list[PlanChange]:
    planned, current = _planned_values(plan, section), _live_values(plan, live, section)
    changes = []
    for field in section_fields(plan, section):
        expected = planned.get(field)
        actual = None if current is None else current.get(field)
        if actual is None:
            action = CREATE
        elif normalise(section, field, expected) == normalise(section, field, actual):
            action = UNCHANGED
        else:
            action = UPDATE
        changes.append(PlanChange(section, field, expected, actual, action))
    return changes


def section_actions(changes: list[PlanChange]) -> dict[str, str]:
    """One action per section: create when nothing exists, unchanged when nothing differs,
    update otherwise."""
    by_section: dict[str, set[str]] = {}
    for change in changes:
        by_section.setdefault(change.section, set()).add(change.action)
    return {
        section: actions.pop() if len(actions) == 1 else UPDATE
        for section, actions in by_section.items()
    }


def pending(changes: list[PlanChange]) -> list[PlanChange]:
    """The changes applying the plan would make."""
    return [change for change in changes if change.action != UNCHANGED]


def _planned_values(plan: dict[str, Any], section: str) -> dict[str, Any]:
    if section == "config_item":
        return plan["config_item"]["item"]
    return plan[section]


def _live_values(plan: dict[str, Any], live: dict[str, Any], section: str) -> Any:
    current = live.get(section)
    if current is None:
        return None
    if section == "config_item":
        return current["item"]
    if section == "bucket":
        return {**current, "encryption": _encryption_as_planned(plan, live, current)}
    return current


def _encryption_as_planned(
    plan: dict[str, Any], live: dict[str, Any], bucket: dict[str, Any]
) -> dict[str, Any] | None:
    """Bucket encryption may name the planned key by alias, alias ARN, key id or key ARN."""
    encryption = bucket.get("encryption")
    if not encryption:
        return encryption
    kms = live.get("kms") or {}
    same_key = {
        plan["kms"]["alias"],
        plan["kms"]["alias_arn"],
        kms.get("key_id"),
        kms.get("key_arn"),
    }
    if encryption.get("KMSMasterKeyID") in same_key - {None}:
        return {**encryption, "KMSMasterKeyID": plan["bucket"]["encryption"]["KMSMasterKeyID"]}
    return encryption


# --- normalising -------------------------------------------------------------------------


def normalise(section: str, field: str, value: Any) -> Any:
    """A value in the form the diff compares (see the module docstring)."""
    if value is None:
        return None
    if field in ("policy", "key_policy"):
        return normalise_policy(value)
    if field in ("tags", "Tags"):  # AWS-reserved aws:* tags are not ours to set or remove
        return {k: v for k, v in tags_dict(value).items() if not k.startswith("aws:")}
    if field == "event_pattern":
        return _unordered(value)
    if field == "lifecycle":
        return _normalise_lifecycle(value)
    if field == "Dimensions":
        return sorted((d["Name"], d["Value"]) for d in value)
    if field == "Threshold":
        return float(value)
    if field in ("AlarmActions", "OKActions", "InsufficientDataActions"):
        return sorted(value)
    if section == "config_item" and isinstance(value, list | set | tuple):
        return sorted(value, key=canonical_json)
    if field == "metadata":
        return {str(k).lower(): v for k, v in value.items()}
    return value


def normalise_policy(policy: dict[str, Any] | str) -> dict[str, Any]:
    """An IAM/S3/KMS policy with everything order-insensitive made comparable."""
    if isinstance(policy, str):
        policy = json.loads(policy)
    statements = policy.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    return {
        **{key: value for key, value in policy.items() if key != "Statement"},
        "Statement": sorted((_normalise_statement(s) for s in statements), key=canonical_json),
    }


def tags_dict(tags: Any) -> dict[str, str]:
    """Tags as {key: value} from a dict, [{Key, Value}] or KMS's [{TagKey, TagValue}]."""
    if isinstance(tags, dict):
        return {str(k): str(v) for k, v in tags.items()}
    return {
        str(tag.get("Key", tag.get("TagKey"))): str(tag.get("Value", tag.get("TagValue", "")))
        for tag in tags or []
    }


def _normalise_statement(statement: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in statement.items():
        if key in ("Action", "NotAction", "Resource", "NotResource"):
            out[key] = sorted(set(_as_list(value)))
        elif key in ("Principal", "NotPrincipal") and isinstance(value, dict):
            out[key] = {kind: sorted(set(_as_list(ids))) for kind, ids in value.items()}
        elif key == "Condition":
            out[key] = {
                operator: {
                    name: sorted({_condition_value(v) for v in _as_list(values)})
                    for name, values in pairs.items()
                }
                for operator, pairs in value.items()
            }
        else:
            out[key] = value
    return out


def _condition_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _normalise_lifecycle(value: dict[str, Any]) -> list[dict[str, Any]]:
    rules = []
    for rule in value.get("Rules", []):
        rule = dict(rule)
        if rule.get("Filter") in ({}, {"Prefix": ""}):
            rule.pop("Filter")
        if rule.get("Prefix") == "":
            rule.pop("Prefix")
        for key in ("Transitions", "NoncurrentVersionTransitions"):
            if rule.get(key):
                rule[key] = sorted(rule[key], key=canonical_json)
            else:
                rule.pop(key, None)
        rules.append(rule)
    return sorted(rules, key=lambda rule: str(rule.get("ID", "")))


def _unordered(value: Any) -> Any:
    """JSON with every list treated as a set (EventBridge pattern value lists are ORs)."""
    if isinstance(value, dict):
        return {key: _unordered(item) for key, item in value.items()}
    if isinstance(value, list):
        return sorted((_unordered(item) for item in value), key=canonical_json)
    return value


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple | set) else [value]


def _from_dynamodb(value: dict[str, Any]) -> Any:
    """A DynamoDB attribute value as plain JSON-serialisable Python."""
    return _plain(_DESERIALIZER.deserialize(value))


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, set | frozenset):
        return sorted((_plain(item) for item in value), key=canonical_json)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, Binary):
        return bytes(value).hex()
    return value
