"""Steps every run kind may use.

`confirmation_step` plans a gate: a decision with one choice, "confirm", that someone who
may operate runs of this kind — and did not start this one — makes on the run page
(`run_confirm_step`, or `run_decide`). The run waits without holding a worker until then.
"""

from __future__ import annotations

from portal.runs.context import StepContext
from portal.runs.outcomes import Choice, Decide, Done
from portal.runs.registry import PlannedStep, step

CONFIRM_STEP = "runs.confirm"
CONFIRM = "confirm"


def _gate(what: str) -> Decide:
    return Decide(
        prompt=f"Confirm {what}",
        choices=[Choice(CONFIRM, f"Confirm {what}", style="primary")],
        not_starter=True,
        action="confirm",
    )


def confirmation_step(what: str, *, who: str = "person") -> PlannedStep:
    """A planned gate: `what` names the action being confirmed, e.g. "provisioning in prod",
    `who` the kind of person who must confirm it, e.g. "engineer"."""
    return PlannedStep(
        CONFIRM_STEP,
        title=f"A second {who} confirms {what}",
        params={"what": what},
        decision=_gate(what),
    )


@step(CONFIRM_STEP, title="A second person confirms")
def confirm_step(ctx: StepContext) -> Done | Decide:
    chosen = ctx.decision
    if chosen is None:
        return _gate(ctx.params.get("what", "this run"))
    ctx.log("info", f"confirmed by {chosen.by} at {chosen.at:%Y-%m-%d %H:%M:%S} UTC")
    return Done({"confirmed_by": chosen.by, "confirmed_at": chosen.at.isoformat()})
