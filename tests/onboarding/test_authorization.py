"""Who may do what to a request, through the views: every persona against every action,
on a request of rita's (a plain requester) and one of rex's (requester and security
approver). The allowed set must be exact: every other attempt is a 403 or 404 and
changes nothing — 0 unexpected successes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.urls import reverse

from onboarding.models import Approval, OnboardingRequest, RequestStatus
from portal.runs.models import Run
from tests.onboarding.test_requests import (
    add_samples,
    complete_spec,
    environment_rows_fixture,  # noqa: F401 - fixture
    make_request,
    media_fixture,  # noqa: F401 - fixture
    ready_request,
    submitted_request,
    upload,
    valid_ndjson,
)
from tests.personas import PERSONAS

EVERYONE = set(PERSONAS)
ROLED = EVERYONE - {"nobody"}
ENGINEERS = {"erin", "eddie"}
COMPARERS = {"sam", "gina", "rex", "bo", *ENGINEERS}


def form_data(**overrides: Any) -> dict[str, Any]:
    data = {k: ("" if v is None else v) for k, v in complete_spec(**overrides).items()}
    return data


@dataclass
class Action:
    """How to put a request in the state the action needs, do it, and see that it happened."""

    setup: Callable[[Any], Any]
    perform: Callable[[Any, Any, str], Any]
    happened: Callable[[Any, Any], bool]


def _url(name: str, request: OnboardingRequest, *args: Any) -> str:
    return reverse(f"onboarding:{name}", args=[request.number, *args])


def _draft_with_samples(owner: Any) -> OnboardingRequest:
    request = make_request(owner)
    add_samples(request, owner, valid=2, malformed=0)
    return request


def _without_schema(owner: Any) -> OnboardingRequest:
    request = make_request(owner, schema_text="")
    add_samples(request, owner, valid=2, malformed=0)
    return request


def _approver_role(persona: str) -> str:
    return "governance" if persona in ("gina",) else "security"


def _approved(owner: Any) -> OnboardingRequest:
    from django.contrib.auth.models import User

    from onboarding import services

    request = submitted_request(owner)
    for username, role in (("sam", "security"), ("gina", "governance")):
        services.approval_grant(
            request=request, actor=User.objects.get(username=username), role=role
        )
    request.refresh_from_db()
    return request


def _status(request: OnboardingRequest) -> str:
    request.refresh_from_db()
    return request.status


ACTIONS: dict[str, Action] = {
    "view": Action(
        setup=make_request,
        perform=lambda client, r, who: client.get(_url("request-detail", r)),
        happened=lambda r, response: response.status_code == 200,
    ),
    "create": Action(
        setup=lambda owner: OnboardingRequest.objects.count(),
        perform=lambda client, before, who: client.post(
            reverse("onboarding:request-create"), form_data(source_name=f"new-{who}")
        ),
        happened=lambda before, response: OnboardingRequest.objects.count() == before + 1,
    ),
    "edit": Action(
        setup=make_request,
        perform=lambda client, r, who: client.post(
            _url("request-edit", r), form_data(owner_team="edited-team")
        ),
        happened=lambda r, response: (
            OnboardingRequest.objects.get(pk=r.pk).owner_team == "edited-team"
        ),
    ),
    "upload": Action(
        setup=make_request,
        perform=lambda client, r, who: client.post(
            _url("sample-upload", r), {"files": [upload("extra.ndjson", valid_ndjson(42))]}
        ),
        happened=lambda r, response: r.samples.filter(original_name="extra.ndjson").exists(),
    ),
    "delete sample": Action(
        setup=_draft_with_samples,
        perform=lambda client, r, who: client.post(
            _url("sample-delete", r, r.samples.order_by("pk").first().pk)
        ),
        happened=lambda r, response: r.samples.count() == 1,
    ),
    "mark sample": Action(
        setup=_draft_with_samples,
        perform=lambda client, r, who: client.post(
            _url("sample-mark", r, r.samples.order_by("pk").first().pk), {"expected_malformed": "1"}
        ),
        happened=lambda r, response: r.samples.filter(expected_malformed=True).exists(),
    ),
    "validate": Action(
        setup=_draft_with_samples,
        perform=lambda client, r, who: client.post(_url("request-validate", r)),
        happened=lambda r, response: Run.objects.filter(kind="onboarding.validate").exists(),
    ),
    "infer schema": Action(
        setup=_without_schema,
        perform=lambda client, r, who: client.post(_url("schema-infer", r)),
        happened=lambda r, response: bool(OnboardingRequest.objects.get(pk=r.pk).schema_text),
    ),
    "submit": Action(
        setup=ready_request,
        perform=lambda client, r, who: client.post(_url("request-submit", r)),
        happened=lambda r, response: _status(r) == RequestStatus.SUBMITTED,
    ),
    "approve security": Action(
        setup=submitted_request,
        perform=lambda client, r, who: client.post(_url("approval-grant", r), {"role": "security"}),
        happened=lambda r, response: Approval.objects.filter(
            request=r, decision="approved"
        ).exists(),
    ),
    "approve governance": Action(
        setup=submitted_request,
        perform=lambda client, r, who: client.post(
            _url("approval-grant", r), {"role": "governance"}
        ),
        happened=lambda r, response: Approval.objects.filter(
            request=r, decision="approved"
        ).exists(),
    ),
    "reject": Action(
        setup=submitted_request,
        perform=lambda client, r, who: client.post(
            _url("approval-reject", r), {"role": _approver_role(who), "comment": "Not needed."}
        ),
        happened=lambda r, response: _status(r) == RequestStatus.REJECTED,
    ),
    "request changes": Action(
        setup=submitted_request,
        perform=lambda client, r, who: client.post(
            _url("approval-request-changes", r),
            {"role": _approver_role(who), "comment": "Narrow the role."},
        ),
        happened=lambda r, response: _status(r) == RequestStatus.CHANGES_REQUESTED,
    ),
    "compare plan": Action(
        setup=make_request,
        perform=lambda client, r, who: client.post(_url("plan-compare", r)),
        happened=lambda r, response: Run.objects.filter(kind="onboarding.plan_diff").exists(),
    ),
    "provision dev": Action(
        setup=_approved,
        perform=lambda client, r, who: client.post(
            _url("rollout-start", r), {"environment": "dev", "action": "provision"}
        ),
        happened=lambda r, response: Run.objects.filter(kind="onboarding.provision").exists(),
    ),
}


def expected(owner: str) -> dict[str, set[str]]:
    editors = {owner, *ENGINEERS}
    security = {"sam", "rex", "bo"} - {owner}
    governance = {"gina", "bo"} - {owner}
    return {
        "view": ROLED,
        "create": {"rita", "rex"},
        "edit": editors,
        "upload": editors,
        "delete sample": editors,
        "mark sample": editors,
        "validate": editors,
        "infer schema": editors,
        "submit": {owner},
        "approve security": security,
        "approve governance": governance,
        "reject": security | governance,
        "request changes": security | governance,
        "compare plan": COMPARERS,
        "provision dev": set(ENGINEERS),
    }


@pytest.mark.parametrize("owner", ["rita", "rex"])
@pytest.mark.parametrize("action", list(ACTIONS))
class AuthorizationMatrixTests:
    def test_it_allows_exactly_the_expected_personas(
        self, client, personas, environment_rows, owner, action
    ):
        spec = ACTIONS[action]
        allowed, unexpected = set(), []
        state, fresh = None, False
        for who in PERSONAS:
            if not fresh:  # a refused attempt changes nothing, so its state is reused
                Run.objects.all().delete()
                OnboardingRequest.objects.all().delete()
                state = spec.setup(personas[owner])
            client.force_login(personas[who])
            response = spec.perform(client, state, who)
            did_it = spec.happened(state, response)
            fresh = not did_it and action != "create"
            if did_it:
                allowed.add(who)
                if response.status_code not in (200, 302):
                    unexpected.append(f"{who}: {response.status_code} yet it happened")
            elif response.status_code not in (403, 404):
                unexpected.append(f"{who}: answered {response.status_code} and nothing happened")
            client.logout()
        assert allowed == expected(owner)[action]
        assert unexpected == []
