"""The onboarding request's lifecycle through its services: draft, prerequisites, submit.

The builders at the top (spec, sample files, requests in each state) are shared by the
other onboarding test modules.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command

from onboarding import services
from onboarding.models import OnboardingRequest, RequestRevision, RequestStatus
from portal.errors import ApplicationError
from portal.models import AuditEvent
from portal.runs import dispatch
from portal.runs.models import Run

SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["id", "timestamp", "event_type"],
    "properties": {
        "id": {"type": "string"},
        "timestamp": {"type": "string", "format": "date-time"},
        "event_type": {"type": "string", "enum": ["create", "update", "delete"]},
    },
}


def complete_spec(**overrides: Any) -> dict[str, Any]:
    spec = {
        "source_name": "clickstream",
        "description": "Click events from the web shop.",
        "owner_team": "web-analytics",
        "data_format": "ndjson",
        "schema_text": json.dumps(SCHEMA, indent=2),
        "schema_version": 1,
        "files_per_day": 288,
        "average_file_size_kb": 512,
        "frequency": "hourly",
        "latency_sla": "hourly",
        "sensitivity": ["pii"],
        "retention_days": 400,
        "retention_legal_basis": "GDPR Art. 6(1)(f), legitimate interest",
        "business_justification": "Conversion funnel reporting.",
        "downstream_consumers": "BI dashboards; the recommendations team.",
        "producer_role_arn": "arn:aws:iam::123456789012:role/web/clickstream-producer",
    }
    spec.update(overrides)
    return spec


def valid_ndjson(n: int, records: int = 5) -> bytes:
    lines = [
        json.dumps(
            {"id": f"evt-{n}-{i}", "timestamp": "2024-05-01T12:00:00Z", "event_type": "create"}
        )
        for i in range(records)
    ]
    return ("\n".join(lines) + "\n").encode()


def malformed_ndjson(n: int) -> bytes:
    """Parses as NDJSON, breaks the schema: a record without an id, an unknown event type."""
    lines = [
        json.dumps({"id": f"ok-{n}", "timestamp": "2024-05-01T12:00:00Z", "event_type": "create"}),
        json.dumps({"timestamp": "2024-05-01T12:00:00Z", "event_type": "create"}),
        json.dumps({"id": f"bad-{n}", "timestamp": "2024-05-01T12:00:00Z", "event_type": "boom"}),
    ]
    return ("\n".join(lines) + "\n").encode()


def upload(name: str, content: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="application/octet-stream")


def make_request(user: Any, **overrides: Any) -> OnboardingRequest:
    return services.request_create(actor=user, data=complete_spec(**overrides))


def add_samples(
    request: OnboardingRequest, user: Any, *, valid: int = 9, malformed: int = 1
) -> list[Any]:
    files = [upload(f"valid-{i:02}.ndjson", valid_ndjson(i)) for i in range(valid)]
    files += [upload(f"malformed-{i:02}.ndjson", malformed_ndjson(i)) for i in range(malformed)]
    samples = services.sample_upload(request=request, actor=user, files=files)
    for sample in samples:
        if sample.original_name.startswith("malformed-"):
            services.sample_mark(sample=sample, actor=user, expected_malformed=True)
    return samples


def validate(request: OnboardingRequest, user: Any) -> Run:
    """Start the validation run and execute it in-process."""
    run = services.request_validate(request=request, actor=user)
    dispatch.advance(run.pk)
    run.refresh_from_db()
    return run


def ready_request(user: Any, **overrides: Any) -> OnboardingRequest:
    """Complete spec, 9 valid samples and 1 expected malformed, validated."""
    request = make_request(user, **overrides)
    add_samples(request, user)
    run = validate(request, user)
    assert run.status == "succeeded", run.error
    request.refresh_from_db()
    return request


def submitted_request(user: Any, **overrides: Any) -> OnboardingRequest:
    request = ready_request(user, **overrides)
    return services.request_submit(request=request, actor=user)


@pytest.fixture(name="media", autouse=True)
def media_fixture(settings, tmp_path):
    """Sample files go to a directory of this test's own."""
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture(name="environment_rows")
def environment_rows_fixture(db):
    """The dev, staging and prod Environment rows (no sandbox needed for plans)."""
    call_command("seed_environments", stdout=io.StringIO())
    from portal.models import Environment

    return list(Environment.objects.all())


@pytest.fixture(name="rita")
def rita_fixture(personas):
    return personas["rita"]


def _events(request: OnboardingRequest) -> list[str]:
    return list(
        AuditEvent.objects.filter(
            object_type="onboarding.onboardingrequest", object_id=str(request.pk)
        )
        .order_by("seq")
        .values_list("action", flat=True)
    )


