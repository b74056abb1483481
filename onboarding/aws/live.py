"""What a plan's resources look like in AWS now: read only, in the plan's own shape.

`read_live(plan, clients)` reads every section of a plan (`onboarding.plan.SECTIONS`); a
resource that does not exist reads as None. Provisioning steps read one section at a time
(`read_section(plan, clients, name)`) and compare it with `onboarding.aws.diff`.

"Not there" is one rule for every read here (`absent`: `portal.aws.is_absent` plus the
codes S3 answers HEAD requests and missing ownership controls with). A bucket's settings
are read in one place, `read_bucket_settings`, which the security baseline reads too.

`clients(service)` returns a boto3 client for the plan's account and region, e.g.
``functools.partial(portal.aws.client, environment=env)``. Errors other than "not found"
(access denied, throttling) propagate for the caller to classify.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import Binary, TypeDeserializer
from botocore.exceptions import ClientError

from onboarding.aws.diff import tags_dict
from onboarding.plan import SECTIONS, canonical_json
from portal.aws import is_absent

Clients = Callable[[str], Any]

_DESERIALIZER = TypeDeserializer()
# "Not there" beyond portal.aws.ABSENT_CODES: S3 answers HEAD requests with the bare
# "NotFound", and a bucket without ownership controls with its own code.
_ABSENT_TOO = ("NotFound", "OwnershipControlsNotFoundError")


# --- reading -----------------------------------------------------------------------------


def read_live(plan: dict[str, Any], clients: Clients) -> dict[str, Any]:
    """Every section of `plan` as it is in AWS now (None where the resource is absent)."""
    return {section: read_section(plan, clients, section) for section in SECTIONS}


def read_section(plan: dict[str, Any], clients: Clients, section: str) -> dict[str, Any] | None:
    return _READERS[section](plan, clients)


def absent(exc: BaseException) -> bool:
    """Whether an error from a read says the thing is not there (not yet, or any more)."""
    return is_absent(exc, *_ABSENT_TOO)


def optional(call: Callable[..., dict[str, Any]], **kwargs: Any) -> dict[str, Any] | None:
    """The response, or None when AWS says the thing is not there."""
    try:
        return call(**kwargs)
    except ClientError as exc:
        if absent(exc):
            return None
        raise


def read_bucket_settings(s3: Any, name: str) -> dict[str, Any] | None:
    """A bucket's settings as S3 answers them, one call each (None for a setting that is
    not configured), or None when the bucket is not there or was deleted while being read.
    The plan diff and the security baseline both read a bucket here."""
    try:
        s3.head_bucket(Bucket=name)
        return {
            "location": s3.get_bucket_location(Bucket=name).get("LocationConstraint"),
            "versioning": s3.get_bucket_versioning(Bucket=name).get("Status"),
            "encryption": optional(s3.get_bucket_encryption, Bucket=name),
            "public_access_block": optional(s3.get_public_access_block, Bucket=name),
            "ownership": optional(s3.get_bucket_ownership_controls, Bucket=name),
            "policy": optional(s3.get_bucket_policy, Bucket=name),
            "notifications": s3.get_bucket_notification_configuration(Bucket=name),
            "lifecycle": optional(s3.get_bucket_lifecycle_configuration, Bucket=name),
            "tagging": optional(s3.get_bucket_tagging, Bucket=name),
            "logging": s3.get_bucket_logging(Bucket=name).get("LoggingEnabled"),
        }
    except ClientError as exc:
        if absent(exc):
            return None
        raise


def read_dashboard(cloudwatch: Any, name: str) -> dict[str, Any]:
    """A CloudWatch dashboard's body, or {} when there is none yet."""
    found = optional(cloudwatch.get_dashboard, DashboardName=name)
    return json.loads((found or {}).get("DashboardBody") or "{}")


def widget_title(widget: dict[str, Any]) -> str:
    return str((widget.get("properties") or {}).get("title", ""))


def _read_bucket(plan: dict[str, Any], clients: Clients) -> dict[str, Any] | None:
    name = plan["bucket"]["name"]
    found = read_bucket_settings(clients("s3"), name)
    if found is None:
        return None
    location, encryption, ownership = found["location"], found["encryption"], found["ownership"]
    public_access, policy, lifecycle = (
        found["public_access_block"],
        found["policy"],
        found["lifecycle"],
    )
    rules = (encryption or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    ownership_rules = (ownership or {}).get("OwnershipControls", {}).get("Rules", [])
    notified = {
        key: value
        for key, value in found["notifications"].items()
        if key != "ResponseMetadata" and (value or key == "EventBridgeConfiguration")
    }
    return {
        "name": name,
        # us-east-1 answers no constraint; "EU" is the legacy name of eu-west-1.
        "region": {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(location, location),
        "versioning": found["versioning"],
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
        "tags": tags_dict(found["tagging"]["TagSet"]) if found["tagging"] else None,
    }


def _read_kms(plan: dict[str, Any], clients: Clients) -> dict[str, Any] | None:
    kms, planned = clients("kms"), plan["kms"]
    described = optional(kms.describe_key, KeyId=planned["alias"])
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
    rule = optional(events.describe_rule, Name=planned["name"], EventBusName=planned["event_bus"])
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
        page = optional(events.list_targets_by_rule, **kwargs)
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
    head = optional(clients("s3").head_object, Bucket=planned["bucket"], Key=planned["key"])
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
    response = optional(
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
    response = optional(
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
