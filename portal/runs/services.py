"""Everything a person does to a run: start, retry a step, skip a step, cancel, decide."""

from __future__ import annotations

from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from portal.audit import audit_record
from portal.errors import ApplicationError
from portal.roles import require_role
from portal.runs.gates import CONFIRM, CONFIRM_STEP
from portal.runs.models import (
    ACTIVE_RUN_STATUSES,
    Decision,
    Run,
    RunStatus,
    Step,
    StepStatus,
)
from portal.runs.queue import enqueue_on_commit
from portal.runs.recording import finish
from portal.runs.registry import RUN_KINDS, RunKindSpec, get_run_kind, get_step, kind_key
from portal.runs.rules import decision_blocker, decision_roles

MIN_REASON = 5
MAX_REASON = 2000


def run_start(
    *,
    kind: str | RunKindSpec,
    actor: Any,
    params: dict[str, Any] | None = None,
    subject: models.Model | None = None,
    title: str | None = None,
) -> Run:
    """Create a run with its frozen plan and enqueue it once the transaction commits."""
    kind = kind_key(kind)
    spec = get_run_kind(kind)
    if spec is None:
        raise ApplicationError(f"There is no run kind called {kind!r}.")
    require_role(actor, *spec.start_roles)
    params = dict(params or {})
    planned = list(spec.plan(params))
    if not planned:
        raise ApplicationError("This run has nothing to do.")
    with transaction.atomic():
        run = Run.objects.create(
            kind=kind,
            title=title or spec.title,
            params=params,
            plan=[p.step_key for p in planned],
            created_by=actor if getattr(actor, "is_authenticated", False) else None,
            subject_type=ContentType.objects.get_for_model(subject) if subject else None,
            subject_id=str(subject.pk) if subject else "",
        )
        Step.objects.bulk_create(
            Step(
                run=run,
                position=i,
                key=p.step_key,
                title=p.title or get_step(p.step_key).title,
                params=p.params,
                decision_spec=p.decision.spec() if p.decision else {},
            )
            for i, p in enumerate(planned)
        )
        audit_record(
            action="run.started",
            actor=actor,
            obj=run,
            data={"kind": kind, "plan": run.plan, "params": params},
        )
        enqueue_on_commit(run.pk)
    return run


def _locked(run: Run) -> Run:
    return Run.objects.select_for_update().get(pk=run.pk)


def _check_operator(actor: Any, run: Run) -> None:
    spec = RUN_KINDS.get(run.kind)
    if spec is None:
        raise ApplicationError("This run's kind is no longer known to the portal.")
    require_role(actor, *spec.operate_roles)


def run_retry_step(*, run: Run, step_id: int, actor: Any) -> Step:
    """Run a failed step again once its cause is fixed."""
    _check_operator(actor, run)
    with transaction.atomic():
        run, step = _failed_step(run, step_id, "retried")
        previous_error = step.error
        # A wait that ran out starts again with a fresh deadline.
        _update(step, status=StepStatus.PENDING, transient_failures=0, not_before=None)
        _update(step, deadline_at=None, error="")
        _resume(run, step, actor, "step.retried", previous_error=previous_error)
    return step


def run_skip_step(*, run: Run, step_id: int, actor: Any, reason: str) -> Step:
    """Mark a failed step as skipped, with the reason, and carry on with the next."""
    _check_operator(actor, run)
    reason = (reason or "").strip()
    if len(reason) < MIN_REASON:
        raise ApplicationError(
            f"Say why this step is skipped (at least {MIN_REASON} characters).", field="reason"
        )
    with transaction.atomic():
        run, step = _failed_step(run, step_id, "skipped")
        _update(step, status=StepStatus.SKIPPED, skip_reason=reason, finished_at=timezone.now())
        _resume(run, step, actor, "step.skipped", reason=reason)
    return step


def _failed_step(run: Run, step_id: int, verb: str) -> tuple[Run, Step]:
    """The run, locked, and its failed step: only that step of a failed run can be retried
    or skipped."""
    run = _locked(run)
    step = run.steps.filter(pk=step_id).first()
    if step is None:
        raise ApplicationError("That step is not part of this run.")
    if run.status != RunStatus.FAILED or step.status != StepStatus.FAILED:
        raise ApplicationError(f"Only the failed step of a failed run can be {verb}.")
    return run, step


