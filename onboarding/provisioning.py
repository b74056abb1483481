"""Applying an approved onboarding plan to one environment, and taking it down again.

Every `apply_*` function is idempotent: it reads the section with `onboarding.live`
(`read_section` + `diff_section`), changes only the fields that differ, and logs one
created / updated / unchanged line per thing it touches. Running it twice, or after a crash
in the middle, converges on the plan and never makes a second resource: the bucket, rule,
target, alarm and dashboard widget are found by name, the dedicated KMS key by its alias
(`portal.aws.ensure_kms_key`).

Every `remove_*` function (teardown) is idempotent too: what is already gone logs
"unchanged". Data is never deleted: the raw bucket goes only when it holds no object
version and no delete marker.

`clients(service)` returns a boto3 client for the plan's environment (in steps,
``ctx.aws``); `log(action, message)` is ``ctx.log``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import ClientError

from onboarding.live import (
    UNCHANGED,
    PlanChange,
    diff_plan,
    diff_section,
    normalise,
    pending,
    read_live,
    read_section,
    tags_dict,
)
from onboarding.models import Decision, OnboardingRequest, RequestStatus
from portal.aws import KMS_ALIAS_TAG, ensure_kms_key
from portal.errors import ApplicationError

Clients = Callable[[str], Any]
Log = Callable[[str, str], None]

_SERIALIZER = TypeSerializer()

PROVISION_KIND = "onboarding.provision"
SMOKE_KIND = "onboarding.smoke_test"
DRIFT_KIND = "onboarding.drift_check"
TEARDOWN_KIND = "onboarding.teardown"
CRITERIA_KIND = "onboarding.success_criteria"


# --- the plan and the approval ----------------------------------------------------------------


def plan_for(request: OnboardingRequest, environment: Any) -> dict[str, Any]:
    """The request's plan for `environment`, built now from the request (as approved)."""
    from onboarding.services import environment_plans, spec_snapshot

    (found,) = environment_plans(spec=spec_snapshot(request), environments=[environment])
    if found.plan is None:
        raise ApplicationError(f"There is no plan for {environment.name}: {found.error}")
    return found.plan


def approval_problem(request: OnboardingRequest) -> str | None:
    """Why the request may not be applied to AWS now, or None when it may: it must be
    approved, by both live approvals, of exactly its current state (spec, samples, plans)."""
    from onboarding.services import request_current_digest

    if request.status != RequestStatus.APPROVED:
        return (
            f"{request.key} is {request.get_status_display().lower()}, not approved; "
            "only an approved request can be provisioned."
        )
    live = list(request.approvals.filter(decision=Decision.APPROVED, voided_at__isnull=True))
    roles = {approval.role for approval in live}
    if len(live) < 2 or len(roles) < 2:
        return f"{request.key} does not hold both approvals (security and governance)."
    digest = request_current_digest(request)
    if any(approval.digest != digest for approval in live):
        return (
            f"The request changed after it was approved (revision {request.revision}); "
            "it needs approving again."
        )
    return None


# --- helpers ------------------------------------------------------------------------------------


def differs(change: PlanChange) -> bool:
    """Whether applying the plan would change this field. The tag `ensure_kms_key` puts on
    a key it makes (onramp:alias) is the portal's own bookkeeping, not drift."""
    if change.action == UNCHANGED:
        return False
    if change.section == "kms" and change.field == "tags" and change.actual is not None:
        actual = {k: v for k, v in tags_dict(change.actual).items() if k != KMS_ALIAS_TAG}
        return normalise("kms", "tags", actual) != normalise("kms", "tags", change.expected)
    return True


