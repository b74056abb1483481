"""Everything a person does to a run: start, retry a step, skip a step, cancel."""

from __future__ import annotations

from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from portal.audit import audit_record
from portal.errors import ApplicationError
from portal.roles import require_role
from portal.runs.engine import _finish, enqueue_on_commit
from portal.runs.models import (
    ACTIVE_RUN_STATUSES,
    Confirmation,
    Run,
    RunStatus,
    Step,
    StepStatus,
)
from portal.runs.registry import RUN_KINDS, RunKindSpec, get_run_kind, kind_key


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
    if kind not in RUN_KINDS:
        raise ApplicationError(f"There is no run kind called {kind!r}.")
    spec = get_run_kind(kind)
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
            plan=[p.key for p in planned],
            created_by=actor if getattr(actor, "is_authenticated", False) else None,
            subject_type=ContentType.objects.get_for_model(subject) if subject else None,
            subject_id=str(subject.pk) if subject else "",
        )
        from portal.runs.registry import get_step

        Step.objects.bulk_create(
            Step(
                run=run,
                position=i,
                key=p.key,
                title=p.title or get_step(p.key).title,
                params=p.params,
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
        run = _locked(run)
        step = run.steps.filter(pk=step_id).first()
        if step is None:
            raise ApplicationError("That step is not part of this run.")
        if run.status != RunStatus.FAILED or step.status != StepStatus.FAILED:
            raise ApplicationError("Only the failed step of a failed run can be retried.")
        previous_error = step.error
        step.status = StepStatus.PENDING
        step.transient_failures = 0
        step.not_before = None
        step.error = ""
        step.save(update_fields=["status", "transient_failures", "not_before", "error"])
        run.status = RunStatus.PENDING
        run.error = ""
        run.finished_at = None
        run.save(update_fields=["status", "error", "finished_at"])
        audit_record(
            action="step.retried",
            actor=actor,
            obj=run,
            data={"step": step.key, "position": step.position, "previous_error": previous_error},
        )
        enqueue_on_commit(run.pk)
    return step


def run_skip_step(*, run: Run, step_id: int, actor: Any, reason: str) -> Step:
    """Mark a failed step as skipped, with the reason, and carry on with the next."""
    _check_operator(actor, run)
    reason = (reason or "").strip()
    if len(reason) < 5:
        raise ApplicationError(
            "Say why this step is skipped (at least 5 characters).", field="reason"
        )
    with transaction.atomic():
        run = _locked(run)
        step = run.steps.filter(pk=step_id).first()
        if step is None:
            raise ApplicationError("That step is not part of this run.")
        if run.status != RunStatus.FAILED or step.status != StepStatus.FAILED:
            raise ApplicationError("Only the failed step of a failed run can be skipped.")
        step.status = StepStatus.SKIPPED
        step.skip_reason = reason
        step.finished_at = timezone.now()
        step.save(update_fields=["status", "skip_reason", "finished_at"])
        run.status = RunStatus.PENDING
        run.error = ""
        run.finished_at = None
        run.save(update_fields=["status", "error", "finished_at"])
        audit_record(
            action="step.skipped",
            actor=actor,
            obj=run,
            data={"step": step.key, "position": step.position, "reason": reason},
        )
        enqueue_on_commit(run.pk)
    return step


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
            _finish(run, RunStatus.CANCELLED, actor=actor)
    return run


def run_wake(*, run: Run) -> None:
    """A person did what a waiting step waits for: have a worker look at it now."""
    with transaction.atomic():
        updated = Run.objects.filter(pk=run.pk, status=RunStatus.WAITING).update(
            wake_at=timezone.now()
        )
        if updated:
            enqueue_on_commit(run.pk)


def run_confirm_step(*, run: Run, step_id: int, actor: Any) -> Confirmation:
    """A second person confirms a run's `runs.confirm` gate; the run carries on. Whoever
    started the run cannot confirm it (separation of duties)."""
    from portal.runs.gates import CONFIRM_STEP

    _check_operator(actor, run)
    with transaction.atomic():
        run = _locked(run)
        step = run.steps.filter(pk=step_id, key=CONFIRM_STEP).first()
        if step is None:
            raise ApplicationError("That step is not a confirmation of this run.")
        if run.created_by_id is not None and run.created_by_id == actor.pk:
            raise ApplicationError(
                "You started this run, so someone else must confirm it (separation of duties)."
            )
        existing = Confirmation.objects.filter(step=step).select_related("confirmed_by").first()
        if existing is not None:
            raise ApplicationError(
                f"{existing.confirmed_by.get_username()} already confirmed this step."
            )
        if run.status not in ACTIVE_RUN_STATUSES or step.status not in (
            StepStatus.PENDING,
            StepStatus.WAITING,
        ):
            raise ApplicationError(
                f"This run is {run.get_status_display().lower()}; there is nothing to confirm."
            )
        try:
            with transaction.atomic():
                confirmation = Confirmation.objects.create(step=step, confirmed_by=actor)
        except IntegrityError:
            raise ApplicationError("This step was confirmed a moment ago.") from None
        audit_record(
            action="step.confirmed",
            actor=actor,
            obj=run,
            data={"step": step.key, "position": step.position, "what": step.params.get("what")},
        )
        run_wake(run=run)
    return confirmation
