"""Teardown: remove what provisioning made, one idempotent `remove_*` per section (the
teardown run's steps, in `onboarding.steps.teardown`); what is already gone logs
"unchanged". Data is never deleted: the raw bucket goes only when it holds no object
version and no delete marker."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from onboarding.aws.apply import Log, dashboard_lock
from onboarding.aws.live import Clients, absent, read_dashboard, widget_title
from portal.errors import ApplicationError

# --- teardown ---------------------------------------------------------------------------------


def remove_target_and_rule(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    events, rule = clients("events"), plan["rule"]
    bus = rule["event_bus"]
    try:
        targets = events.list_targets_by_rule(Rule=rule["name"], EventBusName=bus)["Targets"]
    except ClientError as exc:
        if not absent(exc):
            raise
        log("unchanged", f"EventBridge rule {rule['name']} is already gone")
        return {"rule": "unchanged", "targets": "unchanged"}
    if targets:
        events.remove_targets(Rule=rule["name"], EventBusName=bus, Ids=[t["Id"] for t in targets])
        log(
            "deleted",
            f"EventBridge targets {', '.join(t['Id'] for t in targets)} of {rule['name']}",
        )
    events.delete_rule(Name=rule["name"], EventBusName=bus)
    log("deleted", f"EventBridge rule {rule['name']}")
    return {"rule": "deleted", "targets": "deleted" if targets else "unchanged"}


def remove_notifications(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    s3, name = clients("s3"), plan["bucket"]["name"]
    try:
        current = s3.get_bucket_notification_configuration(Bucket=name)
    except ClientError as exc:
        if not absent(exc):
            raise
        log("unchanged", f"S3 bucket {name} is already gone")
        return {"notifications": "unchanged"}
    current.pop("ResponseMetadata", None)
    if "EventBridgeConfiguration" not in current:
        log("unchanged", f"S3 bucket {name}: EventBridge notifications already off")
        return {"notifications": "unchanged"}
    kept = {k: v for k, v in current.items() if v and k != "EventBridgeConfiguration"}
    s3.put_bucket_notification_configuration(Bucket=name, NotificationConfiguration=kept)
    log("deleted", f"S3 bucket {name}: EventBridge notifications")
    return {"notifications": "deleted"}


def remove_alarm(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    cw, name = clients("cloudwatch"), plan["alarm"]["AlarmName"]
    if not cw.describe_alarms(AlarmNames=[name]).get("MetricAlarms"):
        log("unchanged", f"CloudWatch alarm {name} is already gone")
        return {"alarm": "unchanged"}
    cw.delete_alarms(AlarmNames=[name])
    log("deleted", f"CloudWatch alarm {name}")
    return {"alarm": "deleted"}


def remove_dashboard_widget(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    cw, planned = clients("cloudwatch"), plan["dashboard_widget"]
    name, title = planned["dashboard_name"], planned["widget"]["properties"]["title"]
    with dashboard_lock(plan):
        body = read_dashboard(cw, name)
        widgets = body.get("widgets", [])
        kept = [w for w in widgets if widget_title(w) != title]
        if len(kept) < len(widgets):
            cw.put_dashboard(
                DashboardName=name, DashboardBody=json.dumps({**body, "widgets": kept})
            )
    if len(kept) == len(widgets):
        log("unchanged", f"dashboard {name}: no widget {title!r}")
        return {"dashboard_widget": "unchanged"}
    log("deleted", f"dashboard {name}: widget {title!r} (other widgets kept)")
    return {"dashboard_widget": "deleted"}


def remove_config_item(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    """Only the CONFIG item: the pipeline's per-file metadata items are its records."""
    ddb, planned = clients("dynamodb"), plan["config_item"]
    old = ddb.delete_item(
        TableName=planned["table"],
        Key={k: {"S": v} for k, v in planned["key"].items()},
        ReturnValues="ALL_OLD",
    ).get("Attributes")
    action = "deleted" if old else "unchanged"
    log(action, f"configuration item {planned['key']['pk']} in {planned['table']}")
    return {"config_item": action}


def remove_schema_objects(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    """Every version of every schema of the source (schemas/<source>/)."""
    s3, planned = clients("s3"), plan["schema_object"]
    prefix = planned["key"].rsplit("/", 1)[0] + "/"
    doomed = _versions(s3, planned["bucket"], prefix)
    for start in range(0, len(doomed), 1000):
        s3.delete_objects(
            Bucket=planned["bucket"],
            Delete={"Objects": doomed[start : start + 1000], "Quiet": True},
        )
    action = "deleted" if doomed else "unchanged"
    log(action, f"{len(doomed)} version(s) under s3://{planned['bucket']}/{prefix}")
    return {"schema_versions_deleted": len(doomed)}


def _versions(s3: Any, bucket: str, prefix: str = "") -> list[dict[str, str]]:
    found = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            found.append({"Key": entry["Key"], "VersionId": entry["VersionId"]})
    return found


def remove_bucket_if_empty(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    """Delete the raw bucket only when it holds no object version and no delete marker;
    otherwise refuse, deleting nothing."""
    s3, name = clients("s3"), plan["bucket"]["name"]
    try:
        held = _versions(s3, name)
    except ClientError as exc:
        if not absent(exc):
            raise
        log("unchanged", f"S3 bucket {name} is already gone")
        return {"bucket": "unchanged"}
    if held:
        raise ApplicationError(
            f"{name} still holds {len(held)} object version(s); empty it first — nothing of "
            "the data was deleted."
        )
    s3.delete_bucket(Bucket=name)
    log("deleted", f"S3 bucket {name} (it was empty)")
    return {"bucket": "deleted"}
