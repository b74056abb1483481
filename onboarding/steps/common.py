"""What every onboarding step starts from: the run's request, its plan for the step's
environment, the output of an earlier step of the run, and a broken rule that stops the
run instead of being retried. `section_steps` registers the provision and teardown runs'
one-step-per-plan-section tables."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from onboarding.models import OnboardingRequest
from onboarding.request_state import plan_for
from portal.errors import ApplicationError
from portal.runs.api import Done, PermanentStepError, StepContext, StepStatus, step

# The `onboarding.aws` function that does one plan section's work: (*args, clients, log).
SectionWork = Callable[..., dict[str, Any]]
# (step key, title, its work — None where the step is written out by hand)
SectionTable = Sequence[tuple[str, str, SectionWork | None]]


@contextmanager
def rule_stops_run() -> Iterator[None]:
    """A broken rule (ApplicationError) fails the run with its message: trying the same
    step again cannot succeed until a person fixes the cause."""
    try:
        yield
    except ApplicationError as exc:
        raise PermanentStepError(exc.message) from None


def step_request(ctx: StepContext) -> OnboardingRequest:
    request = OnboardingRequest.objects.filter(pk=ctx.params.get("request_id", 0)).first()
    if request is None:
        raise PermanentStepError("The onboarding request no longer exists.")
    return request


def step_plan(ctx: StepContext, request: OnboardingRequest) -> dict[str, Any]:
    """The request's plan for the step's environment, built now."""
    with rule_stops_run():
        return plan_for(request, ctx.environment())


def earlier_output(ctx: StepContext, key: str) -> dict[str, Any] | None:
    """The output of the step `key` of this run, once it succeeded (None before)."""
    return (
        ctx.run.steps.filter(key=key, status=StepStatus.SUCCEEDED)
        .values_list("output", flat=True)
        .first()
    )


def section_done(ctx: StepContext, work: SectionWork, *args: Any) -> Done:
    """Do one plan section's AWS work, `work(*args, clients, log)`, as this step."""
    with rule_stops_run():
        output = work(*args, ctx.aws, ctx.log)
    return Done({"environment": ctx.params["environment"], **output})


def section_steps(table: SectionTable, load_plan: Callable[[StepContext], dict[str, Any]]) -> None:
    """Register a step for each (key, title, work) of `table` whose work needs only the
    plan: it loads the plan with `load_plan`, then does the work on it."""
    for key, title, work in table:
        if work is not None:
            step(key, title=title)(_section_step(work, load_plan))


def _section_step(
    work: SectionWork, load_plan: Callable[[StepContext], dict[str, Any]]
) -> Callable[[StepContext], Done]:
    def run(ctx: StepContext) -> Done:
        return section_done(ctx, work, load_plan(ctx))

    return run
