"""The environment check run (portal/steps.py) against the seeded sandbox."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from portal import aws
from portal.errors import ApplicationError
from portal.runs import dispatch
from portal.runs.models import Run, RunStatus, StepStatus
from portal.runs.services import run_start
from tests.personas import make_persona

CHECKS = ["credentials", "state machine", "Lambda functions", "metadata table", "processed bucket"]


def _check(actor, names):
    run = run_start(kind="environment.check", actor=actor, params={"environments": names})
    dispatch.advance(run.pk)
    return Run.objects.get(pk=run.pk)


def _outputs(run):
    return {step.title: step.output for step in run.steps.order_by("position")}


class EnvironmentCheckTests:
    def test_every_step_succeeds_against_the_seeded_sandbox(self, environments):
        erin = make_persona("erin")

        run = _check(erin, ["dev", "staging", "prod"])

        assert run.status == RunStatus.SUCCEEDED, run.error
        steps = list(run.steps.order_by("position"))
        assert [s.title for s in steps] == [
            f"{env}: {check}" for env in ("dev", "staging", "prod") for check in CHECKS
        ]
        assert all(s.status == StepStatus.SUCCEEDED for s in steps)
        assert all(any(entry["action"] == "read" for entry in s.log) for s in steps)
        out = _outputs(run)
        assert out["staging: credentials"]["account"] == "222222222222"
        assert out["staging: credentials"]["arn"].endswith(
            ":assumed-role/onramp-deployer/onramp-staging"
        )
        assert out["prod: state machine"]["status"] == "ACTIVE"
        assert out["prod: state machine"]["arn"].endswith(
            ":333333333333:stateMachine:etl-workflow-prod"
        )
        assert out["dev: Lambda functions"]["versions"] == {
            "ingest-handler": "2",
            "validate-handler": "2",
            "transform-handler": "2",
            "output-handler": "2",
        }
        assert out["dev: metadata table"]["status"] == "ACTIVE"
        assert out["dev: metadata table"]["key_schema"] == {"pk": "HASH", "sk": "RANGE"}
        assert out["prod: processed bucket"] == {
            "bucket": "processed-data-prod",
            "versioning": "Enabled",
        }

    def test_it_checks_all_environments_in_rollout_order_by_default(self, environments):
        ada = make_persona("ada")

        everything = run_start(kind="environment.check", actor=ada, params={})
        picked = run_start(
            kind="environment.check", actor=ada, params={"environments": ["prod", "dev"]}
        )

        assert [s.title for s in everything.steps.order_by("position")][::5] == [
            "dev: credentials",
            "staging: credentials",
            "prod: credentials",
        ]
        assert [s.title for s in picked.steps.order_by("position")][::5] == [
            "dev: credentials",
            "prod: credentials",
        ]

    def test_it_refuses_an_unknown_environment(self, environments):
        with pytest.raises(ApplicationError, match="qa"):
            run_start(
                kind="environment.check",
                actor=make_persona("erin"),
                params={"environments": ["qa"]},
            )

    def test_a_deleted_alias_fails_the_run_and_names_it(self, environments):
        staging = next(env for env in environments if env.name == "staging")
        aws.client("lambda", staging).delete_alias(
            FunctionName="transform-handler", Name="production"
        )

        run = _check(make_persona("erin"), ["staging"])

        assert run.status == RunStatus.FAILED
        failed = run.steps.get(status=StepStatus.FAILED)
        assert failed.title == "staging: Lambda functions"
        assert "transform-handler" in failed.error
        assert "'production'" in failed.error
        assert "staging (account 222222222222" in failed.error
        assert "ingest-handler" not in failed.error
        assert "transform-handler" in run.error
        later = run.steps.filter(position__gt=failed.position)
        assert {s.status for s in later} == {StepStatus.PENDING}

    def test_access_denied_fails_with_the_aws_message(self, environments, sandbox):
        dev = next(env for env in environments if env.name == "dev")
        aws.client("sts", dev).get_caller_identity()  # the role is assumed before the fault
        message = "User: onramp-deployer is not authorized to perform: sts:GetCallerIdentity"
        sandbox.inject(
            service="sts",
            operation="GetCallerIdentity",
            code="AccessDenied",
            message=message,
            status=403,
            count=-1,
        )

        run = _check(make_persona("erin"), ["dev"])

        assert run.status == RunStatus.FAILED
        failed = run.steps.get(status=StepStatus.FAILED)
        assert failed.title == "dev: credentials"
        assert failed.attempts == 1  # permanent: not retried
        assert "AccessDenied" in failed.error
        assert message in failed.error

    def test_credentials_for_the_wrong_account_fail(self, environments):
        dev = next(env for env in environments if env.name == "dev")
        dev.account_id = "999999999999"
        dev.save(update_fields=["account_id"])

        run = _check(make_persona("erin"), ["dev"])

        assert run.status == RunStatus.FAILED
        failed = run.steps.get(status=StepStatus.FAILED)
        assert failed.title == "dev: credentials"
        assert "111111111111" in failed.error
        assert "999999999999" in failed.error

    def test_a_missing_table_names_it(self, environments):
        prod = next(env for env in environments if env.name == "prod")
        prod.metadata_table_name = "etl-metadata-missing-{env}"
        prod.save(update_fields=["metadata_table_name"])

        run = _check(make_persona("erin"), ["prod"])

        failed = run.steps.get(status=StepStatus.FAILED)
        assert failed.title == "prod: metadata table"
        assert (
            "etl-metadata-missing-prod does not exist in prod (account 333333333333" in failed.error
        )


class EnvironmentCheckPermissionTests:
    def test_an_engineer_and_an_admin_can_start_it(self, environments):
        for name in ("erin", "ada"):
            run = run_start(
                kind="environment.check", actor=make_persona(name), params={"environments": ["dev"]}
            )
            assert run.steps.count() == 5

    def test_a_requester_cannot(self, environments):
        with pytest.raises(PermissionDenied):
            run_start(kind="environment.check", actor=make_persona("rita"), params={})
        assert not Run.objects.exists()

    def test_the_home_page_button_starts_a_check(self, environments, client):
        client.force_login(make_persona("erin"))

        response = client.post(reverse("environment-check"), {"environment": ["staging"]})

        run = Run.objects.get()
        assert response.status_code == 302
        assert response["Location"] == reverse("runs:detail", kwargs={"run_id": run.pk})
        assert run.kind == "environment.check"
        assert run.params == {"environments": ["staging"]}

    def test_a_requester_pressing_it_gets_403(self, environments, client):
        client.force_login(make_persona("rita"))

        response = client.post(reverse("environment-check"))

        assert response.status_code == 403
        assert not Run.objects.exists()