class RequestDraftTests:
    def test_it_saves_a_draft_with_everything_missing(self, rita):
        request = services.request_create(actor=rita, data={})
        assert request.status == RequestStatus.DRAFT
        assert request.key == "DATA-1"
        assert request.title == "[DATA-ONBOARD] Add source: (unnamed)"
        assert request.revision == 1
        assert _events(request) == ["onboarding.request_created"]

    def test_it_numbers_requests_sequentially_and_titles_them(self, rita):
        first = make_request(rita, source_name="orders")
        second = make_request(rita, source_name="payments")
        assert (first.key, second.key) == ("DATA-1", "DATA-2")
        assert second.title == "[DATA-ONBOARD] Add source: payments"

    @pytest.mark.parametrize(
        "name", ["ab", "A-Upper", "-leading", "trailing-", "has_underscore", "x" * 41, "sp ace"]
    )
    def test_it_refuses_a_source_name_unfit_for_resource_names(self, rita, name):
        with pytest.raises(ApplicationError) as exc:
            services.request_create(actor=rita, data={"source_name": name})
        assert exc.value.field == "source_name"
        assert not OnboardingRequest.objects.exists()

    @pytest.mark.parametrize("name", ["abc", "a1-b2", "x" * 40])
    def test_it_accepts_source_names_of_3_to_40_characters(self, rita, name):
        assert services.request_create(actor=rita, data={"source_name": name}).source_name == name

    def test_it_refuses_a_source_name_another_request_uses(self, rita):
        make_request(rita, source_name="orders")
        with pytest.raises(ApplicationError, match="DATA-1") as exc:
            make_request(rita, source_name="orders")
        assert exc.value.field == "source_name"

    @pytest.mark.parametrize(
        "arn",
        [
            "arn:aws:iam::12345678901:role/short-account",
            "arn:aws:iam::123456789012:user/not-a-role",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role/wild*card",
            "arn:aws:s3:::bucket",
        ],
    )
    def test_it_checks_the_producer_role_arn_format(self, rita, arn):
        with pytest.raises(ApplicationError) as exc:
            make_request(rita, producer_role_arn=arn)
        assert exc.value.field == "producer_role_arn"

    def test_it_accepts_a_role_arn_with_a_path(self, rita):
        arn = "arn:aws:iam::123456789012:role/team/service/producer"
        assert make_request(rita, producer_role_arn=arn).producer_role_arn == arn

    def test_none_cannot_be_combined_with_another_sensitivity(self, rita):
        with pytest.raises(ApplicationError) as exc:
            make_request(rita, sensitivity=["none", "pii"])
        assert exc.value.field == "sensitivity"

    def test_it_keeps_several_sensitivities(self, rita):
        request = make_request(rita, sensitivity=["financial", "pii"])
        assert request.sensitivity == ["pii", "financial"]

    def test_an_edit_makes_a_revision_that_says_what_changed(self, rita):
        request = make_request(rita)
        services.request_update(request=request, actor=rita, data={"owner_team": "checkout"})
        revision = RequestRevision.objects.get(request=request, number=2)
        assert revision.edited_by == rita
        assert "owner team" in revision.summary
        assert _events(request) == ["onboarding.request_created", "onboarding.request_updated"]

    def test_saving_without_a_change_makes_no_revision(self, rita):
        request = make_request(rita)
        services.request_update(request=request, actor=rita, data=complete_spec())
        request.refresh_from_db()
        assert request.revision == 1
        assert _events(request) == ["onboarding.request_created"]

    def test_someone_elses_requester_cannot_edit(self, rita, personas):
        request = make_request(rita)
        with pytest.raises(PermissionDenied):
            services.request_update(
                request=request, actor=personas["rex"], data={"owner_team": "x"}
            )


