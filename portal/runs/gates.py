"""Steps every run kind may use.

``runs.confirm`` is a gate: the run waits, freeing its worker, until a second person — one
who may operate runs of this kind and did not start this one — confirms it on the run page
(`portal.runs.services.run_confirm_step`), which wakes the run.
"""

from __future__ import annotations

from typing import Any

from portal.runs.engine import StepContext
from portal.runs.models import Confirmation
from portal.runs.registry import Done, PlannedStep, Wait, step

CONFIRM_STEP = "runs.confirm"


def confirmation_step(what: str, *, who: str = "person") -> PlannedStep:
    """A planned gate: `what` names the action being confirmed, e.g. "provisioning in prod",
    `who` the kind of person who must confirm it, e.g. "engineer"."""
    return PlannedStep(CONFIRM_STEP, title=f"A second {who} confirms {what}", params={"what": what})


@step(CONFIRM_STEP, title="A second person confirms")
def confirm_step(ctx: StepContext) -> Done | Wait:
    found: Any = (
        Confirmation.objects.filter(step_id=ctx.step.pk).select_related("confirmed_by").first()
    )
    if found is None:
        return Wait(
            reason="for a second person to confirm (not the one who started the run)",
        )
    who = found.confirmed_by.get_username()
    ctx.log("info", f"confirmed by {who} at {found.created_at:%Y-%m-%d %H:%M:%S} UTC")
    return Done({"confirmed_by": who, "confirmed_at": found.created_at.isoformat()})
