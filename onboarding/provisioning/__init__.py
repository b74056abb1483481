"""Applying an approved onboarding plan to one environment, and taking it down again.

- this module: the run kinds, the plan for an environment, the approval check, helpers;
- `apply`: one idempotent `apply_*` per plan section (the provision run's steps);
- `remove`: one idempotent `remove_*` per section (the teardown run's steps);
- `drift`: what differs from the plan in AWS, and the scheduled scan.

Every `apply_*` function is idempotent: it reads the section with `onboarding.live`
(`read_section` + `diff_section`), changes only the fields that differ, and logs one
created / updated / unchanged line per thing it touches. Running it twice, or after a crash
in the middle, converges on the plan and never makes a second resource: the bucket, rule,
target, alarm and dashboard widget are found by name, the dedicated KMS key by its alias
(`portal.aws.ensure_kms_key`).

Every `remove_*` function (teardown) is idempotent too: what is already gone logs
"unchanged". Data is never deleted: the raw bucket goes only when it holds no object
version and no delete marker.

`clients(service)` returns a boto3 client for the plan's environment (in steps,
``ctx.aws``); `log(action, message)` is ``ctx.log``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import ClientError
from django.db import transaction

from onboarding.live import UNCHANGED, PlanChange, diff_section, normalise, read_section, tags_dict
from onboarding.models import Decision, OnboardingRequest, RequestStatus
from portal.aws import KMS_ALIAS_TAG
from portal.errors import ApplicationError

Clients = Callable[[str], Any]
Log = Callable[[str, str], None]

PROVISION_KIND = "onboarding.provision"
SMOKE_KIND = "onboarding.smoke_test"
DRIFT_KIND = "onboarding.drift_check"
TEARDOWN_KIND = "onboarding.teardown"
CRITERIA_KIND = "onboarding.success_criteria"


# --- the plan and the approval ----------------------------------------------------------------


def plan_for(request: OnboardingRequest, environment: Any) -> dict[str, Any]:
    """The request's plan for `environment`, built now from the request (as approved)."""
    from onboarding.services import environment_plans, spec_snapshot

    (found,) = environment_plans(spec=spec_snapshot(request), environments=[environment])
    if found.plan is None:
        raise ApplicationError(f"There is no plan for {environment.name}: {found.error}")
    return found.plan


def approval_problem(request: OnboardingRequest) -> str | None:
    """Why the request may not be applied to AWS now, or None when it may: it must be
    approved, by both live approvals, of exactly its current state (spec, samples, plans)."""
    from onboarding.services import request_current_digest

    if request.status != RequestStatus.APPROVED:
        return (
            f"{request.key} is {request.get_status_display().lower()}, not approved; "
            "only an approved request can be provisioned."
        )
    live = list(request.approvals.filter(decision=Decision.APPROVED, voided_at__isnull=True))
    roles = {approval.role for approval in live}
    if len(live) < 2 or len(roles) < 2:
        return f"{request.key} does not hold both approvals (security and governance)."
    digest = request_current_digest(request)
    if any(approval.digest != digest for approval in live):
        return (
            f"The request changed after it was approved (revision {request.revision}); "
            "it needs approving again."
        )
    return None


# --- helpers ------------------------------------------------------------------------------------


def differs(change: PlanChange) -> bool:
    """Whether applying the plan would change this field. The tag `ensure_kms_key` puts on
    a key it makes (onramp:alias) is the portal's own bookkeeping, not drift."""
    if change.action == UNCHANGED:
        return False
    if change.section == "kms" and change.field == "tags" and change.actual is not None:
        actual = {k: v for k, v in tags_dict(change.actual).items() if k != KMS_ALIAS_TAG}
        return normalise("kms", "tags", actual) != normalise("kms", "tags", change.expected)
    return True


def changed_fields(plan: dict[str, Any], live: dict[str, Any], section: str) -> dict[str, Any]:
    """{field: change} for the fields of `section` that differ from the plan."""
    return {c.field: c for c in diff_section(plan, live, section) if differs(c)}


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def live_sections(plan: dict[str, Any], clients: Clients, *sections: str) -> dict[str, Any]:
    return {section: read_section(plan, clients, section) for section in sections}


@contextmanager
def dashboard_lock(plan: dict[str, Any]) -> Iterator[None]:
    """Hold while reading, changing and writing back an environment's shared dashboard.
    CloudWatch has no conditional PutDashboard, so two runs merging their widgets at the
    same moment would each write back what they read and one widget would be lost. The
    lock is the environment's row (PostgreSQL: FOR UPDATE; SQLite: the IMMEDIATE
    transaction already holds the one write lock) for the two AWS calls."""
    from portal.models import Environment

    with transaction.atomic():
        name = plan["environment"]["name"]
        list(Environment.objects.select_for_update().filter(name=name).values_list("pk"))
        yield
