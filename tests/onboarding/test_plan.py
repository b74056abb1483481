from __future__ import annotations

import dataclasses
import json

import pytest

from onboarding.plan import (
    SourceSpec,
    TargetEnvironment,
    build_plan,
    plan_digest,
)
from onboarding.plan_display import render_plan
from portal.errors import ApplicationError
from portal.models import Environment

ACCOUNT = "123456789012"
PRODUCER = "arn:aws:iam::111122223333:role/clickstream-producer"
TAGS = {
    "Source": "clickstream",
    "Environment": "dev",
    "Owner": "web-analytics",
    "ManagedBy": "onramp",
    "CostCenter": "clickstream",
}


def make_spec(**changes) -> SourceSpec:
    spec = SourceSpec(
        name="clickstream",
        owner_team="web-analytics",
        format="json",
        schema_version=2,
        producer_role_arn=PRODUCER,
        sensitivity=("pii",),
    )
    return dataclasses.replace(spec, **changes)


def make_env(name: str = "dev", **changes) -> TargetEnvironment:
    return dataclasses.replace(
        TargetEnvironment(name=name, account_id=ACCOUNT, region="us-east-1"), **changes
    )


def bucket_statements(plan: dict, effect: str) -> list[dict]:
    return [s for s in plan["bucket"]["policy"]["Statement"] if s["Effect"] == effect]