def _resume(run: Run, step: Step, actor: Any, action: str, **data: Any) -> None:
    """A person dealt with the failed step: the run is pending again and a worker told."""
    _update(run, status=RunStatus.PENDING, error="", finished_at=None)
    _audit_step(run, step, actor, action, **data)
    enqueue_on_commit(run.pk)


def _update(obj: Run | Step, **values: Any) -> None:
    for name, value in values.items():
        setattr(obj, name, value)
    obj.save(update_fields=list(values))


def _audit_step(run: Run, step: Step, actor: Any, action: str, **data: Any) -> None:
    audit_record(
        action=action,
        actor=actor,
        obj=run,
        data={"step": step.key, "position": step.position, **data},
    )


def run_cancel(*, run: Run, actor: Any) -> Run:
    """Cancel now if no worker holds the run; otherwise ask the engine to stop after the
    current step (cancel is honoured between steps, never in the middle of one)."""
    _check_operator(actor, run)
    with transaction.atomic():
        run = _locked(run)
        if run.status not in (*ACTIVE_RUN_STATUSES, RunStatus.FAILED):
            raise ApplicationError(f"This run is already {run.get_status_display().lower()}.")
        leased = (
            bool(run.lease_owner) and run.lease_expires_at and run.lease_expires_at > timezone.now()
        )
        if leased:
            if run.cancel_requested:
                raise ApplicationError(
                    "Cancelling was already asked for; it happens after the current step."
                )
            run.cancel_requested = True
            run.save(update_fields=["cancel_requested"])
            audit_record(
                action="run.cancel_requested", actor=actor, obj=run, data={"kind": run.kind}
            )
        else:
            run.cancel_requested = True
            run.save(update_fields=["cancel_requested"])
            finish(run, RunStatus.CANCELLED, actor=actor)
    return run


def run_wake(*, run: Run) -> None:
    """A person did what a waiting step waits for: have a worker look at it now."""
    with transaction.atomic():
        updated = Run.objects.filter(pk=run.pk, status=RunStatus.WAITING).update(
            wake_at=timezone.now()
        )
        if updated:
            enqueue_on_commit(run.pk)


def run_decide(*, run: Run, step_id: int, actor: Any, choice: str, reason: str = "") -> Decision:
    """Make the choice a step's decision waits for; the run carries on. Exactly one choice
    is ever recorded per step: the run row is locked, and a unique constraint settles a race."""
    reason = (reason or "").strip()
    with transaction.atomic():
        run = _locked(run)
        step = run.steps.filter(pk=step_id).first()
        if step is None:
            raise ApplicationError("That step is not part of this run.")
        require_role(actor, *decision_roles(run, step))
        existing = Decision.objects.filter(step=step).select_related("chosen_by").first()
        if existing is not None:
            raise ApplicationError(_already(step, existing))
        blocker = decision_blocker(run, step, actor)
        if blocker:
            raise ApplicationError(blocker)
        if choice not in {c["key"] for c in step.decision_spec["choices"]}:
            raise ApplicationError("That is not one of this decision's choices.", field="choice")
        if step.decision_spec.get("reason_required") and len(reason) < MIN_REASON:
            raise ApplicationError(f"Say why (at least {MIN_REASON} characters).", field="reason")
        if len(reason) > MAX_REASON:
            raise ApplicationError(
                f"Keep the reason under {MAX_REASON} characters.", field="reason"
            )
        try:
            with transaction.atomic():
                decision = Decision.objects.create(
                    step=step, choice=choice, chosen_by=actor, reason=reason
                )
        except IntegrityError:
            raise ApplicationError("Someone decided this a moment ago.") from None
        what = step.params.get("what", "")
        _audit_step(run, step, actor, "step.decided", choice=choice, reason=reason, what=what)
        run_wake(run=run)
    return decision


def _already(step: Step, decision: Decision) -> str:
    choices = step.decision_spec.get("choices", [])
    if len(choices) == 1:
        return f"{decision.chooser_name} already {step.decision_spec['action']}ed this step."
    label = {c["key"]: c["label"] for c in choices}.get(decision.choice, decision.choice)
    return f"{decision.chooser_name} already chose “{label}”."


def run_confirm_step(*, run: Run, step_id: int, actor: Any) -> Decision:
    """A second person confirms a run's confirmation gate (`confirmation_step`): a decision
    with one choice that whoever started the run cannot make (separation of duties)."""
    if not run.steps.filter(pk=step_id, key=CONFIRM_STEP).exists():
        raise ApplicationError("That step is not a confirmation of this run.")
    return run_decide(run=run, step_id=step_id, actor=actor, choice=CONFIRM)