def _changed(plan: dict[str, Any], live: dict[str, Any], section: str) -> dict[str, Any]:
    """{field: change} for the fields of `section` that differ from the plan."""
    return {c.field: c for c in diff_section(plan, live, section) if differs(c)}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def _live(plan: dict[str, Any], clients: Clients, *sections: str) -> dict[str, Any]:
    return {section: read_section(plan, clients, section) for section in sections}


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
    changed = _changed(plan, _live(plan, clients, "kms"), "kms")
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
        kms.tag_resource(
            KeyId=key_id,
            Tags=[{"TagKey": k, "TagValue": v} for k, v in sorted(planned["tags"].items())],
        )
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
        if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
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
        if _code(exc) != "BucketAlreadyOwnedByYou":  # another worker won the race
            raise
    log("created", f"S3 bucket {bucket['name']}")
    return "created"


def apply_bucket(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    """The bucket and its settings: versioning, SSE-KMS with a bucket key, Block Public
    Access, ownership enforced, lifecycle and tags, each written only when it differs."""
    s3, bucket = clients("s3"), plan["bucket"]
    name = bucket["name"]
    created = ensure_bucket_exists(plan, clients, log)
    changed = _changed(plan, _live(plan, clients, "bucket", "kms"), "bucket")
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
            Bucket=name, Tagging={"TagSet": _tag_list(bucket["tags"])}
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
    change = _changed(plan, _live(plan, clients, "bucket", "kms"), "bucket").get("policy")
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


def apply_rule(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    """The rule matching objects created under incoming/ in the raw bucket."""
    events, rule = clients("events"), plan["rule"]
    live = _live(plan, clients, "rule")
    changed = _changed(plan, live, "rule")
    action = "unchanged"
    if live["rule"] is None:
        events.put_rule(
            Name=rule["name"],
            EventBusName=rule["event_bus"],
            EventPattern=json.dumps(rule["event_pattern"]),
            State=rule["state"],
            Description=rule["description"],
            Tags=_tag_list(rule["tags"]),
        )
        action = "created"
    elif set(changed) - {"tags"}:
        events.put_rule(
            Name=rule["name"],
            EventBusName=rule["event_bus"],
            EventPattern=json.dumps(rule["event_pattern"]),
            State=rule["state"],
            Description=rule["description"],
        )
        action = "updated"
    log(action, f"EventBridge rule {rule['name']}")
    tags = "unchanged" if action == "created" else _retag_rule(events, plan, live, changed)
    if action != "created":
        log(tags, f"EventBridge rule {rule['name']}: tags")
    return {"rule": rule["name"], "actions": {"rule": action, "tags": tags}}


def _retag_rule(events: Any, plan: dict[str, Any], live: dict[str, Any], changed: dict) -> str:
    if "tags" not in changed:
        return "unchanged"
    arn = live["rule"]["arn"]
    planned = plan["rule"]["tags"]
    extra = set(normalise("rule", "tags", live["rule"]["tags"])) - set(planned)
    if extra:
        events.untag_resource(ResourceARN=arn, TagKeys=sorted(extra))
    events.tag_resource(ResourceARN=arn, Tags=_tag_list(planned))
    return "updated"


def apply_target(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    """The rule's target: the environment's state machine, through the events role."""
    events, target = clients("events"), plan["target"]
    live = _live(plan, clients, "target")
    action = "unchanged"
    if _changed(plan, live, "target"):
        events.put_targets(
            Rule=target["rule"],
            EventBusName=plan["rule"]["event_bus"],
            Targets=[{"Id": target["Id"], "Arn": target["Arn"], "RoleArn": target["RoleArn"]}],
        )
        action = "created" if live["target"] is None else "updated"
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
    live = _live(plan, clients, "schema_object")
    differs = bool(_changed(plan, live, "schema_object"))
    if live["schema_object"] is not None and not differs:
        current = s3.get_object(Bucket=planned["bucket"], Key=planned["key"])["Body"].read()
        differs = hashlib.sha256(current).hexdigest() != sha
    action = "unchanged"
    if differs:
        s3.put_object(
            Bucket=planned["bucket"],
            Key=planned["key"],
            Body=body,
            ContentType=planned["content_type"],
            Metadata=planned["metadata"],
        )
        action = "created" if live["schema_object"] is None else "updated"
    log(action, f"schema {planned['uri']} (sha256 {sha[:12]}…)")
    return {"uri": planned["uri"], "sha256": sha, "actions": {"schema_object": action}}


def apply_config_item(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    """The pipeline's configuration item for the source; attributes the plan does not name
    (the pipeline may add some) are kept."""
    ddb, planned = clients("dynamodb"), plan["config_item"]
    live = _live(plan, clients, "config_item")
    changed = _changed(plan, live, "config_item")
    action = "unchanged"
    if live["config_item"] is None:
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
    live = _live(plan, clients, "alarm")
    changed = _changed(plan, live, "alarm")
    params = {k: v for k, v in planned.items() if k != "Tags"}
    name = planned["AlarmName"]
    if live["alarm"] is None:
        cw.put_metric_alarm(**params, Tags=planned["Tags"])
        log("created", f"CloudWatch alarm {name}")
        return {"alarm": name, "actions": {"alarm": "created", "tags": "created"}}
    action = "unchanged"
    if set(changed) - {"Tags"}:
        cw.put_metric_alarm(**params)
        action = "updated"
    log(action, f"CloudWatch alarm {name}" + (f" ({', '.join(changed)})" if changed else ""))
    tags = "unchanged"
    if "Tags" in changed:
        arn = cw.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]["AlarmArn"]
        wanted = tags_dict(planned["Tags"])
        extra = set(normalise("alarm", "Tags", live["alarm"]["Tags"])) - set(wanted)
        if extra:
            cw.untag_resource(ResourceARN=arn, TagKeys=sorted(extra))
        cw.tag_resource(ResourceARN=arn, Tags=planned["Tags"])
        tags = "updated"
    log(tags, f"CloudWatch alarm {name}: tags")
    return {"alarm": name, "actions": {"alarm": action, "tags": tags}}


def _widget_title(widget: dict[str, Any]) -> str:
    return str((widget.get("properties") or {}).get("title", ""))


def apply_dashboard_widget(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    """Merge the source's widget (found by its title) into the environment's dashboard,
    keeping every other widget as it is."""
    cw, planned = clients("cloudwatch"), plan["dashboard_widget"]
    name, widget = planned["dashboard_name"], planned["widget"]
    title = widget["properties"]["title"]
    try:
        body = json.loads(cw.get_dashboard(DashboardName=name).get("DashboardBody") or "{}")
    except ClientError as exc:
        if _code(exc) not in ("ResourceNotFound", "ResourceNotFoundException"):
            raise
        body = {}
    widgets = list(body.get("widgets", []))
    mine = [i for i, w in enumerate(widgets) if _widget_title(w) == title]
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
    log(action, f"dashboard {name}: widget {title!r}")
    return {"dashboard": name, "widget": title, "actions": {"dashboard_widget": action}}


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def apply_tags(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    """Check, and put right, the tags of every tagged resource (bucket, rule, alarm, and
    the dedicated key): cost allocation by Source and Environment depends on them."""
    live = _live(plan, clients, "bucket", "kms", "rule", "alarm")
    actions: dict[str, str] = {}
    checks = [("bucket", "tags"), ("rule", "tags"), ("alarm", "Tags")]
    if plan["kms"]["dedicated"]:
        checks.append(("kms", "tags"))
    for section, field in checks:
        if live[section] is None:
            raise ApplicationError(f"The {section} is missing; apply the plan from the start.")
        change = _changed(plan, live, section).get(field)
        action = "unchanged"
        if change is not None:
            _put_tags(plan, clients, live, section)
            action = "updated"
        actions[section] = action
        log(action, f"tags of the {section}: {canonical(tags_dict(plan['tags']))}")
    return {"tags": plan["tags"], "actions": actions}


def _put_tags(plan: dict[str, Any], clients: Clients, live: dict[str, Any], section: str) -> None:
    tags = plan["tags"]
    if section == "bucket":
        clients("s3").put_bucket_tagging(
            Bucket=plan["bucket"]["name"], Tagging={"TagSet": _tag_list(plan["bucket"]["tags"])}
        )
    elif section == "rule":
        _retag_rule(clients("events"), plan, live, {"tags": True})
    elif section == "alarm":
        arn = (
            clients("cloudwatch")
            .describe_alarms(AlarmNames=[plan["alarm"]["AlarmName"]])["MetricAlarms"][0]
            .get("AlarmArn")
        )
        clients("cloudwatch").tag_resource(ResourceARN=arn, Tags=plan["alarm"]["Tags"])
    else:
        clients("kms").tag_resource(
            KeyId=live["kms"]["key_id"],
            Tags=[{"TagKey": k, "TagValue": v} for k, v in sorted(tags.items())],
        )


# --- drift ------------------------------------------------------------------------------------


def drift_for(request: OnboardingRequest, environment: Any) -> list[PlanChange]:
    """What differs in `environment` from the request's plan: the pending changes that
    applying the plan again (the provision run) would make."""
    from portal.aws import client

    plan = plan_for(request, environment)
    live = read_live(plan, lambda service: client(service, environment))
    return [change for change in pending(diff_plan(plan, live)) if differs(change)]


def provisioned_environments(request: OnboardingRequest) -> list[str]:
    """Environments whose last provision or teardown run for the request that succeeded
    was a provision, in rollout order."""
    from portal.models import Environment
    from portal.runs.models import Run, RunStatus

    runs = Run.objects.filter(
        kind__in=[PROVISION_KIND, TEARDOWN_KIND],
        status=RunStatus.SUCCEEDED,
        subject_type__model="onboardingrequest",
        subject_id=str(request.pk),
    ).order_by("finished_at", "pk")
    last: dict[str, str] = {}
    for kind, params in runs.values_list("kind", "params"):
        last[str(params.get("environment"))] = kind
    names = {name for name, kind in last.items() if kind == PROVISION_KIND}
    return [env.name for env in Environment.objects.all() if env.name in names]


def drift_scan_all(*, actor: Any) -> list[Any]:
    """Start a drift-check run for every approved request provisioned somewhere; `actor`
    (an engineer or admin, e.g. a service user for the schedule) starts them."""
    from portal.runs.services import run_start

    started = []
    for request in OnboardingRequest.objects.filter(status=RequestStatus.APPROVED):
        environments = provisioned_environments(request)
        if environments:
            started.append(
                run_start(
                    kind=DRIFT_KIND,
                    actor=actor,
                    params={"request_id": request.pk, "environments": environments},
                    subject=request,
                    title=f"Drift check {request.key} ({', '.join(environments)})",
                )
            )
    return started


# --- teardown ---------------------------------------------------------------------------------


def remove_target_and_rule(plan: dict[str, Any], clients: Clients, log: Log) -> dict[str, Any]:
    events, rule = clients("events"), plan["rule"]
    bus = rule["event_bus"]
    try:
        targets = events.list_targets_by_rule(Rule=rule["name"], EventBusName=bus)["Targets"]
    except ClientError as exc:
        if _code(exc) != "ResourceNotFoundException":
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
        if _code(exc) not in ("NoSuchBucket", "404"):
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
    try:
        body = json.loads(cw.get_dashboard(DashboardName=name).get("DashboardBody") or "{}")
    except ClientError as exc:
        if _code(exc) not in ("ResourceNotFound", "ResourceNotFoundException"):
            raise
        body = {}
    widgets = body.get("widgets", [])
    kept = [w for w in widgets if _widget_title(w) != title]
    if len(kept) == len(widgets):
        log("unchanged", f"dashboard {name}: no widget {title!r}")
        return {"dashboard_widget": "unchanged"}
    cw.put_dashboard(DashboardName=name, DashboardBody=json.dumps({**body, "widgets": kept}))
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
        if _code(exc) not in ("NoSuchBucket", "404"):
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
