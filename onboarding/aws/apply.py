"""Apply an approved plan to one environment: one idempotent `apply_*` per plan section
(the provision run's steps, in `onboarding.steps.provision`).

Every `apply_*` function reads its section (`onboarding.aws.live`), changes only the fields
that differ (`onboarding.aws.diff.changed_fields`), and logs one created / updated /
unchanged line per thing it touches. Running it twice, or after a crash in the middle,
converges on the plan and never makes a second resource: the bucket, rule, target, alarm
and dashboard widget are found by name, the dedicated KMS key by its alias
(`portal.aws.ensure_kms_key`). A broken rule (a bucket in another region, a disabled key)
raises ApplicationError.

`clients(service)` returns a boto3 client for the plan's environment (in steps, ``ctx.aws``);
`log(action, message)` is ``ctx.log``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import ClientError
from django.db import transaction

from onboarding.aws.diff import changed_fields, normalise, tags_dict
from onboarding.aws.live import Clients, absent, read_dashboard, read_section, widget_title
from portal.aws import ensure_kms_key, error_code
from portal.errors import ApplicationError
from portal.models import Environment

Log = Callable[[str, str], None]

_SERIALIZER = TypeSerializer()


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def kms_tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"TagKey": key, "TagValue": value} for key, value in sorted(tags.items())]


def live_sections(plan: dict[str, Any], clients: Clients, *sections: str) -> dict[str, Any]:
    return {section: read_section(plan, clients, section) for section in sections}


@contextmanager
def dashboard_lock(plan: dict[str, Any]) -> Iterator[None]:
    """Hold while reading, changing and writing back an environment's shared dashboard.
    CloudWatch has no conditional PutDashboard, so two runs merging their widgets at the
    same moment would each write back what they read and one widget would be lost. The
    lock is the environment's row (PostgreSQL: FOR UPDATE; SQLite: the IMMEDIATE
    transaction already holds the one write lock) for the two AWS calls."""
    with transaction.atomic():
        name = plan["environment"]["name"]
        list(Environment.objects.select_for_update().filter(name=name).values_list("pk"))
        yield


# --- apply: KMS ---------------------------------------------------------------------------------


def apply_kms(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    """The environment's key must exist and be enabled; a dedicated key is made (once) with
    rotation, its policy and tags."""
    kms, planned = clients("kms"), plan["kms"]
    alias = planned["alias"]
    if not planned["dedicated"]:
        live = read_section(plan, clients, "kms")
        if live is None:
            raise ApplicationError(
                f"The environment's KMS key {alias} does not exist; the environment is not "
                "set up (seed it, or fix the environment's key alias)."
            )
        if live["key_state"] != "Enabled":
            raise ApplicationError(f"The environment's KMS key {alias} is {live['key_state']}.")
        log("unchanged", f"KMS key {alias} ({live['key_id']}) is enabled")
        actions = {"key": "unchanged"}
        return {"alias": alias, "key_id": live["key_id"], "dedicated": False, "actions": actions}

    key_id, action = _ensure_kms_key(kms, planned)
    log(action, f"KMS key {alias} ({key_id})")
    actions = {"key": action}
    changed = changed_fields(plan, live_sections(plan, clients, "kms"), "kms")
    if "key_state" in changed:
        raise ApplicationError(f"The dedicated KMS key {alias} is not enabled.")
    if "rotation_enabled" in changed:
        kms.enable_key_rotation(KeyId=key_id)
    if "key_policy" in changed:
        kms.put_key_policy(
            KeyId=key_id, PolicyName="default", Policy=json.dumps(planned["key_policy"])
        )
    if "description" in changed:
        kms.update_key_description(KeyId=key_id, Description=planned["description"])
    if "tags" in changed:
        kms.tag_resource(KeyId=key_id, Tags=kms_tag_list(planned["tags"]))
    for field in ("rotation_enabled", "key_policy", "description", "tags"):
        done = "unchanged" if field not in changed else "updated"
        if action == "created" and done == "updated":
            done = "created"
        actions[field] = done
        log(done, f"KMS key {alias}: {field.replace('_', ' ')}")
    for field in ("key_spec", "key_usage"):
        if field in changed:
            raise ApplicationError(
                f"The KMS key behind {alias} has {field} {changed[field].actual}, not "
                f"{changed[field].expected}; it cannot be changed in place."
            )
    return {"alias": alias, "key_id": key_id, "dedicated": True, "actions": actions}


def _ensure_kms_key(kms: Any, planned: dict[str, Any]) -> tuple[str, str]:
    return ensure_kms_key(
        kms, alias=planned["alias"], description=planned["description"], tags=planned["tags"]
    )


# --- apply: the bucket ------------------------------------------------------------------------

BUCKET_SETTINGS = (
    "versioning",
    "encryption",
    "public_access_block",
    "ownership",
    "lifecycle",
    "tags",
)


def ensure_bucket_exists(plan: dict[str, Any], clients: Clients, log: Log) -> str:
    """Create the raw bucket unless it is there (CreateBucket in us-east-1 answers 200 for a
    bucket one already owns, and resets its ACL: so read first)."""
    s3, bucket = clients("s3"), plan["bucket"]
    try:
        s3.head_bucket(Bucket=bucket["name"])
    except ClientError as exc:
        if not absent(exc):
            raise
    else:
        log("unchanged", f"S3 bucket {bucket['name']} exists")
        return "unchanged"
    kwargs: dict[str, Any] = {"Bucket": bucket["name"]}
    if bucket["region"] != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": bucket["region"]}
    try:
        s3.create_bucket(**kwargs)
    except ClientError as exc:
        if error_code(exc) != "BucketAlreadyOwnedByYou":  # another worker won the race
            raise
    log("created", f"S3 bucket {bucket['name']}")
    return "created"


def apply_bucket(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    """The bucket and its settings: versioning, SSE-KMS with a bucket key, Block Public
    Access, ownership enforced, lifecycle and tags, each written only when it differs."""
    s3, bucket = clients("s3"), plan["bucket"]
    name = bucket["name"]
    created = ensure_bucket_exists(plan, clients, log)
    changed = changed_fields(plan, live_sections(plan, clients, "bucket", "kms"), "bucket")
    if "region" in changed:
        raise ApplicationError(
            f"{name} exists in {changed['region'].actual}, not {bucket['region']}; "
            "a bucket cannot move region."
        )
    writers: dict[str, Callable[[], Any]] = {
        "versioning": lambda: s3.put_bucket_versioning(
            Bucket=name, VersioningConfiguration={"Status": bucket["versioning"]}
        ),
        "encryption": lambda: s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": {
                            "SSEAlgorithm": bucket["encryption"]["SSEAlgorithm"],
                            "KMSMasterKeyID": bucket["encryption"]["KMSMasterKeyID"],
                        },
                        "BucketKeyEnabled": bucket["encryption"]["BucketKeyEnabled"],
                    }
                ]
            },
        ),
        "public_access_block": lambda: s3.put_public_access_block(
            Bucket=name, PublicAccessBlockConfiguration=bucket["public_access_block"]
        ),
        "ownership": lambda: s3.put_bucket_ownership_controls(
            Bucket=name, OwnershipControls={"Rules": [{"ObjectOwnership": bucket["ownership"]}]}
        ),
        "lifecycle": lambda: s3.put_bucket_lifecycle_configuration(
            Bucket=name, LifecycleConfiguration=bucket["lifecycle"]
        ),
        "tags": lambda: s3.put_bucket_tagging(
            Bucket=name, Tagging={"TagSet": tag_list(bucket["tags"])}
        ),
    }
    actions = {"bucket": created}
    for field in BUCKET_SETTINGS:
        change = changed.get(field)
        if change is None:
            actions[field] = "unchanged"
        else:
            writers[field]()
            actions[field] = "created" if change.action == "create" else "updated"
        log(actions[field], f"S3 bucket {name}: {field.replace('_', ' ')}")
    return {"bucket": name, "actions": actions}


def apply_bucket_policy(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    """TLS only for everyone, PutObject under incoming/ for the producer role."""
    s3, bucket = clients("s3"), plan["bucket"]
    change = changed_fields(plan, live_sections(plan, clients, "bucket", "kms"), "bucket").get(
        "policy"
    )
    action = "unchanged"
    if change is not None:
        s3.put_bucket_policy(Bucket=bucket["name"], Policy=json.dumps(bucket["policy"]))
        action = "created" if change.action == "create" else "updated"
    log(action, f"S3 bucket {bucket['name']}: bucket policy")
    return {"bucket": bucket["name"], "actions": {"policy": action}}


def apply_notifications(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    """EventBridge notifications on, keeping any other notification the bucket has."""
    s3, name = clients("s3"), plan["bucket"]["name"]
    current = s3.get_bucket_notification_configuration(Bucket=name)
    current.pop("ResponseMetadata", None)
    action = "unchanged"
    if "EventBridgeConfiguration" not in current:
        action = "created" if not any(current.values()) else "updated"
        wanted = {k: v for k, v in current.items() if v}
        wanted.update(plan["bucket"]["notifications"])
        s3.put_bucket_notification_configuration(Bucket=name, NotificationConfiguration=wanted)
    log(action, f"S3 bucket {name}: EventBridge notifications")
    return {"bucket": name, "actions": {"notifications": action}}


# --- apply: EventBridge -----------------------------------------------------------------------


def _current(
    plan: dict[str, Any], clients: Clients, section: str
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The section as AWS has it (None when absent), and {field: change} where it differs."""
    live = live_sections(plan, clients, section)
    return live[section], changed_fields(plan, live, section)


