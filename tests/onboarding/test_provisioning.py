"""Provisioning an approved plan into the sandbox AWS: idempotency, crash recovery, the
approval check, the dashboard merge and the security baseline.

Requests are built and approved with the real services (tests/onboarding/test_requests);
runs are executed in-process with the engine (`dispatch.advance`). The sandbox is shared by
the whole session, so every test onboards a source with a name of its own.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from functools import partial
from typing import Any

import pytest
from django.db import connection

from onboarding import kinds, services
from onboarding.aws import apply
from onboarding.aws.baseline import security_baseline
from onboarding.aws.diff import pending
from onboarding.aws.live import read_live
from onboarding.models import OnboardingRequest
from onboarding.request_state import plan_for
from onboarding.steps.drift import drift_for
from onboarding.steps.provision import PROVISION_STEPS
from portal import aws
from portal.models import Environment
from portal.runs import dispatch
from portal.runs.models import TERMINAL_RUN_STATUSES, Run
from portal.runs.services import run_retry_step, run_start
from tests.onboarding.test_requests import (
    make_request,
    media_fixture,  # noqa: F401 - fixture
    ready_request,
)

OTHER_WIDGET = {
    "type": "metric",
    "x": 0,
    "y": 0,
    "width": 12,
    "height": 6,
    "properties": {"title": "Pipeline overview", "metrics": [["AWS/States", "ExecutionsFailed"]]},
}


# --- helpers shared by the provisioning test modules --------------------------------------------


def approved_request(personas: dict[str, Any], **overrides: Any) -> OnboardingRequest:
    """A request with 9 valid and 1 malformed sample, submitted and approved by both roles."""
    overrides.setdefault("source_name", f"src-{uuid.uuid4().hex[:8]}")
    request = ready_request(personas["rita"], **overrides)
    request = services.request_submit(request=request, actor=personas["rita"])
    services.approval_grant(request=request, actor=personas["sam"], role="security")
    services.approval_grant(request=request, actor=personas["gina"], role="governance")
    request.refresh_from_db()
    assert request.status == "approved"
    return request


def drive(run: Run, timeout: float = 120.0) -> Run:
    """Execute the run in-process until it ends, honouring its waits."""
    deadline = time.monotonic() + timeout
    while True:
        dispatch.advance(run.pk)
        run.refresh_from_db()
        if run.status in TERMINAL_RUN_STATUSES:
            return run
        assert time.monotonic() < deadline, f"run {run.pk} still {run.status}"
        time.sleep(0.2)


def start(kind: str, request: OnboardingRequest, actor: Any, env: str = "dev", **params) -> Run:
    return run_start(
        kind=kind,
        actor=actor,
        params={"request_id": request.pk, "environment": env, **params},
        subject=request,
    )


def provision(request: OnboardingRequest, actor: Any, env: str = "dev") -> Run:
    return drive(start(kinds.provision, request, actor, env))


def plan_of(request: OnboardingRequest, env: Any) -> dict[str, Any]:
    return plan_for(request, env)


def clients(env: Any) -> Any:
    return partial(aws.client, environment=env)


def env_named(environments: list[Any], name: str = "dev") -> Any:
    return next(e for e in environments if e.name == name)


def logged_actions(run: Run, prefix: str = "onboarding.provision_") -> list[str]:
    return [
        entry["action"] for step in run.steps.filter(key__startswith=prefix) for entry in step.log
    ]


def snapshot(plan: dict[str, Any], env: Any) -> dict[str, Any]:
    """Everything provisioning may touch, as AWS reports it."""
    c = clients(env)
    s3, events, cw = c("s3"), c("events"), c("cloudwatch")
    schema = plan["schema_object"]
    versions = s3.list_object_versions(Bucket=schema["bucket"], Prefix=schema["key"])
    rules = events.list_rules(NamePrefix=plan["rule"]["name"])["Rules"]
    return {
        "live": json.loads(json.dumps(read_live(plan, c), default=str)),
        "buckets": sorted(
            b["Name"] for b in s3.list_buckets()["Buckets"] if plan["source"] in b["Name"]
        ),
        "schema_versions": [v["VersionId"] for v in versions.get("Versions", [])],
        "rules": [r["Name"] for r in rules],
        "targets": events.list_targets_by_rule(Rule=plan["rule"]["name"])["Targets"],
        "alarms": [
            a["AlarmName"]
            for a in cw.describe_alarms(AlarmNamePrefix=f"etl-{plan['source']}-")["MetricAlarms"]
        ],
        "dashboard": json.loads(
            cw.get_dashboard(DashboardName=plan["dashboard_widget"]["dashboard_name"])[
                "DashboardBody"
            ]
        ),
        "notifications": {
            k: v
            for k, v in s3.get_bucket_notification_configuration(
                Bucket=plan["bucket"]["name"]
            ).items()
            if k != "ResponseMetadata"
        },
    }


def widget_titles(plan: dict[str, Any], env: Any) -> list[str]:
    body = clients(env)("cloudwatch").get_dashboard(
        DashboardName=plan["dashboard_widget"]["dashboard_name"]
    )["DashboardBody"]
    return [w.get("properties", {}).get("title") for w in json.loads(body)["widgets"]]


def mistag(plan: dict[str, Any], c: Any) -> None:
    """Someone changed the bucket's and the rule's tags by hand."""
    c("s3").put_bucket_tagging(
        Bucket=plan["bucket"]["name"], Tagging={"TagSet": [{"Key": "Source", "Value": "x"}]}
    )
    events = c("events")
    arn = events.describe_rule(Name=plan["rule"]["name"], EventBusName=plan["rule"]["event_bus"])
    events.tag_resource(ResourceARN=arn["Arn"], Tags=[{"Key": "Owner", "Value": "x"}])


class MeetAfterRead:
    """CloudWatch clients that, after reading a dashboard, wait up to a second for the
    other thread to have read it too."""

    def __init__(self, clients: Any, barrier: threading.Barrier) -> None:
        self.clients, self.barrier = clients, barrier

    def __call__(self, service: str) -> Any:
        client = self.clients(service)
        if service != "cloudwatch":
            return client
        barrier = self.barrier

        class Meeting:
            def __getattr__(self, name: str) -> Any:
                return getattr(client, name)

            def get_dashboard(self, **kwargs: Any) -> Any:
                found = client.get_dashboard(**kwargs)
                # Broken when the other run could not read meanwhile: it waits for the lock.
                with contextlib.suppress(threading.BrokenBarrierError):
                    barrier.wait(timeout=1.0)
                return found

        return Meeting()


class WorkerDied(Exception):
    pass


WRITES = ("put_", "create_", "tag_", "update_", "upload_", "delete_", "enable_", "schedule_")


class DiesAfterFirstWrite:
    """Clients whose first write reaches AWS, after which the 'worker' dies (raises)."""

    def __init__(self, clients: Any) -> None:
        self.clients = clients
        self.wrote = False

    def __call__(self, service: str) -> Any:
        return _Dying(self, self.clients(service))


class _Dying:
    def __init__(self, owner: DiesAfterFirstWrite, client: Any) -> None:
        self.owner, self.client = owner, client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)
        if not name.startswith(WRITES):
            return method

        def write(*args: Any, **kwargs: Any) -> Any:
            result = method(*args, **kwargs)
            if not self.owner.wrote:
                self.owner.wrote = True
                raise WorkerDied(name)
            return result

        return write


@pytest.fixture(name="engineer")
def engineer_fixture(personas):
    return personas["erin"]


# --- tests ---------------------------------------------------------------------------------------


class ProvisionTests:
    def test_it_applies_the_plan_and_a_second_run_changes_nothing(
        self, environments, personas, engineer
    ):
        request = approved_request(personas)
        env = env_named(environments)
        plan = plan_of(request, env)

        first = provision(request, engineer)
        assert first.status == "succeeded", first.error
        assert "created" in logged_actions(first)
        assert pending(drift_for(request, env)) == []
        before = snapshot(plan, env)

        second = provision(request, engineer)
        assert second.status == "succeeded", second.error
        assert set(logged_actions(second)) == {"unchanged"}
        for step in second.steps.filter(key__startswith="onboarding.provision_"):
            assert set(step.output["actions"].values()) == {"unchanged"}, step.key
        assert snapshot(plan, env) == before

    def test_a_crash_mid_step_converges_without_duplicates(self, environments, personas, engineer):
        request = approved_request(personas, sensitivity=["financial"])
        env = env_named(environments)
        plan = plan_of(request, env)
        assert plan["kms"]["dedicated"]
        c = clients(env)

        # The bucket step died right after CreateBucket; the KMS step right after CreateKey.
        apply.ensure_bucket_exists(plan, c, lambda *_: None)

        class Crash(Exception):
            pass

        def crash(key_id: str) -> None:
            raise Crash(key_id)

        with pytest.raises(Crash):
            aws.ensure_kms_key(
                c("kms"),
                alias=plan["kms"]["alias"],
                description=plan["kms"]["description"],
                tags=plan["kms"]["tags"],
                on_created=crash,
            )

        run = provision(request, engineer)
        assert run.status == "succeeded", run.error
        run = provision(request, engineer)
        assert set(logged_actions(run)) == {"unchanged"}

        snap = snapshot(plan, env)
        assert snap["buckets"] == [plan["bucket"]["name"]]
        assert snap["rules"] == [plan["rule"]["name"]]
        assert len(snap["targets"]) == 1
        assert snap["alarms"] == [plan["alarm"]["AlarmName"]]
        title = plan["dashboard_widget"]["widget"]["properties"]["title"]
        assert widget_titles(plan, env).count(title) == 1
        kms = c("kms")
        tagged = [
            k["KeyId"]
            for k in kms.list_keys()["Keys"]
            if {"TagKey": aws.KMS_ALIAS_TAG, "TagValue": plan["kms"]["alias"]}
            in kms.list_resource_tags(KeyId=k["KeyId"])["Tags"]
        ]
        assert len(tagged) == 1
        assert kms.describe_key(KeyId=plan["kms"]["alias"])["KeyMetadata"]["KeyId"] == tagged[0]
        assert pending(drift_for(request, env)) == []

    @pytest.mark.parametrize("key", [key for key, _, _ in PROVISION_STEPS])
    def test_a_worker_dying_after_any_steps_first_write_converges(
        self, environments, personas, engineer, key
    ):
        """Each step in turn: the steps before it ran, then it made its first change in AWS
        and the worker died before recording it. The run started again converges on the plan
        with one of everything, and a further run changes nothing."""
        request = approved_request(personas, sensitivity=["financial"])
        env = env_named(environments)
        plan = plan_of(request, env)
        c = clients(env)
        for done_key, _, func in PROVISION_STEPS:
            apply_step = func or (
                lambda plan, c, log: apply.apply_schema_object(plan, request.schema_text, c, log)
            )
            if done_key == key:
                if key == "onboarding.provision_tags":  # the tags step writes only to repair
                    mistag(plan, c)
                with pytest.raises(WorkerDied):
                    apply_step(plan, DiesAfterFirstWrite(c), lambda *_: None)
                break
            apply_step(plan, c, lambda *_: None)

        run = provision(request, engineer)
        assert run.status == "succeeded", run.error
        again = provision(request, engineer)
        assert set(logged_actions(again)) == {"unchanged"}, key
        snap = snapshot(plan, env)
        assert snap["buckets"] == [plan["bucket"]["name"]]
        assert snap["rules"] == [plan["rule"]["name"]] and len(snap["targets"]) == 1
        assert snap["alarms"] == [plan["alarm"]["AlarmName"]]
        assert len(snap["schema_versions"]) == 1
        title = plan["dashboard_widget"]["widget"]["properties"]["title"]
        assert widget_titles(plan, env).count(title) == 1
        assert pending(drift_for(request, env)) == []

    def test_an_edit_after_approval_stops_it_before_aws(self, environments, personas, engineer):
        request = approved_request(personas)
        env = env_named(environments)
        plan = plan_of(request, env)
        # Edited after approval (the services refuse to edit an approved request, so the
        # change is made the way a bug or a direct database edit would make it).
        OnboardingRequest.objects.filter(pk=request.pk).update(retention_days=30)

        run = provision(request, engineer)
        assert run.status == "failed"
        failed = run.steps.get(status="failed")
        assert failed.key == "onboarding.check_approval"
        assert "changed after it was approved" in failed.error
        assert "it needs approving again" in failed.error
        assert run.steps.filter(status="succeeded").count() == 0
        s3 = clients(env)("s3")
        names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
        assert plan["bucket"]["name"] not in names
        assert clients(env)("events").list_rules(NamePrefix=plan["rule"]["name"])["Rules"] == []

    def test_a_plan_changed_mid_run_stops_the_remaining_steps(
        self, environments, personas, engineer, sandbox
    ):
        """The run checked the approval, then failed on AWS; meanwhile an admin changed the
        environment, so the plan is no longer the one checked. Retrying applies nothing."""
        request = approved_request(personas)
        sandbox.inject(service="s3", operation="CreateBucket", code="AccessDenied")
        run = provision(request, engineer)
        assert run.status == "failed"
        failed = run.steps.get(status="failed")
        assert failed.key == "onboarding.provision_bucket"
        Environment.objects.filter(name="dev").update(dashboard_name="etl-other-{env}")

        run_retry_step(run=run, step_id=failed.pk, actor=engineer)
        run = drive(run)

        assert run.status == "failed"
        failed.refresh_from_db()
        assert "changed after this run checked its approval" in failed.error
        plan = plan_of(request, env_named(environments))
        names = [
            b["Name"] for b in clients(env_named(environments))("s3").list_buckets()["Buckets"]
        ]
        assert plan["bucket"]["name"] not in names

    def test_an_unapproved_request_is_refused(self, environments, personas, engineer):
        request = make_request(personas["rita"], source_name=f"src-{uuid.uuid4().hex[:8]}")
        run = provision(request, engineer)
        assert run.status == "failed"
        assert "not approved" in run.steps.get(status="failed").error

    def test_the_dashboard_merge_keeps_other_widgets(self, environments, personas, engineer):
        request = approved_request(personas)
        env = env_named(environments)
        plan = plan_of(request, env)
        cw = clients(env)("cloudwatch")
        name = plan["dashboard_widget"]["dashboard_name"]
        body = json.loads(cw.get_dashboard(DashboardName=name)["DashboardBody"])
        body["widgets"].append({**OTHER_WIDGET, "properties": {**OTHER_WIDGET["properties"]}})
        cw.put_dashboard(DashboardName=name, DashboardBody=json.dumps(body))
        before = [w.get("properties", {}).get("title") for w in body["widgets"]]

        assert provision(request, engineer).status == "succeeded"
        title = plan["dashboard_widget"]["widget"]["properties"]["title"]
        after = widget_titles(plan, env)
        assert after == [*before, title]

        # A widget someone edited by hand is put back in place, the others untouched.
        body = json.loads(cw.get_dashboard(DashboardName=name)["DashboardBody"])
        for widget in body["widgets"]:
            if widget["properties"]["title"] == title:
                widget["properties"]["period"] = 60
        cw.put_dashboard(DashboardName=name, DashboardBody=json.dumps(body))
        run = provision(request, engineer)
        widget_step = run.steps.get(key="onboarding.provision_dashboard_widget")
        assert widget_step.output["actions"] == {"dashboard_widget": "updated"}
        assert widget_titles(plan, env) == after

    @pytest.mark.django_db(transaction=True)
    def test_two_runs_merging_widgets_at_once_keep_both(self, environments, personas):
        """Both read the dashboard before either writes it back (a barrier holds each
        after its read): without the lock one widget is lost."""
        env = env_named(environments)
        plans = [plan_of(approved_request(personas), env) for _ in range(2)]
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def merge(plan: dict[str, Any]) -> None:
            try:
                apply.apply_dashboard_widget(plan, MeetAfterRead(clients(env), barrier), print)
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=merge, args=(plan,)) for plan in plans]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
        titles = widget_titles(plans[0], env)
        for plan in plans:
            assert titles.count(plan["dashboard_widget"]["widget"]["properties"]["title"]) == 1

    def test_only_an_engineer_may_start_it(self, environments, personas):
        from django.core.exceptions import PermissionDenied

        request = approved_request(personas)
        for name in ("rita", "sam", "ada"):
            with pytest.raises(PermissionDenied):
                start(kinds.provision, request, personas[name])


def controls(checks: list[Any]) -> dict[str, Any]:
    return {check.control: check.passed for check in checks}


class SecurityBaselineTests:
    def test_what_was_provisioned_passes_and_each_break_fails_its_control(
        self, environments, personas, engineer
    ):
        request = approved_request(personas)
        env = env_named(environments)
        plan = plan_of(request, env)
        assert provision(request, engineer).status == "succeeded"
        s3, bucket = clients(env)("s3"), plan["bucket"]["name"]

        checks = controls(security_baseline(s3, bucket))
        assert checks["S3.9"] is None  # no access logging configured: not applicable
        assert checks["S3.1"] is None  # account level not read without s3control
        failing = {k for k, passed in checks.items() if passed is False}
        assert failing == set()
        assert {"S3.2", "S3.3", "S3.5", "S3.8", "S3.13", "S3.14", "S3.17"} <= set(checks)

        s3.delete_public_access_block(Bucket=bucket)
        assert controls(security_baseline(s3, bucket))["S3.8"] is False

        policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
        policy["Statement"].append(
            {
                "Sid": "Oops",
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": "s3:GetObject",
                "Resource": f"{plan['bucket']['arn']}/*",
            }
        )
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
        checks = controls(security_baseline(s3, bucket))
        assert (checks["S3.2"], checks["S3.3"]) == (False, True)

        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
        checks = controls(security_baseline(s3, bucket))
        assert checks["S3.14"] is False
        assert checks["S3.5"] is True and checks["S3.17"] is True

        # Provisioning again puts every control right.
        assert provision(request, engineer).status == "succeeded"
        checks = controls(security_baseline(s3, bucket))
        assert {k for k, passed in checks.items() if passed is False} == set()
