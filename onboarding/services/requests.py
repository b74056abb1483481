"""Services of the request itself: create, edit, infer the schema, submit, and the runs
that validate its samples and compare its plan with AWS.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import ExitStack
from typing import Any, cast

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Field, Max
from django.utils import timezone

from onboarding import notifications
from onboarding.kinds import plan_diff, validate_samples
from onboarding.models import (
    ApprovalRole,
    OnboardingRequest,
    RequestRevision,
    RequestStatus,
    Sensitivity,
)
from onboarding.request_state import request_blockers, request_current_digest
from onboarding.rules import SPEC_FIELDS, environment_plans, sample_limits, spec_snapshot
from onboarding.selectors import latest_run, may_compare, request_live_approvals
from onboarding.services.revisions import (
    locked_request,
    new_revision,
    require_editable,
    require_editor,
    revise,
)
from onboarding.validation import infer_schema
from portal.audit import audit_record
from portal.errors import ApplicationError
from portal.models import Environment
from portal.roles import Role, require_role
from portal.runs.api import ACTIVE_RUN_STATUSES, Run, run_start


def _apply_spec(request: OnboardingRequest, data: Mapping[str, Any]) -> list[str]:
    """Set the spec fields in `data` on `request`; return the labels of those that changed."""
    unknown = set(data) - set(SPEC_FIELDS)
    if unknown:
        raise ApplicationError(f"Unknown field(s): {', '.join(sorted(unknown))}.")
    before = spec_snapshot(request)
    for name, value in data.items():
        if name == "sensitivity":
            chosen = {str(v) for v in value or ()}
            if chosen - set(Sensitivity.values):
                raise ApplicationError("Unknown sensitivity.", field="sensitivity")
            if Sensitivity.NONE in chosen and len(chosen) > 1:
                raise ApplicationError(
                    "“None” cannot be combined with another sensitivity.", field="sensitivity"
                )
            for choice in Sensitivity:
                setattr(request, f"sensitivity_{choice.value}", choice.value in chosen)
        else:
            field_obj = cast(Field, OnboardingRequest._meta.get_field(name))  # a spec field
            if value is None and not field_obj.null:
                value = field_obj.get_default()
            setattr(request, name, value.strip() if isinstance(value, str) else value)
    after = spec_snapshot(request)
    return [label for name, label in SPEC_FIELDS.items() if before[name] != after[name]]


def _clean_request(request: OnboardingRequest) -> None:
    """Field formats and constraints, as ApplicationError on the first offending field."""
    if request.source_name:
        other = (
            OnboardingRequest.objects.exclude(pk=request.pk)
            .filter(source_name=request.source_name)
            .first()
        )
        if other is not None:
            raise ApplicationError(
                f"{other.key} already uses the source name {request.source_name}.",
                field="source_name",
            )
    try:
        request.full_clean(exclude=["number", "requested_by"])
    except ValidationError as exc:
        field_name, messages = next(iter(exc.message_dict.items()))
        raise ApplicationError(
            messages[0], field=None if field_name == "__all__" else field_name
        ) from None


# --- The request -----------------------------------------------------------------------------


def request_create(*, actor: Any, data: Mapping[str, Any]) -> OnboardingRequest:
    """A new draft, keyed DATA-<n>. Anything may still be missing."""
    require_role(actor, Role.REQUESTER)
    for _attempt in range(5):
        try:
            with transaction.atomic():
                return _request_create(actor=actor, data=data)
        except IntegrityError as exc:
            # Two requests took the same number at once: take the next one. A taken source
            # name is caught by full_clean before the insert.
            if "number" not in str(exc):
                raise
    raise ApplicationError("Could not allocate a request number; try again.")


def _request_create(*, actor: Any, data: Mapping[str, Any]) -> OnboardingRequest:
    last = OnboardingRequest.objects.aggregate(last=Max("number"))["last"] or 0
    request = OnboardingRequest(number=last + 1, requested_by=actor)
    _apply_spec(request, data)
    _clean_request(request)
    request.save()
    RequestRevision.objects.create(
        request=request,
        number=1,
        digest=request_current_digest(request),
        edited_by=actor,
        summary="Created the request.",
    )
    audit_record(
        action="onboarding.request_created",
        actor=actor,
        obj=request,
        data={"key": request.key, "source_name": request.source_name},
    )
    return request


def request_update(
    *, request: OnboardingRequest, actor: Any, data: Mapping[str, Any]
) -> OnboardingRequest:
    """Save spec fields. Any change makes a new revision and voids its approvals; saving
    without a change does nothing."""
    require_editor(actor, request)
    with transaction.atomic():
        request = locked_request(request)
        require_editable(request)
        changed = _apply_spec(request, data)
        if not changed:
            return request
        _clean_request(request)
        request.save()
        revision, voided = new_revision(
            request, actor=actor, summary=f"Changed {', '.join(changed)}."
        )
        audit_record(
            action="onboarding.request_updated",
            actor=actor,
            obj=request,
            data={
                "revision": revision.number,
                "changed": changed,
                "voided_approvals": [a.pk for a in voided],
            },
        )
    return request


def request_infer_schema(*, request: OnboardingRequest, actor: Any) -> OnboardingRequest:
    """Fill the empty schema with one inferred from the samples not marked malformed, for
    the requester to edit."""
    require_editor(actor, request)
    with transaction.atomic():
        request = locked_request(request)
        require_editable(request)
        if request.schema_text.strip():
            raise ApplicationError(
                "This request already has a schema; edit it instead.", field="schema_text"
            )
        samples = list(request.samples.filter(expected_malformed=False).order_by("pk"))
        if not samples:
            raise ApplicationError(
                "Upload sample files (not marked malformed) to infer a schema from."
            )
        with ExitStack() as stack:
            streams = [stack.enter_context(sample.file.open("rb")) for sample in samples]
            try:
                schema = infer_schema(streams, limits=sample_limits())
            except ValueError as exc:
                raise ApplicationError(f"No schema could be inferred: {exc}") from None
        request.schema_text = json.dumps(schema, indent=2, sort_keys=False) + "\n"
        request.save(update_fields=["schema_text", "updated_at"])
        revise(
            request,
            actor=actor,
            summary=f"Inferred the schema from {len(samples)} sample(s).",
            action="onboarding.schema_inferred",
            data={"samples": [s.pk for s in samples]},
        )
    return request


def request_submit(*, request: OnboardingRequest, actor: Any) -> OnboardingRequest:
    """Send the request to the approvers: every prerequisite must hold and every sample of
    the current revision must behave as marked."""
    require_role(actor, Role.REQUESTER)
    if request.requested_by_id != actor.pk:
        raise PermissionDenied("Only the requester can submit this request.")
    with transaction.atomic():
        request = locked_request(request)
        require_editable(request)
        blockers = request_blockers(request)
        if blockers:
            raise ApplicationError("Not ready to submit. " + " ".join(f"{b}." for b in blockers))
        resubmitted = request.status == RequestStatus.CHANGES_REQUESTED
        request.status = RequestStatus.SUBMITTED
        request.submitted_at = timezone.now()
        request.save(update_fields=["status", "submitted_at", "updated_at"])
        audit_record(
            action="onboarding.request_submitted",
            actor=actor,
            obj=request,
            data={"revision": request.revision, "resubmitted": resubmitted},
        )
        missing = [
            role
            for role in ApprovalRole
            if role not in {a.role for a in request_live_approvals(request)}
        ]
        transaction.on_commit(lambda: notifications.submitted(request, missing))
    return request


# --- Runs ------------------------------------------------------------------------------------


def request_validate(*, request: OnboardingRequest, actor: Any) -> Run:
    """Start the validation run: the schema, then every sample, then the summary."""
    require_editor(actor, request)
    with transaction.atomic():
        request = locked_request(request)
        require_editable(request)
        if not request.schema_text.strip():
            raise ApplicationError("Add a schema first (or infer one from the samples).")
        if not request.data_format:
            raise ApplicationError("Choose the data format first.")
        if not request.samples.exists():
            raise ApplicationError("Upload sample files first.")
        running = latest_run(request, validate_samples)
        if running is not None and running.status in ACTIVE_RUN_STATUSES:
            raise ApplicationError("A validation of this request is already running.")
        return run_start(
            kind=validate_samples,
            actor=actor,
            params={"request_id": request.pk, "revision": request.revision},
            subject=request,
            title=f"Validate samples: {request.key}",
        )


def plan_compare_start(*, request: OnboardingRequest, actor: Any, environment: str = "") -> Run:
    """Start a run that reads each environment's resources from AWS and diffs them with
    the plan (one step per environment)."""
    if not may_compare(actor):
        raise PermissionDenied("Comparing with AWS needs an engineer or an approver.")
    names = list(Environment.objects.values_list("name", flat=True))
    if environment:
        if environment not in names:
            raise ApplicationError(f"There is no environment called {environment!r}.")
        names = [environment]
    if not names:
        raise ApplicationError("No environments are configured.")
    plans = environment_plans(
        spec=spec_snapshot(request), environments=Environment.objects.filter(name__in=names)
    )
    unplanned = [p for p in plans if p.plan is None]
    if unplanned:
        raise ApplicationError(f"There is no plan to compare yet: {unplanned[0].error}")
    label = environment or "all environments"
    return run_start(
        kind=plan_diff,
        actor=actor,
        params={"request_id": request.pk, "environments": names},
        subject=request,
        title=f"Compare plan with AWS: {request.key} ({label})",
    )
