"""The drift check (read only, names the changed field) and teardown (removes what
provisioning made, the bucket only when it is empty, idempotent)."""

from __future__ import annotations

import json

from onboarding import kinds, selectors, services
from onboarding.steps.drift import drift_for
from tests.onboarding.test_provisioning import (
    OTHER_WIDGET,
    approved_request,
    clients,
    drive,
    engineer_fixture,  # noqa: F401 - fixture
    env_named,
    media_fixture,  # noqa: F401 - fixture
    plan_of,
    provision,
    snapshot,
    start,
    widget_titles,
)


def fields(changes) -> set[tuple[str, str]]:
    return {(change.section, change.field) for change in changes}


class DriftTests:
    def test_it_reports_exactly_the_field_changed_by_hand(self, environments, personas, engineer):
        request = approved_request(personas)
        env = env_named(environments)
        plan = plan_of(request, env)
        assert provision(request, engineer).status == "succeeded"
        assert drift_for(request, env) == []

        c = clients(env)
        c("s3").put_bucket_versioning(
            Bucket=plan["bucket"]["name"], VersioningConfiguration={"Status": "Suspended"}
        )
        params = {k: v for k, v in plan["alarm"].items() if k != "Tags"}
        c("cloudwatch").put_metric_alarm(**{**params, "Threshold": 50.0})
        assert fields(drift_for(request, env)) == {
            ("bucket", "versioning"),
            ("alarm", "Threshold"),
        }

        # The drift-check run, read only: one step per provisioned environment.
        before = snapshot(plan, env)
        (run,) = services.drift_scan_all(actor=personas["ada"])
        run = drive(run)
        assert run.status == "succeeded", run.error
        (step,) = run.steps.all()
        assert step.params == {"environment": "dev"}
        assert step.output["drifted"] is True
        assert {(c["section"], c["field"]) for c in step.output["changes"]} == {
            ("bucket", "versioning"),
            ("alarm", "Threshold"),
        }
        threshold = next(c for c in step.output["changes"] if c["field"] == "Threshold")
        assert (threshold["expected"], threshold["actual"]) == (5.0, 50.0)
        assert snapshot(plan, env) == before

        # Re-applying the plan is the provision run again; it puts exactly those right.
        run = provision(request, engineer)
        updated = [
            entry["message"]
            for s in run.steps.all()
            for entry in s.log
            if entry["action"] == "updated"
        ]
        assert len(updated) == 2, updated
        assert drift_for(request, env) == []

    def test_only_provisioned_environments_are_checked(self, environments, personas, engineer):
        request = approved_request(personas)
        assert selectors.provisioned_environments(request) == []
        assert services.drift_scan_all(actor=personas["ada"]) == []
        assert provision(request, engineer, env="staging").status == "succeeded"
        assert selectors.provisioned_environments(request) == ["staging"]


def teardown(request, actor, env="dev"):
    return drive(start(kinds.teardown, request, actor, env))


class TeardownTests:
    def test_a_bucket_holding_data_is_refused_and_the_data_kept(
        self, environments, personas, engineer
    ):
        request = approved_request(personas)
        env = env_named(environments)
        plan = plan_of(request, env)
        assert provision(request, engineer).status == "succeeded"
        s3, bucket = clients(env)("s3"), plan["bucket"]["name"]
        s3.put_object(Bucket=bucket, Key="incoming/keep-me.json", Body=b"{}")
        s3.put_object(Bucket=bucket, Key="incoming/keep-me.json", Body=b"{ }")
        s3.delete_object(Bucket=bucket, Key="incoming/keep-me.json")  # a delete marker

        run = teardown(request, engineer)
        assert run.status == "failed"
        failed = run.steps.get(status="failed")
        assert failed.key == "onboarding.teardown_bucket"
        assert failed.error == (
            f"{bucket} still holds 3 object version(s); empty it first — nothing of the data "
            "was deleted."
        )
        versions = s3.list_object_versions(Bucket=bucket)
        assert len(versions["Versions"]) == 2 and len(versions["DeleteMarkers"]) == 1

    def test_an_empty_bucket_goes_with_everything_else_and_again_is_harmless(
        self, environments, personas, engineer
    ):
        request = approved_request(personas)
        env = env_named(environments)
        plan = plan_of(request, env)
        c = clients(env)
        cw = c("cloudwatch")
        name = plan["dashboard_widget"]["dashboard_name"]
        body = json.loads(cw.get_dashboard(DashboardName=name)["DashboardBody"])
        if "Pipeline overview" not in [w["properties"].get("title") for w in body["widgets"]]:
            body["widgets"].append(OTHER_WIDGET)
            cw.put_dashboard(DashboardName=name, DashboardBody=json.dumps(body))
        assert provision(request, engineer).status == "succeeded"
        others = [
            t for t in widget_titles(plan, env) if not t.startswith(f"Source {plan['source']}")
        ]

        run = teardown(request, engineer)
        assert run.status == "succeeded", run.error
        assert {e["action"] for s in run.steps.all() for e in s.log} <= {"deleted", "unchanged"}
        s3, events = c("s3"), c("events")
        assert plan["bucket"]["name"] not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
        assert events.list_rules(NamePrefix=plan["rule"]["name"])["Rules"] == []
        assert cw.describe_alarms(AlarmNames=[plan["alarm"]["AlarmName"]])["MetricAlarms"] == []
        assert widget_titles(plan, env) == others
        key = {k: {"S": v} for k, v in plan["config_item"]["key"].items()}
        table = plan["config_item"]["table"]
        assert "Item" not in c("dynamodb").get_item(TableName=table, Key=key)
        schema = plan["schema_object"]
        listed = s3.list_object_versions(
            Bucket=schema["bucket"], Prefix=f"schemas/{plan['source']}/"
        )
        assert not listed.get("Versions") and not listed.get("DeleteMarkers")
        assert selectors.provisioned_environments(request) == []

        again = teardown(request, engineer)
        assert again.status == "succeeded", again.error
        assert {e["action"] for s in again.steps.all() for e in s.log} == {"unchanged"}