def _retag(
    client: Any, arn: str, section: str, current: Any, planned: list[dict[str, str]]
) -> None:
    """Put the planned tags on a rule or an alarm and take off every other tag (aws:* tags
    are AWS's own and stay)."""
    extra = set(normalise(section, "tags", current)) - set(tags_dict(planned))
    if extra:
        client.untag_resource(ResourceARN=arn, TagKeys=sorted(extra))
    client.tag_resource(ResourceARN=arn, Tags=planned)


def _alarm_arn(cw: Any, name: str) -> str:
    return cw.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["AlarmArn"]


def apply_rule(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    """The rule matching objects created under incoming/ in the raw bucket."""
    events, rule = clients("events"), plan["rule"]
    current, changed = _current(plan, clients, "rule")
    put = {
        "Name": rule["name"],
        "EventBusName": rule["event_bus"],
        "EventPattern": json.dumps(rule["event_pattern"]),
        "State": rule["state"],
        "Description": rule["description"],
    }
    if current is None:
        events.put_rule(**put, Tags=tag_list(rule["tags"]))
        log("created", f"EventBridge rule {rule['name']}")
        return {"rule": rule["name"], "actions": {"rule": "created", "tags": "unchanged"}}
    action = tags = "unchanged"
    if set(changed) - {"tags"}:
        events.put_rule(**put)
        action = "updated"
    log(action, f"EventBridge rule {rule['name']}")
    if "tags" in changed:
        _retag(events, current["arn"], "rule", current["tags"], tag_list(rule["tags"]))
        tags = "updated"
    log(tags, f"EventBridge rule {rule['name']}: tags")
    return {"rule": rule["name"], "actions": {"rule": action, "tags": tags}}


def apply_target(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    """The rule's target: the environment's state machine, through the events role."""
    events, target = clients("events"), plan["target"]
    current, changed = _current(plan, clients, "target")
    action = "unchanged"
    if changed:
        events.put_targets(
            Rule=target["rule"],
            EventBusName=plan["rule"]["event_bus"],
            Targets=[{"Id": target["Id"], "Arn": target["Arn"], "RoleArn": target["RoleArn"]}],
        )
        action = "created" if current is None else "updated"
    log(action, f"EventBridge target {target['Id']} of {target['rule']} → {target['Arn']}")
    return {"rule": target["rule"], "actions": {"target": action}}


# --- apply: schema, configuration, alarm, dashboard ---------------------------------------------


def apply_schema_object(
    plan: dict[str, Any], schema_text: str, clients: Clients, log: Log
) -> dict[str, Any]:
    """The JSON Schema where the validate Lambda reads it; put only when the content, content
    type or metadata differ (the schema bucket is versioned: each put is a new version)."""
    s3, planned = clients("s3"), plan["schema_object"]
    body = schema_text.encode("utf-8")
    sha = hashlib.sha256(body).hexdigest()
    current, changed = _current(plan, clients, "schema_object")
    differs = bool(changed)
    if current is not None and not differs:
        stored = s3.get_object(Bucket=planned["bucket"], Key=planned["key"])["Body"].read()
        differs = hashlib.sha256(stored).hexdigest() != sha
    action = "unchanged"
    if differs:
        s3.put_object(
            Bucket=planned["bucket"],
            Key=planned["key"],
            Body=body,
            ContentType=planned["content_type"],
            Metadata=planned["metadata"],
        )
        action = "created" if current is None else "updated"
    log(action, f"schema {planned['uri']} (sha256 {sha[:12]}…)")
    return {"uri": planned["uri"], "sha256": sha, "actions": {"schema_object": action}}


def apply_config_item(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    """The pipeline's configuration item for the source; attributes the plan does not name
    (the pipeline may add some) are kept."""
    ddb, planned = clients("dynamodb"), plan["config_item"]
    current, changed = _current(plan, clients, "config_item")
    action = "unchanged"
    if current is None:
        ddb.put_item(
            TableName=planned["table"],
            Item={k: _SERIALIZER.serialize(v) for k, v in planned["item"].items()},
        )
        action = "created"
    elif changed:
        names = {f"#a{i}": field for i, field in enumerate(changed)}
        ddb.update_item(
            TableName=planned["table"],
            Key={k: {"S": v} for k, v in planned["key"].items()},
            UpdateExpression="SET " + ", ".join(f"{n} = :{n[1:]}" for n in names),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={
                f":{n[1:]}": _SERIALIZER.serialize(planned["item"][field])
                for n, field in names.items()
            },
        )
        action = "updated"
    detail = f" ({', '.join(changed)})" if action == "updated" else ""
    log(action, f"configuration item {planned['key']['pk']} in {planned['table']}{detail}")
    return {"table": planned["table"], "actions": {"config_item": action}}


def apply_alarm(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    """The validation-errors alarm; PutMetricAlarm only when a parameter differs, tags with
    TagResource."""
    cw, planned = clients("cloudwatch"), plan["alarm"]
    current, changed = _current(plan, clients, "alarm")
    params = {k: v for k, v in planned.items() if k != "Tags"}
    name = planned["AlarmName"]
    if current is None:
        cw.put_metric_alarm(**params, Tags=planned["Tags"])
        log("created", f"CloudWatch alarm {name}")
        return {"alarm": name, "actions": {"alarm": "created", "tags": "created"}}
    action = tags = "unchanged"
    if set(changed) - {"Tags"}:
        cw.put_metric_alarm(**params)
        action = "updated"
    log(action, f"CloudWatch alarm {name}" + (f" ({', '.join(changed)})" if changed else ""))
    if "Tags" in changed:
        _retag(cw, _alarm_arn(cw, name), "alarm", current["Tags"], planned["Tags"])
        tags = "updated"
    log(tags, f"CloudWatch alarm {name}: tags")
    return {"alarm": name, "actions": {"alarm": action, "tags": tags}}


def apply_dashboard_widget(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    """Merge the source's widget (found by its title) into the environment's dashboard,
    keeping every other widget as it is."""
    cw, planned = clients("cloudwatch"), plan["dashboard_widget"]
    name, widget = planned["dashboard_name"], planned["widget"]
    title = widget["properties"]["title"]
    with dashboard_lock(plan):
        action = _merge_widget(cw, name, widget, title)
    log(action, f"dashboard {name}: widget {title!r}")
    return {"dashboard": name, "widget": title, "actions": {"dashboard_widget": action}}


def _merge_widget(cw: Any, name: str, widget: dict[str, Any], title: str) -> str:
    body = read_dashboard(cw, name)
    widgets = list(body.get("widgets", []))
    mine = [i for i, w in enumerate(widgets) if widget_title(w) == title]
    action = "unchanged"
    if not mine:
        widgets.append(widget)  # no x/y: CloudWatch places it below the others
        action = "created"
    else:
        first = widgets[mine[0]]
        placed = {k: v for k, v in first.items() if k not in ("x", "y")}
        if canonical(placed) != canonical(widget) or len(mine) > 1:
            position = {k: first[k] for k in ("x", "y") if k in first}
            widgets[mine[0]] = {**widget, **position}
            widgets = [w for i, w in enumerate(widgets) if i not in mine[1:]]
            action = "updated"
    if action != "unchanged":
        cw.put_dashboard(DashboardName=name, DashboardBody=json.dumps({**body, "widgets": widgets}))
    return action


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def apply_tags(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    """Check, and put right, the tags of every tagged resource (bucket, rule, alarm, and
    the dedicated key): cost allocation by Source and Environment depends on them."""
    live = live_sections(plan, clients, "bucket", "kms", "rule", "alarm")
    actions: dict[str, str] = {}
    checks = [("bucket", "tags"), ("rule", "tags"), ("alarm", "Tags")]
    if plan["kms"]["dedicated"]:
        checks.append(("kms", "tags"))
    for section, field in checks:
        if live[section] is None:
            raise ApplicationError(f"The {section} is missing; apply the plan from the start.")
        change = changed_fields(plan, live, section).get(field)
        action = "unchanged"
        if change is not None:
            _put_tags(plan, clients, live, section)
            action = "updated"
        actions[section] = action
        log(action, f"tags of the {section}: {canonical(tags_dict(plan['tags']))}")
    return {"tags": plan["tags"], "actions": actions}


def _put_tags(plan: dict[str, Any], clients: Clients, live: dict[str, Any], section: str) -> None:
    if section == "bucket":
        clients("s3").put_bucket_tagging(
            Bucket=plan["bucket"]["name"], Tagging={"TagSet": tag_list(plan["bucket"]["tags"])}
        )
    elif section == "rule":
        rule = live["rule"]
        _retag(clients("events"), rule["arn"], "rule", rule["tags"], tag_list(plan["rule"]["tags"]))
    elif section == "alarm":
        cw = clients("cloudwatch")
        arn = _alarm_arn(cw, plan["alarm"]["AlarmName"])
        _retag(cw, arn, "alarm", live["alarm"]["Tags"], plan["alarm"]["Tags"])
    else:
        clients("kms").tag_resource(KeyId=live["kms"]["key_id"], Tags=kms_tag_list(plan["tags"]))
