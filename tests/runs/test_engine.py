"""The engine and the run services, driven in-process (the worker tests show the rest)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError
from django.core.exceptions import PermissionDenied
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone

import tests.runs.worker_steps  # noqa: F401 - registers the test run kinds
from portal.errors import ApplicationError
from portal.models import AuditEvent
from portal.runs import dispatch, outcomes, recording
from portal.runs.api import PermanentStepError, TransientStepError, step
from portal.runs.models import Run, RunStatus, StepStatus
from portal.runs.services import run_cancel, run_retry_step, run_skip_step, run_start


def client_error(code: str, message: str = "nope", status: int = 400) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "GetCallerIdentity",
    )


def events(run: Run) -> list[str]:
    return list(
        AuditEvent.objects.filter(object_type="runs.run", object_id=str(run.pk))
        .order_by("seq")
        .values_list("action", flat=True)
    )


_FAILURES: dict[str, int] = {}


@step("test.fails_then_passes", title="Fails until told otherwise")
def fails_then_passes(ctx):
    if _FAILURES.get("left", 0) > 0:
        _FAILURES["left"] -= 1
        raise PermanentStepError("the bucket policy is wrong")
    return None


@step("test.steal_lease", title="Another worker takes the run over mid-step")
def steal_lease(ctx):
    Run.objects.filter(pk=ctx.run.pk).update(lease_owner="someone-else")


from portal.roles import Role  # noqa: E402
from portal.runs.api import PlannedStep, run_kind  # noqa: E402


@run_kind("test.fragile", title="Fragile", start_roles=[Role.ENGINEER])
def plan_fragile(params):
    return [
        PlannedStep("test.record", "First"),
        PlannedStep("test.fails_then_passes"),
        PlannedStep("test.record", "Last"),
    ]


@run_kind("test.stolen", title="Stolen", start_roles=[Role.ENGINEER])
def plan_stolen(params):
    return [PlannedStep("test.steal_lease")]


class ErrorClassificationTests:
    @pytest.mark.parametrize(
        "code", ["Throttling", "ThrottlingException", "TooManyRequestsException", "SlowDown"]
    )
    def test_it_treats_throttling_as_transient(self, code):
        assert outcomes.classify_error(client_error(code))[0] is True

    def test_it_treats_5xx_as_transient(self):
        assert outcomes.classify_error(client_error("Whatever", status=503))[0] is True

    def test_it_treats_access_denied_as_permanent_with_the_aws_message(self):
        transient, message = outcomes.classify_error(
            client_error("AccessDenied", "User arn:aws:iam::1:user/x is not authorized", 403)
        )
        assert transient is False
        assert "AccessDenied" in message and "is not authorized" in message

    def test_it_treats_connection_errors_as_transient(self):
        assert outcomes.classify_error(EndpointConnectionError(endpoint_url="http://x"))[0] is True

    def test_it_uses_the_message_of_step_errors(self):
        assert outcomes.classify_error(TransientStepError("later")) == (True, "later")
        assert outcomes.classify_error(PermanentStepError("never")) == (False, "never")

    @override_settings(RUNS_BACKOFF_BASE_SECONDS=2, RUNS_BACKOFF_MAX_SECONDS=30)
    def test_backoff_grows_and_is_capped(self):
        assert 1 <= recording.backoff_seconds(1) <= 2
        assert 4 <= recording.backoff_seconds(3) <= 8
        assert 15 <= recording.backoff_seconds(10) <= 30


@pytest.fixture
def erin(personas):
    return personas["erin"]


class RunStartTests:
    def test_it_freezes_the_plan_and_audits_the_start(self, erin):
        run = run_start(kind="test.sequence", actor=erin, params={"steps": 3})
        assert run.plan == ["test.record"] * 3
        assert list(run.steps.values_list("position", "status")) == [
            (0, "pending"),
            (1, "pending"),
            (2, "pending"),
        ]
        assert events(run) == ["run.started"]

    def test_it_refuses_a_person_without_the_role(self, personas):
        with pytest.raises(PermissionDenied):
            run_start(kind="test.sequence", actor=personas["rita"], params={})
        assert not Run.objects.exists()

    def test_it_refuses_an_unknown_kind(self, erin):
        with pytest.raises(ApplicationError):
            run_start(kind="no.such.kind", actor=erin)


class FailureAndRecoveryTests:
    def test_a_permanent_failure_stops_the_run_and_retry_completes_it(self, erin):
        _FAILURES["left"] = 1
        run = run_start(kind="test.fragile", actor=erin, params={})
        dispatch.advance(run.pk)
        run.refresh_from_db()
        assert run.status == RunStatus.FAILED
        failed = run.steps.get(position=1)
        assert failed.status == StepStatus.FAILED and failed.error == "the bucket policy is wrong"
        assert run.steps.get(position=2).status == StepStatus.PENDING

        run_retry_step(run=run, step_id=failed.pk, actor=erin)
        dispatch.advance(run.pk)
        run.refresh_from_db()
        assert run.status == RunStatus.SUCCEEDED
        assert run.steps.get(position=1).attempts == 2
        assert events(run).count("step.retried") == 1

    def test_retry_twice_is_refused_the_second_time(self, erin):
        _FAILURES["left"] = 1
        run = run_start(kind="test.fragile", actor=erin, params={})
        dispatch.advance(run.pk)
        failed = run.steps.get(position=1)
        run_retry_step(run=run, step_id=failed.pk, actor=erin)
        with pytest.raises(ApplicationError):
            run_retry_step(run=run, step_id=failed.pk, actor=erin)
        assert events(run).count("step.retried") == 1

    def test_skip_needs_a_reason_and_carries_on(self, erin):
        _FAILURES["left"] = 5
        run = run_start(kind="test.fragile", actor=erin, params={})
        dispatch.advance(run.pk)
        failed = run.steps.get(position=1)
        with pytest.raises(ApplicationError):
            run_skip_step(run=run, step_id=failed.pk, actor=erin, reason="")
        run_skip_step(run=run, step_id=failed.pk, actor=erin, reason="configured by hand in DATA-7")
        dispatch.advance(run.pk)
        run.refresh_from_db()
        assert run.status == RunStatus.SUCCEEDED
        skipped = run.steps.get(position=1)
        assert skipped.status == StepStatus.SKIPPED and "DATA-7" in skipped.skip_reason
        _FAILURES["left"] = 0

    def test_only_operators_may_retry(self, erin, personas):
        _FAILURES["left"] = 1
        run = run_start(kind="test.fragile", actor=erin, params={})
        dispatch.advance(run.pk)
        with pytest.raises(PermissionDenied):
            run_retry_step(run=run, step_id=run.steps.get(position=1).pk, actor=personas["rita"])
        _FAILURES["left"] = 0


class CancelTests:
    def test_an_idle_run_is_cancelled_at_once(self, erin):
        run = run_start(kind="test.sequence", actor=erin, params={"steps": 2})
        run_cancel(run=run, actor=erin)
        run.refresh_from_db()
        assert run.status == RunStatus.CANCELLED
        assert set(run.steps.values_list("status", flat=True)) == {StepStatus.CANCELLED}
        assert events(run) == ["run.started", "run.cancelled"]

    def test_a_leased_run_is_cancelled_between_steps(self, erin):
        run = run_start(kind="test.sequence", actor=erin, params={"steps": 3})
        dispatch.advance(run.pk)  # finishes it entirely; start another to hold mid-way
        run = run_start(kind="test.sequence", actor=erin, params={"steps": 3})
        Run.objects.filter(pk=run.pk).update(
            lease_owner="worker-x", lease_expires_at=timezone.now() + timedelta(seconds=30)
        )
        run_cancel(run=run, actor=erin)
        run.refresh_from_db()
        assert run.status == RunStatus.PENDING and run.cancel_requested
        with pytest.raises(ApplicationError):
            run_cancel(run=run, actor=erin)

        Run.objects.filter(pk=run.pk).update(lease_owner="", lease_expires_at=None)
        dispatch.advance(run.pk)
        run.refresh_from_db()
        assert run.status == RunStatus.CANCELLED
        assert events(run) == ["run.started", "run.cancel_requested", "run.cancelled"]


class LeaseTests:
    def test_a_worker_that_lost_its_lease_records_nothing(self, erin):
        run = run_start(kind="test.stolen", actor=erin, params={})
        assert dispatch.advance(run.pk) == "lost"
        run.refresh_from_db()
        step = run.steps.get()
        assert step.status == StepStatus.RUNNING  # the new owner will record it
        assert "step.succeeded" not in events(run)

    def test_a_leased_run_cannot_be_claimed(self, erin):
        run = run_start(kind="test.sequence", actor=erin, params={"steps": 1})
        Run.objects.filter(pk=run.pk).update(
            lease_owner="worker-x", lease_expires_at=timezone.now() + timedelta(seconds=30)
        )
        assert dispatch.advance(run.pk) == "not-claimed"
        Run.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
        assert dispatch.advance(run.pk) == "stop"
        assert Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED


class RunPageTests:
    def test_the_progress_partial_polls_until_terminal(self, client, erin):
        run = run_start(kind="test.sequence", actor=erin, params={"steps": 2})
        client.force_login(erin)
        url = reverse("runs:detail", args=[run.pk])
        page = client.get(url)
        assert page.status_code == 200
        assert b'hx-trigger="every 1.0s"' in page.content or b"every 1" in page.content

        partial = client.get(url, HTTP_HX_REQUEST="true")
        assert partial.status_code == 200
        assert b"<html" not in partial.content and b"every 1" in partial.content

        dispatch.advance(run.pk)
        done = client.get(url, HTTP_HX_REQUEST="true")
        assert done.status_code == 286  # htmx stops polling
        assert b"every 1" not in done.content
        assert b'data-percent="100"' in done.content

    def test_buttons_show_only_for_people_allowed_to_press_them(self, client, erin, personas):
        _FAILURES["left"] = 1
        run = run_start(kind="test.fragile", actor=erin, params={})
        dispatch.advance(run.pk)
        url = reverse("runs:detail", args=[run.pk])
        client.force_login(erin)
        assert b"Retry step" in client.get(url).content
        client.force_login(personas["rita"])
        page = client.get(url).content
        assert b"Retry step" not in page and b"Cancel run" not in page
        retry = reverse("runs:step-retry", args=[run.pk, run.steps.get(position=1).pk])
        assert client.post(retry).status_code == 403
        assert Run.objects.get(pk=run.pk).status == RunStatus.FAILED
        _FAILURES["left"] = 0

    def test_a_double_click_on_retry_makes_one_transition(self, client, erin):
        _FAILURES["left"] = 1
        run = run_start(kind="test.fragile", actor=erin, params={})
        dispatch.advance(run.pk)
        client.force_login(erin)
        retry = reverse("runs:step-retry", args=[run.pk, run.steps.get(position=1).pk])
        first = client.post(retry, HTTP_HX_REQUEST="true")
        second = client.post(retry, HTTP_HX_REQUEST="true")
        assert first.status_code == 200 and second.status_code == 200
        assert b"Only the failed step of a failed run can be retried" in second.content
        assert events(run).count("step.retried") == 1
