"""read_live and diff_plan against moto.

This module builds its boto3 clients itself (inside the mock), because read_live takes a
`clients` callable; everywhere else clients come from portal/aws.py.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeSerializer
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends

from onboarding.aws.diff import PlanChange, diff_plan, pending, section_actions
from onboarding.aws.live import read_live
from onboarding.plan import SECTIONS, SourceSpec, TargetEnvironment, build_plan

REGION = "us-east-1"
PRODUCER = "arn:aws:iam::111122223333:role/clickstream-producer"
OTHER_WIDGET = {
    "type": "metric",
    "x": 0,
    "y": 0,
    "width": 24,
    "height": 6,
    "properties": {"title": "Pipeline overview", "metrics": [["AWS/States", "ExecutionsFailed"]]},
}


def make_plan(**spec_changes: Any) -> dict[str, Any]:
    spec = SourceSpec(
        name="clickstream",
        owner_team="web-analytics",
        format="json",
        schema_version=2,
        producer_role_arn=PRODUCER,
        sensitivity=("pii",),
    )
    spec = dataclasses.replace(spec, **spec_changes)
    return build_plan(spec, TargetEnvironment("dev", DEFAULT_ACCOUNT_ID, REGION))


def _fill_eventbridge_read_back(s3: Any) -> None:
    """moto 5.2.5 stores EventBridgeConfiguration but leaves it out of
    GetBucketNotificationConfiguration; AWS returns it as {}. Answer from moto's own state,
    so a bucket without it still reads as without it."""

    def remember_bucket(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["onramp_bucket"] = params["Bucket"]

    def add_eventbridge(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        bucket = s3_backends[DEFAULT_ACCOUNT_ID]["aws"].get_bucket(context["onramp_bucket"])
        config = bucket.notification_configuration
        if config is not None and config.event_bridge is not None:
            parsed["EventBridgeConfiguration"] = {}

    operation = "s3.GetBucketNotificationConfiguration"
    s3.meta.events.register(f"before-parameter-build.{operation}", remember_bucket)
    s3.meta.events.register(f"after-call.{operation}", add_eventbridge)


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Any]]:
    # In-process moto only: not the sandbox server another fixture may have pointed
    # AWS_ENDPOINT_URL at for this session.
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        made: dict[str, Any] = {}

        def client(service: str) -> Any:
            if service not in made:
                made[service] = boto3.client(service, region_name=REGION)
                if service == "s3":
                    _fill_eventbridge_read_back(made[service])
            return made[service]

        yield client


def provision_by_hand(plan: dict[str, Any], clients: Callable[[str], Any]) -> None:
    """What runbook 1 does, with plain boto3 calls, to match the plan."""
    s3, kms, events = clients("s3"), clients("kms"), clients("events")
    cloudwatch, dynamodb = clients("cloudwatch"), clients("dynamodb")
    key = plan["kms"]
    if key["dedicated"]:
        key_id = kms.create_key(
            Description=key["description"],
            KeySpec=key["key_spec"],
            KeyUsage=key["key_usage"],
            Policy=json.dumps(key["key_policy"]),
            Tags=[{"TagKey": k, "TagValue": v} for k, v in key["tags"].items()],
        )["KeyMetadata"]["KeyId"]
        kms.enable_key_rotation(KeyId=key_id)
    else:  # the environment's key already exists in a real account
        key_id = kms.create_key(Description="ETL environment key")["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName=key["alias"], TargetKeyId=key_id)

    bucket = plan["bucket"]
    name = bucket["name"]
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": bucket["versioning"]})
    encryption = dict(bucket["encryption"])
    bucket_key = encryption.pop("BucketKeyEnabled")
    s3.put_bucket_encryption(
        Bucket=name,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {"ApplyServerSideEncryptionByDefault": encryption, "BucketKeyEnabled": bucket_key}
            ]
        },
    )
    s3.put_public_access_block(
        Bucket=name, PublicAccessBlockConfiguration=bucket["public_access_block"]
    )
    s3.put_bucket_ownership_controls(
        Bucket=name, OwnershipControls={"Rules": [{"ObjectOwnership": bucket["ownership"]}]}
    )
    s3.put_bucket_policy(Bucket=name, Policy=json.dumps(bucket["policy"]))
    s3.put_bucket_notification_configuration(
        Bucket=name, NotificationConfiguration=bucket["notifications"]
    )
    s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration=bucket["lifecycle"])
    s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": tag_list(bucket["tags"])})

    rule = plan["rule"]
    events.put_rule(
        Name=rule["name"],
        EventPattern=json.dumps(rule["event_pattern"]),
        State=rule["state"],
        Description=rule["description"],
        Tags=tag_list(rule["tags"]),
    )
    target = plan["target"]
    events.put_targets(
        Rule=target["rule"],
        Targets=[{"Id": target["Id"], "Arn": target["Arn"], "RoleArn": target["RoleArn"]}],
    )

    schema = plan["schema_object"]
    s3.create_bucket(Bucket=schema["bucket"])
    s3.put_object(
        Bucket=schema["bucket"],
        Key=schema["key"],
        Body=b'{"type": "object"}',
        ContentType=schema["content_type"],
        Metadata=schema["metadata"],
    )

    config = plan["config_item"]
    dynamodb.create_table(
        TableName=config["table"],
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    put_config_item(clients, config["table"], config["item"])

    cloudwatch.put_metric_alarm(**plan["alarm"])
    placed = {**plan["dashboard_widget"]["widget"], "x": 0, "y": 6}
    cloudwatch.put_dashboard(
        DashboardName=plan["dashboard_widget"]["dashboard_name"],
        DashboardBody=json.dumps({"widgets": [OTHER_WIDGET, placed]}),
    )


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def put_config_item(clients: Callable[[str], Any], table: str, item: dict[str, Any]) -> None:
    serializer = TypeSerializer()
    clients("dynamodb").put_item(
        TableName=table, Item={k: serializer.serialize(v) for k, v in item.items()}
    )


def not_unchanged(changes: list[PlanChange]) -> list[tuple[str, str, str]]:
    return [(c.section, c.field, c.action) for c in pending(changes)]


class ReadLiveTests:
    def test_it_plans_every_section_as_create_in_an_empty_account(self, clients):
        plan = make_plan()

        live = read_live(plan, clients)
        changes = diff_plan(plan, live)

        assert live == dict.fromkeys(SECTIONS)
        assert {c.section for c in changes} == set(SECTIONS)
        assert {c.action for c in changes} == {"create"}
        assert section_actions(changes) == dict.fromkeys(SECTIONS, "create")
        policy = next(c for c in changes if (c.section, c.field) == ("bucket", "policy"))
        assert policy.expected == plan["bucket"]["policy"]
        assert policy.actual is None

    @pytest.mark.parametrize("sensitivity", [("pii",), ("phi",)])
    def test_it_finds_nothing_to_do_once_everything_matches_the_plan(self, clients, sensitivity):
        plan = make_plan(sensitivity=sensitivity)
        provision_by_hand(plan, clients)

        live = read_live(plan, clients)
        changes = diff_plan(plan, live)

        assert not_unchanged(changes) == []
        assert section_actions(changes) == dict.fromkeys(SECTIONS, "unchanged")
        assert live["bucket"]["policy"] == plan["bucket"]["policy"]
        assert live["config_item"]["item"] == plan["config_item"]["item"]
        assert live["dashboard_widget"]["widget"] == plan["dashboard_widget"]["widget"]

    def test_it_compares_only_the_fields_the_plan_sets(self, clients):
        plan = make_plan()
        provision_by_hand(plan, clients)
        # Things AWS or the pipeline add on their own are not drift.
        item = {**plan["config_item"]["item"], "last_file_at": "2025-01-01T00:00:00Z"}
        put_config_item(clients, plan["config_item"]["table"], item)

        changes = diff_plan(plan, read_live(plan, clients))

        assert not_unchanged(changes) == []

    def test_it_ignores_the_order_aws_returns_things_in(self, clients):
        plan = make_plan()
        provision_by_hand(plan, clients)
        s3, events = clients("s3"), clients("events")
        policy = plan["bucket"]["policy"]
        deny, allow = policy["Statement"]
        reordered = {
            "Version": policy["Version"],
            "Statement": [
                {**allow, "Action": [allow["Action"]], "Principal": {"AWS": [PRODUCER]}},
                {**deny, "Resource": list(reversed(deny["Resource"]))},
            ],
        }
        s3.put_bucket_policy(Bucket=plan["bucket"]["name"], Policy=json.dumps(reordered))
        s3.put_bucket_tagging(
            Bucket=plan["bucket"]["name"],
            Tagging={"TagSet": list(reversed(tag_list(plan["bucket"]["tags"])))},
        )
        pattern = plan["rule"]["event_pattern"]
        events.put_rule(
            Name=plan["rule"]["name"],
            EventPattern=json.dumps(dict(reversed(pattern.items()))),
            State="ENABLED",
            Description=plan["rule"]["description"],
        )

        changes = diff_plan(plan, read_live(plan, clients))

        assert not_unchanged(changes) == []

    def test_it_accepts_the_key_arn_in_place_of_the_planned_alias(self, clients):
        plan = make_plan()
        provision_by_hand(plan, clients)
        key_arn = clients("kms").describe_key(KeyId=plan["kms"]["alias"])["KeyMetadata"]["Arn"]
        clients("s3").put_bucket_encryption(
            Bucket=plan["bucket"]["name"],
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": key_arn,
                        },
                        "BucketKeyEnabled": True,
                    }
                ]
            },
        )

        changes = diff_plan(plan, read_live(plan, clients))

        assert not_unchanged(changes) == []

    def test_it_notices_a_bucket_encrypted_with_another_key(self, clients):
        plan = make_plan()
        provision_by_hand(plan, clients)
        other = clients("kms").create_key()["KeyMetadata"]["Arn"]
        clients("s3").put_bucket_encryption(
            Bucket=plan["bucket"]["name"],
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": other,
                        },
                        "BucketKeyEnabled": True,
                    }
                ]
            },
        )

        changes = diff_plan(plan, read_live(plan, clients))

        assert not_unchanged(changes) == [("bucket", "encryption", "update")]


def suspend_versioning(plan, clients):
    clients("s3").put_bucket_versioning(
        Bucket=plan["bucket"]["name"], VersioningConfiguration={"Status": "Suspended"}
    )


def drop_producer_statement(plan, clients):
    policy = plan["bucket"]["policy"]
    only_deny = {**policy, "Statement": [s for s in policy["Statement"] if s["Effect"] == "Deny"]}
    clients("s3").put_bucket_policy(Bucket=plan["bucket"]["name"], Policy=json.dumps(only_deny))


def widen_producer_prefix(plan, clients):
    policy = json.loads(json.dumps(plan["bucket"]["policy"]))
    policy["Statement"][1]["Resource"] = f"{plan['bucket']['arn']}/*"
    clients("s3").put_bucket_policy(Bucket=plan["bucket"]["name"], Policy=json.dumps(policy))


def raise_alarm_threshold(plan, clients):
    clients("cloudwatch").put_metric_alarm(**{**plan["alarm"], "Threshold": 50.0})


def remove_bucket_owner_tag(plan, clients):
    tags = {k: v for k, v in plan["bucket"]["tags"].items() if k != "Owner"}
    clients("s3").put_bucket_tagging(
        Bucket=plan["bucket"]["name"], Tagging={"TagSet": tag_list(tags)}
    )


def remove_rule_cost_center_tag(plan, clients):
    events = clients("events")
    arn = events.describe_rule(Name=plan["rule"]["name"])["Arn"]
    events.untag_resource(ResourceARN=arn, TagKeys=["CostCenter"])


def remove_alarm_owner_tag(plan, clients):
    cloudwatch = clients("cloudwatch")
    arn = cloudwatch.describe_alarms(AlarmNames=[plan["alarm"]["AlarmName"]])["MetricAlarms"][0][
        "AlarmArn"
    ]
    cloudwatch.untag_resource(ResourceARN=arn, TagKeys=["Owner"])


def allow_public_acls(plan, clients):
    clients("s3").put_public_access_block(
        Bucket=plan["bucket"]["name"],
        PublicAccessBlockConfiguration={
            **plan["bucket"]["public_access_block"],
            "BlockPublicAcls": False,
        },
    )


def disable_rule(plan, clients):
    clients("events").disable_rule(Name=plan["rule"]["name"])


def widen_event_pattern(plan, clients):
    pattern = {**plan["rule"]["event_pattern"], "detail-type": ["Object Created", "Object Deleted"]}
    clients("events").put_rule(
        Name=plan["rule"]["name"],
        EventPattern=json.dumps(pattern),
        State="ENABLED",
        Description=plan["rule"]["description"],
    )


def retarget_role(plan, clients):
    target = plan["target"]
    clients("events").put_targets(
        Rule=target["rule"],
        Targets=[{"Id": "1", "Arn": target["Arn"], "RoleArn": target["RoleArn"] + "-old"}],
    )


def change_config_format(plan, clients):
    item = {**plan["config_item"]["item"], "format": "csv"}
    put_config_item(clients, plan["config_item"]["table"], item)


def change_dashboard_latency_stat(plan, clients):
    widget = json.loads(json.dumps(plan["dashboard_widget"]["widget"]))
    widget["properties"]["metrics"][3][4]["stat"] = "Average"
    clients("cloudwatch").put_dashboard(
        DashboardName=plan["dashboard_widget"]["dashboard_name"],
        DashboardBody=json.dumps({"widgets": [OTHER_WIDGET, widget]}),
    )


def shorten_lifecycle(plan, clients):
    rules = json.loads(json.dumps(plan["bucket"]["lifecycle"]))
    rules["Rules"][0]["Expiration"]["Days"] = 30
    rules["Rules"][0].pop("Transitions")
    clients("s3").put_bucket_lifecycle_configuration(
        Bucket=plan["bucket"]["name"], LifecycleConfiguration=rules
    )


class DriftTests:
    @pytest.mark.parametrize(
        ("change", "section", "field"),
        [
            (suspend_versioning, "bucket", "versioning"),
            (drop_producer_statement, "bucket", "policy"),
            (widen_producer_prefix, "bucket", "policy"),
            (raise_alarm_threshold, "alarm", "Threshold"),
            (remove_bucket_owner_tag, "bucket", "tags"),
            (remove_rule_cost_center_tag, "rule", "tags"),
            (remove_alarm_owner_tag, "alarm", "Tags"),
            (allow_public_acls, "bucket", "public_access_block"),
            (shorten_lifecycle, "bucket", "lifecycle"),
            (disable_rule, "rule", "state"),
            (widen_event_pattern, "rule", "event_pattern"),
            (retarget_role, "target", "RoleArn"),
            (change_config_format, "config_item", "format"),
            (change_dashboard_latency_stat, "dashboard_widget", "widget"),
        ],
    )
    def test_it_reports_exactly_the_field_that_drifted(self, clients, change, section, field):
        plan = make_plan()
        provision_by_hand(plan, clients)

        change(plan, clients)
        changes = diff_plan(plan, read_live(plan, clients))

        assert not_unchanged(changes) == [(section, field, "update")]
        assert section_actions(changes)[section] == "update"

    def test_it_reports_the_live_value_next_to_the_planned_one(self, clients):
        plan = make_plan()
        provision_by_hand(plan, clients)

        raise_alarm_threshold(plan, clients)
        (change,) = pending(diff_plan(plan, read_live(plan, clients)))

        assert (change.expected, change.actual) == (5.0, 50.0)

    def test_it_reports_a_missing_setting_of_an_existing_bucket_as_create(self, clients):
        plan = make_plan()
        provision_by_hand(plan, clients)

        clients("s3").delete_bucket_policy(Bucket=plan["bucket"]["name"])
        changes = diff_plan(plan, read_live(plan, clients))

        assert not_unchanged(changes) == [("bucket", "policy", "create")]
        assert section_actions(changes)["bucket"] == "update"

    def test_it_plans_rule_and_target_again_when_the_rule_is_deleted(self, clients):
        plan = make_plan()
        provision_by_hand(plan, clients)
        events = clients("events")

        events.remove_targets(Rule=plan["rule"]["name"], Ids=["1"])
        events.delete_rule(Name=plan["rule"]["name"])
        actions = section_actions(diff_plan(plan, read_live(plan, clients)))

        assert actions == {
            **dict.fromkeys(SECTIONS, "unchanged"),
            "rule": "create",
            "target": "create",
        }
