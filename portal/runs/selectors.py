"""Reads of runs that several pages share."""

from __future__ import annotations

from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db.models import Count, Model, Q, QuerySet
from django.utils.dateparse import parse_datetime

from portal.roles import has_role
from portal.runs.models import (
    ACTIVE_RUN_STATUSES,
    DONE_STEP_STATUSES,
    Decision,
    Run,
    RunStatus,
    Step,
    StepStatus,
)
from portal.runs.registry import RUN_KINDS, RunKindSpec, kind_key, step_key
from portal.runs.rules import decision_blocker


def run_list(*, kind: str = "", status: str = "", limit: int = 50) -> QuerySet[Run]:
    """Recent runs with their step counts, newest first, in a constant number of queries."""
    runs = Run.objects.select_related("created_by").annotate(
        step_count=Count("steps"),
        done_count=Count("steps", filter=Q(steps__status__in=DONE_STEP_STATUSES)),
    )
    if kind:
        runs = runs.filter(kind=kind)
    if status:
        runs = runs.filter(status=status)
    return runs.order_by("-created_at", "-id")[:limit]


def runs_of(subject: Model, *kinds: str | RunKindSpec) -> QuerySet[Run]:
    """The runs that act on `subject` (a request, release, rotation, review), optionally of
    the given kinds, oldest first."""
    runs = Run.objects.filter(
        subject_type=ContentType.objects.get_for_model(subject), subject_id=str(subject.pk)
    )
    if kinds:
        runs = runs.filter(kind__in=[kind_key(k) for k in kinds])
    return runs.order_by("created_at", "pk")


def run_percent(run: Run, steps: list[Step] | None = None) -> int:
    if steps is not None:
        total = len(steps)
        done = sum(1 for s in steps if s.status in DONE_STEP_STATUSES)
    else:
        total = getattr(run, "step_count", None) or run.steps.count()
        annotated: int | None = getattr(run, "done_count", None)
        done = (
            annotated
            if annotated is not None
            else run.steps.filter(status__in=DONE_STEP_STATUSES).count()
        )
    if run.status == RunStatus.SUCCEEDED:
        return 100
    return int(100 * done / total) if total else 0


def run_permissions(run: Run, user: Any) -> dict[str, bool]:
    """Which buttons this user may press on this run, right now."""
    spec = RUN_KINDS.get(run.kind)
    may_operate = spec is not None and has_role(user, *spec.operate_roles)
    return {
        "retry": may_operate and run.status == RunStatus.FAILED,
        "skip": may_operate and run.status == RunStatus.FAILED,
        "cancel": may_operate
        and (run.status in ACTIVE_RUN_STATUSES or run.status == RunStatus.FAILED)
        and not run.cancel_requested,
    }


def run_steps(run: Run, user: Any) -> list[Step]:
    """The run's steps for its page, each with its decision: `made` (the Decision, or None),
    `open` (a choice is still to be made) and `blocker` (why this user may not make it, or
    "" if they may). Two queries whatever the number of steps."""
    steps = list(run.steps.order_by("position"))
    made = {
        d.step_id: d for d in Decision.objects.filter(step__run=run).select_related("chosen_by")
    }
    for step in steps:
        step.made = made.get(step.pk)  # type: ignore[attr-defined]
        labels = {c["key"]: c["label"] for c in step.decision_spec.get("choices", [])}
        step.made_label = labels.get(step.made.choice, step.made.choice) if step.made else ""  # type: ignore[attr-defined]
        step.open = bool(step.decision_spec) and step.made is None and not run.is_terminal  # type: ignore[attr-defined]
        step.blocker = decision_blocker(run, step, user) if step.open else ""  # type: ignore[attr-defined]
        decide_by = step.decision_spec.get("decide_by")
        step.decide_by = parse_datetime(decide_by) if decide_by else None  # type: ignore[attr-defined]
    return steps


def run_kind_choices() -> list[tuple[str, str]]:
    return sorted(((k, spec.title) for k, spec in RUN_KINDS.items()), key=lambda kv: kv[1])


def step_results(subject: Model, kind: str | RunKindSpec, step: Any) -> QuerySet[Step]:
    """The succeeded executions of one step (its key or function) in the runs of one kind
    on `subject`, oldest first, each with its run: `.params`, `.output`, `.finished_at`."""
    key = step if isinstance(step, str) else step_key(step)
    return (
        Step.objects.filter(
            key=key,
            status=StepStatus.SUCCEEDED,
            run__kind=kind_key(kind),
            run__subject_type=ContentType.objects.get_for_model(subject),
            run__subject_id=str(subject.pk),
        )
        .select_related("run")
        .order_by("finished_at", "pk")
    )
