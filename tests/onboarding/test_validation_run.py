"""Validation as a run (onboarding.validate), executed in-process with dispatch.advance on
real generated sample files, and schema inference from the samples."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from onboarding import services
from onboarding.models import Sample
from onboarding.validation import SampleReport, check_schema
from portal.errors import ApplicationError
from portal.models import AuditEvent
from portal.runs import dispatch
from portal.runs.models import RunStatus, StepStatus
from tests.onboarding.test_requests import (
    SCHEMA,
    add_samples,
    make_request,
    malformed_ndjson,
    media_fixture,  # noqa: F401 - fixture
    rita_fixture,  # noqa: F401 - fixture
    upload,
    valid_ndjson,
    validate,
)
from tests.personas import PASSWORD


def _state(request):
    request.refresh_from_db()
    return services.request_validation_state(request)


class ValidationRunTests:
    def test_ten_samples_with_one_expected_malformed_pass(self, rita):
        request = make_request(rita)
        add_samples(request, rita, valid=9, malformed=1)
        run = validate(request, rita)
        assert run.status == RunStatus.SUCCEEDED
        keys = list(run.steps.order_by("position").values_list("key", flat=True))
        assert keys == [
            "onboarding.check_schema",
            *["onboarding.validate_sample"] * 10,
            "onboarding.validation_summary",
        ]
        state = _state(request)
        assert state.passed
        assert {v.state for v in state.verdicts} == {"passes"}

    def test_each_sample_keeps_its_report_for_the_revision_it_validated(self, rita):
        request = make_request(rita)
        add_samples(request, rita, valid=9, malformed=1)
        request.refresh_from_db()
        run = validate(request, rita)
        malformed = Sample.objects.get(original_name="malformed-00.ndjson")
        report = SampleReport.from_dict(malformed.report)
        assert malformed.report_revision == request.revision
        assert report.records_checked == 3
        assert report.invalid_count == 2
        assert [e.record for e in report.errors] == [2, 3]
        assert any("id" in e.message for e in report.errors)
        step = run.steps.get(params__sample_id=malformed.pk)
        assert step.output["invalid_count"] == 2
        assert step.output["behaves_as_marked"] is True

    def test_a_valid_file_marked_malformed_fails(self, rita):
        request = make_request(rita)
        add_samples(request, rita, valid=10, malformed=0)
        sample = request.samples.order_by("pk").first()
        services.sample_mark(sample=sample, actor=rita, expected_malformed=True)
        run = validate(request, rita)
        assert run.status == RunStatus.FAILED
        assert sample.original_name in run.error
        assert "schema accepts it" in run.error
        assert not _state(request).passed

    def test_a_malformed_file_not_marked_fails(self, rita):
        request = make_request(rita)
        add_samples(request, rita, valid=9, malformed=0)
        services.sample_upload(
            request=request, actor=rita, files=[upload("unmarked.ndjson", malformed_ndjson(7))]
        )
        run = validate(request, rita)
        assert run.status == RunStatus.FAILED
        assert "unmarked.ndjson: The schema rejects this sample." in run.error
        verdicts = {v.sample.original_name: v.state for v in _state(request).verdicts}
        assert verdicts["unmarked.ndjson"] == "fails"
        assert list(verdicts.values()).count("passes") == 9

    def test_a_broken_schema_stops_the_run_at_the_schema_check(self, rita):
        request = make_request(
            rita, schema_text='{"type": "object", "properties": {"a": {"type": 5}}}'
        )
        add_samples(request, rita)
        run = validate(request, rita)
        assert run.status == RunStatus.FAILED
        first = run.steps.get(position=0)
        assert first.status == StepStatus.FAILED
        assert "The schema has" in first.error
        assert not Sample.objects.exclude(report=None).exists()

    def test_a_fixed_sample_validates_after_a_retry_of_the_run(self, rita):
        request = make_request(rita)
        add_samples(request, rita, valid=10, malformed=0)
        services.sample_upload(
            request=request, actor=rita, files=[upload("oops.ndjson", malformed_ndjson(3))]
        )
        assert validate(request, rita).status == RunStatus.FAILED
        services.sample_mark(
            sample=Sample.objects.get(original_name="oops.ndjson"),
            actor=rita,
            expected_malformed=True,
        )
        assert validate(request, rita).status == RunStatus.SUCCEEDED
        assert _state(request).passed

    def test_an_engineer_may_validate_and_a_second_run_waits_for_the_first(self, rita, personas):
        request = make_request(rita)
        add_samples(request, rita)
        run = services.request_validate(request=request, actor=personas["erin"])
        with pytest.raises(ApplicationError, match="already running"):
            services.request_validate(request=request, actor=rita)
        dispatch.advance(run.pk)
        assert services.request_validate(request=request, actor=rita).pk != run.pk

    def test_others_may_not_validate(self, rita, personas):
        request = make_request(rita)
        add_samples(request, rita)
        for name in ("rex", "sam", "fay"):
            with pytest.raises(PermissionDenied):
                services.request_validate(request=request, actor=personas[name])

    def test_starting_is_one_audited_run_start(self, rita):
        request = make_request(rita)
        add_samples(request, rita)
        before = AuditEvent.objects.count()
        run = services.request_validate(request=request, actor=rita)
        assert list(
            AuditEvent.objects.filter(seq__gt=before).values_list("action", "object_id")
        ) == [("run.started", str(run.pk))]

    def test_the_ticket_shows_each_report(self, client, rita):
        request = make_request(rita)
        add_samples(request, rita)
        validate(request, rita)
        client.login(username="rita", password=PASSWORD)
        html = client.get(
            reverse("onboarding:request-detail", args=[request.number])
        ).content.decode()
        assert 'data-sample="malformed-00.ndjson" data-state="passes"' in html
        assert "3 records checked, 2 invalid" in html
        assert "All 10 samples behave as marked." in html

    def test_the_progress_fragment_polls_until_the_run_ends(self, client, rita):
        request = make_request(rita)
        add_samples(request, rita)
        run = services.request_validate(request=request, actor=rita)
        client.login(username="rita", password=PASSWORD)
        ticket = client.get(reverse("onboarding:request-detail", args=[request.number]))
        embed = f'hx-get="{reverse("runs:detail", args=[run.pk])}" hx-trigger="load"'
        assert embed in ticket.content.decode()
        url = reverse("onboarding:request-validation", args=[request.number])
        running = client.get(url, headers={"HX-Request": "true"})
        assert running.status_code == 200
        assert 'hx-trigger="every 1s"' in running.content.decode()
        dispatch.advance(run.pk)
        done = client.get(url, headers={"HX-Request": "true"})
        assert done.status_code == 286
        body = done.content.decode()
        assert 'hx-trigger="every 1s"' not in body
        assert 'id="readiness" hx-swap-oob="true"' in body
        ticket = client.get(reverse("onboarding:request-detail", args=[request.number]))
        assert embed not in ticket.content.decode()  # a finished run is a line, not a poller


class SchemaInferenceTests:
    def test_it_fills_the_empty_schema_from_the_samples(self, rita):
        request = make_request(rita, schema_text="")
        add_samples(request, rita)
        before = AuditEvent.objects.count()
        services.request_infer_schema(request=request, actor=rita)
        request.refresh_from_db()
        schema, problems = check_schema(request.schema_text)
        assert problems == []
        assert {"id", "timestamp", "event_type"} <= set(schema["properties"])
        assert list(AuditEvent.objects.filter(seq__gt=before).values_list("action", flat=True)) == [
            "onboarding.schema_inferred"
        ]
        assert "Inferred the schema" in request.revisions.get(number=request.revision).summary

    def test_it_leaves_an_existing_schema_alone(self, rita):
        request = make_request(rita)
        add_samples(request, rita)
        with pytest.raises(ApplicationError, match="already has a schema"):
            services.request_infer_schema(request=request, actor=rita)
        request.refresh_from_db()
        assert json.loads(request.schema_text) == SCHEMA

    def test_it_needs_samples(self, rita):
        request = make_request(rita, schema_text="")
        with pytest.raises(ApplicationError, match="Upload sample files"):
            services.request_infer_schema(request=request, actor=rita)

    def test_the_inferred_schema_validates_the_samples_it_came_from(self, rita):
        request = make_request(rita, schema_text="")
        services.sample_upload(
            request=request,
            actor=rita,
            files=[upload(f"v{i}.ndjson", valid_ndjson(i)) for i in range(10)],
        )
        services.request_infer_schema(request=request, actor=rita)
        assert validate(request, rita).status == RunStatus.SUCCEEDED