class ResourceNamesTests:
    @pytest.mark.parametrize("env", ["dev", "staging", "prod"])
    def test_it_names_every_resource_after_the_source_and_environment(self, env):
        plan = build_plan(make_spec(), make_env(env))

        assert plan["bucket"]["name"] == f"raw-data-clickstream-{env}"
        assert plan["bucket"]["arn"] == f"arn:aws:s3:::raw-data-clickstream-{env}"
        assert plan["rule"]["name"] == f"etl-s3-events-clickstream-{env}"
        assert plan["target"]["rule"] == f"etl-s3-events-clickstream-{env}"
        assert plan["target"]["Arn"] == (
            f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:etl-workflow-{env}"
        )
        assert plan["target"]["RoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/etl-events-to-sfn-{env}"
        assert plan["alarm"]["AlarmName"] == f"etl-clickstream-{env}-validation-errors"
        assert plan["schema_object"]["bucket"] == f"etl-schemas-{env}"
        assert plan["schema_object"]["key"] == "schemas/clickstream/v2.json"
        assert plan["config_item"]["table"] == f"etl-metadata-{env}"
        assert plan["dashboard_widget"]["dashboard_name"] == f"etl-pipeline-{env}"
        assert plan["kms"]["alias"] == f"alias/etl-{env}"
        assert plan["tags"]["Environment"] == env

    def test_it_uses_the_environments_own_naming(self):
        model = Environment(
            name="staging",
            account_id="210987654321",
            region="eu-west-1",
            raw_bucket_prefix="landing-",
            state_machine_name="pipeline-{env}",
            events_role_name="events-{env}",
            schema_bucket_name="schemas-{env}",
            metadata_table_name="meta-{env}",
            dashboard_name="dash-{env}",
            kms_key_alias="alias/data-{env}",
        )
        env = TargetEnvironment.from_model(model)

        plan = build_plan(make_spec(), env)

        assert env == TargetEnvironment(
            name="staging",
            account_id="210987654321",
            region="eu-west-1",
            raw_bucket_prefix="landing-",
            state_machine_name="pipeline-{env}",
            events_role_name="events-{env}",
            schema_bucket_name="schemas-{env}",
            metadata_table_name="meta-{env}",
            dashboard_name="dash-{env}",
            kms_key_alias="alias/data-{env}",
        )
        assert plan["bucket"]["name"] == "landing-clickstream-staging"
        assert plan["bucket"]["region"] == "eu-west-1"
        assert plan["target"]["Arn"] == model.state_machine_arn
        assert plan["target"]["RoleArn"] == model.events_role_arn
        assert plan["config_item"]["table"] == "meta-staging"
        assert plan["kms"]["alias_arn"] == "arn:aws:kms:eu-west-1:210987654321:alias/data-staging"

    def test_it_takes_the_defaults_of_an_environment_model(self):
        model = Environment(name="prod", account_id=ACCOUNT, region="us-east-1")

        assert TargetEnvironment.from_model(model) == make_env("prod")


class BucketTests:
    def test_it_makes_the_bucket_secure_by_default(self):
        bucket = build_plan(make_spec(), make_env())["bucket"]

        assert bucket["region"] == "us-east-1"
        assert bucket["versioning"] == "Enabled"
        assert bucket["encryption"] == {
            "SSEAlgorithm": "aws:kms",
            "KMSMasterKeyID": f"arn:aws:kms:us-east-1:{ACCOUNT}:alias/etl-dev",
            "BucketKeyEnabled": True,
        }
        assert bucket["public_access_block"] == {
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        }
        assert bucket["ownership"] == "BucketOwnerEnforced"
        assert bucket["notifications"] == {"EventBridgeConfiguration": {}}
        assert bucket["tags"] == TAGS

    def test_it_denies_every_request_without_tls(self):
        plan = build_plan(make_spec(), make_env())

        assert bucket_statements(plan, "Deny") == [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [
                    "arn:aws:s3:::raw-data-clickstream-dev",
                    "arn:aws:s3:::raw-data-clickstream-dev/*",
                ],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ]

    def test_it_lets_the_producer_only_put_objects_under_incoming(self):
        plan = build_plan(make_spec(), make_env())

        assert plan["bucket"]["producer_prefix"] == "incoming/"
        assert bucket_statements(plan, "Allow") == [
            {
                "Sid": "AllowProducerPutObject",
                "Effect": "Allow",
                "Principal": {"AWS": PRODUCER},
                "Action": "s3:PutObject",
                "Resource": "arn:aws:s3:::raw-data-clickstream-dev/incoming/*",
            }
        ]
        assert plan["bucket"]["policy"]["Version"] == "2012-10-17"

    @pytest.mark.parametrize("sensitivity", [(), ("phi",)])
    def test_it_never_allows_a_wildcard_principal(self, sensitivity):
        plan = build_plan(make_spec(sensitivity=sensitivity), make_env())
        policies = [plan["bucket"]["policy"], plan["kms"].get("key_policy") or {}]

        allows = [s for p in policies for s in p.get("Statement", []) if s["Effect"] == "Allow"]
        assert allows
        for statement in allows:
            principal = statement["Principal"]
            assert principal != "*"
            assert set(principal) == {"AWS"}
            assert "*" not in json.dumps(principal["AWS"])

    @pytest.mark.parametrize(
        "producer",
        [
            "*",
            "arn:aws:iam::111122223333:role/*",
            "arn:aws:iam::111122223333:root",
            "arn:aws:iam::111122223333:user/alice",
            "",
        ],
    )
    def test_it_refuses_a_producer_that_is_not_one_role(self, producer):
        with pytest.raises(ApplicationError) as error:
            build_plan(make_spec(producer_role_arn=producer), make_env())

        assert error.value.field == "producer_role_arn"

    @pytest.mark.parametrize(
        ("retention", "transitions", "noncurrent", "abort"),
        [
            (3, None, 3, 3),
            (30, None, 30, 7),
            (90, [{"Days": 30, "StorageClass": "STANDARD_IA"}], 30, 7),
            (
                365,
                [
                    {"Days": 30, "StorageClass": "STANDARD_IA"},
                    {"Days": 90, "StorageClass": "GLACIER_IR"},
                ],
                30,
                7,
            ),
        ],
    )
    def test_it_derives_the_lifecycle_from_retention(
        self, retention, transitions, noncurrent, abort
    ):
        plan = build_plan(make_spec(retention_days=retention), make_env())

        expected = {
            "ID": "onramp-retention",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "Expiration": {"Days": retention},
            "NoncurrentVersionExpiration": {"NoncurrentDays": noncurrent},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": abort},
        }
        if transitions:
            expected["Transitions"] = transitions
        assert plan["bucket"]["lifecycle"] == {"Rules": [expected]}


class KmsKeyTests:
    @pytest.mark.parametrize(
        ("sensitivity", "requested", "dedicated"),
        [
            ((), None, False),
            (("pii",), None, False),
            (("none",), None, False),
            (("phi",), None, True),
            (("financial",), None, True),
            (("pii", "financial"), None, True),
            ((), True, True),
            (("pii",), False, False),
            # PHI and financial data always get their own key, whatever the spec says.
            (("phi",), False, True),
        ],
    )
    def test_it_decides_on_a_dedicated_key_from_sensitivity(
        self, sensitivity, requested, dedicated
    ):
        spec = make_spec(sensitivity=sensitivity, dedicated_kms_key=requested)

        plan = build_plan(spec, make_env("prod"))

        alias = "alias/onramp-clickstream-prod" if dedicated else "alias/etl-prod"
        alias_arn = f"arn:aws:kms:us-east-1:{ACCOUNT}:{alias}"
        assert plan["kms"]["dedicated"] is dedicated
        assert plan["kms"]["alias"] == alias
        assert plan["bucket"]["encryption"]["KMSMasterKeyID"] == alias_arn
        assert ("key_policy" in plan["kms"]) is dedicated

    def test_it_lets_the_producer_use_a_dedicated_key_only_through_s3_for_its_bucket(self):
        kms = build_plan(make_spec(sensitivity=("phi",)), make_env())["kms"]

        assert kms["rotation_enabled"] is True
        assert kms["tags"] == TAGS
        assert kms["key_policy"]["Statement"] == [
            {
                "Sid": "EnableIamPolicies",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "AllowProducerThroughS3",
                "Effect": "Allow",
                "Principal": {"AWS": PRODUCER},
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": "*",
                "Condition": {
                    "StringEquals": {
                        "kms:ViaService": "s3.us-east-1.amazonaws.com",
                        "kms:EncryptionContext:aws:s3:arn": "arn:aws:s3:::raw-data-clickstream-dev",
                    }
                },
            },
        ]


class PipelineWiringTests:
    def test_it_matches_objects_created_under_incoming_in_its_bucket(self):
        plan = build_plan(make_spec(), make_env())

        assert plan["rule"]["event_pattern"] == {
            "source": ["aws.s3"],
            "detail-type": ["Object Created"],
            "detail": {
                "bucket": {"name": ["raw-data-clickstream-dev"]},
                "object": {"key": [{"prefix": "incoming/"}]},
            },
        }
        assert plan["rule"]["state"] == "ENABLED"
        assert plan["rule"]["event_bus"] == "default"
        assert plan["rule"]["tags"] == TAGS

    def test_it_targets_the_state_machine_with_the_events_role(self):
        target = build_plan(make_spec(), make_env())["target"]

        assert target == {
            "rule": "etl-s3-events-clickstream-dev",
            "Id": "1",
            "Arn": f"arn:aws:states:us-east-1:{ACCOUNT}:stateMachine:etl-workflow-dev",
            "RoleArn": f"arn:aws:iam::{ACCOUNT}:role/etl-events-to-sfn-dev",
        }

    def test_it_registers_the_schema_and_the_sources_config_item(self):
        plan = build_plan(make_spec(format="NDJSON", latency_sla="daily"), make_env())

        assert plan["schema_object"] == {
            "bucket": "etl-schemas-dev",
            "key": "schemas/clickstream/v2.json",
            "uri": "s3://etl-schemas-dev/schemas/clickstream/v2.json",
            "content_type": "application/json",
            "version": 2,
            "metadata": {"source": "clickstream", "schema-version": "2"},
        }
        assert plan["config_item"] == {
            "table": "etl-metadata-dev",
            "key": {"pk": "SOURCE#clickstream", "sk": "CONFIG"},
            "item": {
                "pk": "SOURCE#clickstream",
                "sk": "CONFIG",
                "source_name": "clickstream",
                "format": "ndjson",
                "schema_location": "s3://etl-schemas-dev/schemas/clickstream/v2.json",
                "schema_version": 2,
                "output_partitioning": "source=clickstream/year=YYYY/",
                "latency_sla": "daily",
                "owner": "web-analytics",
                "raw_bucket": "raw-data-clickstream-dev",
                "retention_days": 365,
                "sensitivity": ["pii"],
            },
        }

    def test_it_plans_the_validation_alarm_of_the_runbook_exactly(self):
        alarm = build_plan(make_spec(), make_env())["alarm"]

        assert alarm == {
            "AlarmName": "etl-clickstream-dev-validation-errors",
            "AlarmDescription": "Onramp: more than 5 validation errors in 5 minutes "
            "for source clickstream in dev (SOP-001 step 7).",
            "ActionsEnabled": True,
            "MetricName": "ValidationErrors",
            "Namespace": "ETL/Pipeline",
            "Statistic": "Sum",
            "Dimensions": [{"Name": "Source", "Value": "clickstream"}],
            "Period": 300,
            "EvaluationPeriods": 1,
            "Threshold": 5.0,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
            "Tags": [{"Key": k, "Value": v} for k, v in sorted(TAGS.items())],
        }

    def test_it_plans_a_dashboard_widget_for_files_errors_and_latency(self):
        widget = build_plan(make_spec(), make_env())["dashboard_widget"]["widget"]
        properties = widget["properties"]
        metrics = [m for m in properties["metrics"] if isinstance(m[0], str)]
        expressions = [m[0] for m in properties["metrics"] if isinstance(m[0], dict)]

        assert widget["type"] == "metric"
        assert properties["title"] == "Source clickstream: files, error rate, processing latency"
        assert properties["region"] == "us-east-1"
        assert [m[:4] for m in metrics] == [
            ["ETL/Pipeline", "FilesProcessed", "Source", "clickstream"],
            ["ETL/Pipeline", "ValidationErrors", "Source", "clickstream"],
            ["ETL/Pipeline", "ProcessingLatency", "Source", "clickstream"],
        ]
        assert [m[4]["stat"] for m in metrics] == ["Sum", "Sum", "p95"]
        assert expressions == [
            {
                "id": "error_rate",
                "expression": "IF(files > 0, 100 * errors / files, 0)",
                "label": "Error rate (%)",
            }
        ]

    def test_it_tags_with_source_environment_owner_and_cost_center(self):
        plan = build_plan(make_spec(), make_env())

        assert plan["tags"] == TAGS


class DeterminismTests:
    def test_it_gives_the_same_json_and_digest_for_the_same_input(self):
        first = build_plan(make_spec(), make_env())
        second = build_plan(make_spec(), make_env())

        assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
        assert plan_digest(first) == plan_digest(second)
        assert len(plan_digest(first)) == 64

    def test_it_survives_a_round_trip_through_json(self):
        plan = build_plan(make_spec(sensitivity=("phi", "pii")), make_env())

        reloaded = json.loads(json.dumps(plan))

        assert reloaded == plan
        assert plan_digest(reloaded) == plan_digest(plan)

    def test_it_ignores_the_order_sensitivities_are_listed_in(self):
        one = build_plan(make_spec(sensitivity=("pii", "financial")), make_env())
        other = build_plan(make_spec(sensitivity=("financial", "pii")), make_env())

        assert plan_digest(one) == plan_digest(other)

    @pytest.mark.parametrize(
        "change",
        [
            {"name": "pageviews"},
            {"owner_team": "growth"},
            {"format": "csv"},
            {"schema_version": 3},
            {"producer_role_arn": "arn:aws:iam::111122223333:role/other-producer"},
            {"sensitivity": ()},
            {"sensitivity": ("pii", "phi")},
            {"retention_days": 366},
            {"latency_sla": "realtime"},
            {"dedicated_kms_key": True},
            {"dedicated_kms_key": False},
        ],
    )
    def test_it_changes_the_digest_when_any_spec_field_changes(self, change):
        before = plan_digest(build_plan(make_spec(), make_env()))

        after = plan_digest(build_plan(make_spec(**change), make_env()))

        assert after != before

    @pytest.mark.parametrize(
        "change",
        [{"name": "staging"}, {"account_id": "210987654321"}, {"region": "eu-west-1"}],
    )
    def test_it_changes_the_digest_when_the_environment_changes(self, change):
        before = plan_digest(build_plan(make_spec(), make_env()))

        after = plan_digest(build_plan(make_spec(), make_env(**change)))

        assert after != before


class ValidationTests:
    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"name": "Click_Stream"}, "name"),
            ({"name": "-clicks"}, "name"),
            ({"name": "x" * 41}, "name"),
            ({"owner_team": " "}, "owner_team"),
            ({"format": "xml"}, "format"),
            ({"schema_version": 0}, "schema_version"),
            ({"sensitivity": ("secret",)}, "sensitivity"),
            ({"retention_days": 0}, "retention_days"),
            ({"latency_sla": "weekly"}, "latency_sla"),
        ],
    )
    def test_it_refuses_a_spec_it_cannot_plan(self, change, field):
        with pytest.raises(ApplicationError) as error:
            build_plan(make_spec(**change), make_env())

        assert error.value.field == field

    def test_it_refuses_a_bucket_name_longer_than_s3_allows(self):
        env = make_env(raw_bucket_prefix="a-very-long-raw-bucket-prefix-")

        with pytest.raises(ApplicationError) as error:
            build_plan(make_spec(name="x" * 30), env)

        assert "63" in error.value.message


