"""The run engine's public face: everything an app needs, and the only module of
`portal.runs` an app imports (an import contract checks it).

Declaring work
    ``@step(key, title=...)`` registers a step function ``(ctx: StepContext) -> outcome``;
    ``@run_kind(key, title=..., start_roles=...)`` on a plan function ``(params) ->
    [PlannedStep]`` declares a kind. Each app declares its kinds in ``<app>/kinds.py``,
    imported once by the engine's autodiscovery; the decorated name *is* the kind, passed
    to `run_start` and `runs_of`, so its key is written once.

Outcomes a step returns (or raises)
    `Done(output)`; `Wait(...)` to be looked at again later, with output for this tick and
    a deadline; `Decide(...)` to stop at a decision people make on the run page;
    `TransientStepError` (retried with backoff) and `PermanentStepError` (the run fails,
    a person retries or skips). AWS errors are classified by `portal.aws.describe_error`.

Acting on runs (services: each checks the actor's role and writes one audit event)
    `run_start`, `run_cancel`, `run_retry_step`, `run_skip_step`, `run_decide`,
    `run_confirm_step`, `run_wake`.

Reading runs (what a page shows)
    `Run`, `RunStatus`, `StepStatus`, `runs_of`, `run_list`, `run_percent`,
    `run_permissions`, `step_results`, `worker_stall` (work waiting that no worker takes).
"""

from portal.runs.context import Chosen, StepContext
from portal.runs.gates import CONFIRM_STEP, confirmation_step
from portal.runs.models import (
    ACTIVE_RUN_STATUSES,
    DONE_STEP_STATUSES,
    TERMINAL_RUN_STATUSES,
    Run,
    RunStatus,
    Step,
    StepStatus,
)
from portal.runs.outcomes import (
    Choice,
    Decide,
    Done,
    PermanentStepError,
    TransientStepError,
    Wait,
)
from portal.runs.registry import PlannedStep, RunKindSpec, run_kind, step
from portal.runs.rules import decision_blocker
from portal.runs.selectors import (
    run_kind_choices,
    run_list,
    run_percent,
    run_permissions,
    runs_of,
    step_results,
)
from portal.runs.services import (
    run_cancel,
    run_confirm_step,
    run_decide,
    run_retry_step,
    run_skip_step,
    run_start,
    run_wake,
)
from portal.runs.watchdog import Stall, worker_stall

RunKind = RunKindSpec

__all__ = [
    "ACTIVE_RUN_STATUSES",
    "CONFIRM_STEP",
    "DONE_STEP_STATUSES",
    "TERMINAL_RUN_STATUSES",
    "Choice",
    "Chosen",
    "Decide",
    "Done",
    "PermanentStepError",
    "PlannedStep",
    "Run",
    "RunKind",
    "RunStatus",
    "Stall",
    "Step",
    "StepContext",
    "StepStatus",
    "TransientStepError",
    "Wait",
    "confirmation_step",
    "decision_blocker",
    "run_cancel",
    "run_confirm_step",
    "run_decide",
    "run_kind",
    "run_kind_choices",
    "run_list",
    "run_percent",
    "run_permissions",
    "run_retry_step",
    "run_skip_step",
    "run_start",
    "run_wake",
    "runs_of",
    "step",
    "step_results",
    "worker_stall",
]