class PrerequisitesTests:
    def _by_key(self, spec: dict[str, Any], samples: int = 10) -> dict[str, Any]:
        prerequisites = services.request_prerequisites(spec=spec, sample_count=samples)
        return {p.key: p for p in prerequisites}

    def _spec(self, **overrides: Any) -> dict[str, Any]:
        return {**complete_spec(), **overrides}

    def test_a_complete_request_meets_every_prerequisite(self):
        assert all(p.done for p in self._by_key(self._spec()).values())

    def test_it_lists_the_runbooks_four_prerequisites(self):
        labels = [p.label for p in services.request_prerequisites(spec={}, sample_count=0)]
        assert labels == [
            "Data source specification document (format, schema, volume, frequency)",
            "Sample data files (at least 10 representative samples)",
            "Business justification and downstream consumers identified",
            "Retention requirements defined (compliance, GDPR, etc.)",
        ]

    @pytest.mark.parametrize(
        ("field", "empty", "key"),
        [
            ("data_format", "", "spec"),
            ("schema_text", "", "spec"),
            ("files_per_day", None, "spec"),
            ("average_file_size_kb", None, "spec"),
            ("frequency", "", "spec"),
            ("latency_sla", "", "spec"),
            ("sensitivity", [], "spec"),
            ("owner_team", "", "spec"),
            ("producer_role_arn", "", "spec"),
            ("business_justification", "", "justification"),
            ("downstream_consumers", "", "justification"),
            ("retention_days", None, "retention"),
            ("retention_legal_basis", "", "retention"),
        ],
    )
    def test_each_missing_field_fails_its_prerequisite(self, field, empty, key):
        result = self._by_key(self._spec(**{field: empty}))
        assert not result[key].done
        assert services.SPEC_FIELDS[field] in result[key].missing
        assert all(p.done for k, p in result.items() if k != key)

    def test_an_invalid_schema_fails_the_spec_prerequisite(self):
        result = self._by_key(self._spec(schema_text='{"type": "no-such-type"}'))
        assert not result["spec"].done

    def test_nine_samples_are_not_enough(self):
        result = self._by_key(self._spec(), samples=9)
        assert not result["samples"].done
        assert result["samples"].missing == ("1 more sample file(s)",)


class SubmitTests:
    def test_it_submits_a_ready_request(self, rita, django_capture_on_commit_callbacks):
        request = ready_request(rita)
        with django_capture_on_commit_callbacks(execute=True):
            services.request_submit(request=request, actor=rita)
        request.refresh_from_db()
        assert request.status == RequestStatus.SUBMITTED
        assert request.submitted_at is not None
        assert _events(request)[-1] == "onboarding.request_submitted"

    @pytest.mark.parametrize(
        ("field", "empty"),
        [
            ("description", ""),
            ("owner_team", ""),
            ("business_justification", ""),
            ("downstream_consumers", ""),
            ("retention_days", None),
            ("retention_legal_basis", ""),
            ("producer_role_arn", ""),
            ("sensitivity", []),
        ],
    )
    def test_each_missing_prerequisite_blocks_submit(self, rita, field, empty):
        request = ready_request(rita)
        services.request_update(request=request, actor=rita, data={field: empty})
        with pytest.raises(ApplicationError, match="Not ready to submit"):
            services.request_submit(request=request, actor=rita)
        request.refresh_from_db()
        assert request.status == RequestStatus.DRAFT

    def test_fewer_than_ten_samples_block_submit(self, rita):
        request = make_request(rita)
        add_samples(request, rita, valid=8, malformed=1)
        validate(request, rita)
        with pytest.raises(ApplicationError, match="1 more sample"):
            services.request_submit(request=request, actor=rita)

    def test_submit_needs_a_validation_of_the_current_revision(self, rita):
        request = make_request(rita)
        add_samples(request, rita)
        with pytest.raises(ApplicationError, match="need validating"):
            services.request_submit(request=request, actor=rita)

    def test_a_failing_validation_blocks_submit(self, rita):
        request = make_request(rita)
        add_samples(request, rita, valid=10, malformed=0)
        services.sample_upload(
            request=request, actor=rita, files=[upload("sneaky.ndjson", malformed_ndjson(99))]
        )
        run = validate(request, rita)
        assert run.status == "failed"
        with pytest.raises(ApplicationError, match="do not behave as marked"):
            services.request_submit(request=request, actor=rita)

    def test_a_schema_change_after_validation_blocks_submit(self, rita):
        request = ready_request(rita)
        relaxed = {**SCHEMA, "required": ["id"]}
        services.request_update(
            request=request, actor=rita, data={"schema_text": json.dumps(relaxed)}
        )
        with pytest.raises(ApplicationError, match="need validating"):
            services.request_submit(request=request, actor=rita)

    def test_an_unrelated_edit_keeps_the_validation(self, rita):
        request = ready_request(rita)
        services.request_update(request=request, actor=rita, data={"owner_team": "checkout"})
        services.request_submit(request=request, actor=rita)
        request.refresh_from_db()
        assert request.status == RequestStatus.SUBMITTED

    def test_only_the_requester_submits(self, rita, personas):
        request = ready_request(rita)
        for other in ("erin", "rex", "sam"):
            with pytest.raises(PermissionDenied):
                services.request_submit(request=request, actor=personas[other])

    def test_a_submitted_request_cannot_be_edited(self, rita):
        request = submitted_request(rita)
        with pytest.raises(ApplicationError, match="can be changed only"):
            services.request_update(request=request, actor=rita, data={"owner_team": "x"})