class RenderPlanTests:
    def test_it_renders_every_section_in_order(self):
        sections = render_plan(build_plan(make_spec(), make_env()))

        assert [s["title"] for s in sections] == [
            "Summary",
            "S3 bucket",
            "Lifecycle",
            "KMS key",
            "EventBridge rule",
            "Step Functions target",
            "Schema registration",
            "Pipeline configuration item",
            "Validation errors alarm",
            "Dashboard widget",
            "Tags",
        ]
        for section in sections:
            assert all(isinstance(v, str) for _, v in section["items"])

    def test_it_pretty_prints_the_bucket_policy_and_the_event_pattern(self):
        plan = build_plan(make_spec(), make_env())

        sections = {s["title"]: s for s in render_plan(plan)}

        bucket_json = sections["S3 bucket"]["json"]
        assert bucket_json == json.dumps(plan["bucket"]["policy"], indent=2)
        assert '\n  "Statement": [\n    {\n      "Sid": "DenyInsecureTransport"' in bucket_json
        rule_json = sections["EventBridge rule"]["json"]
        assert json.loads(rule_json) == plan["rule"]["event_pattern"]
        assert "\n  " in rule_json

    def test_it_shows_the_key_policy_only_for_a_dedicated_key(self):
        shared = {s["title"]: s for s in render_plan(build_plan(make_spec(), make_env()))}
        own_plan = build_plan(make_spec(sensitivity=("financial",)), make_env())
        own = {s["title"]: s for s in render_plan(own_plan)}

        assert shared["KMS key"]["json"] is None
        assert own["KMS key"]["json"] == json.dumps(own_plan["kms"]["key_policy"], indent=2)
        assert ("Dedicated key", "yes") in own["KMS key"]["items"]

    def test_it_shows_the_digest_approvers_sign(self):
        plan = build_plan(make_spec(), make_env())

        summary = render_plan(plan)[0]

        assert ("Plan digest (sha256)", plan_digest(plan)) in summary["items"]
