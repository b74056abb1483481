"""Proof that the engine's public face is enough: tests/shape_app declares a kind with a
transient AWS error, a wait with output and a deadline, and a decision, importing nothing
of `portal.runs` but `portal.runs.api`, and it runs on a real worker."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.urls import reverse

import tests.shape_app.kinds  # noqa: F401 - registers the shape test kind
from portal.models import AuditEvent
from portal.runs.api import RunStatus, StepStatus, run_start
from tests.personas import make_persona
from tests.runs.test_engine_workers import wait_run
from tests.workers import ROOT, wait_for

SHAPE_APP = ROOT / "tests" / "shape_app"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_shape_app_imports_only_the_public_face_of_the_engine():
    engine_imports = {
        module
        for path in SHAPE_APP.glob("*.py")
        for module in imported_modules(path)
        if module.startswith("portal.runs")
    }
    assert engine_imports == {"portal.runs.api"}


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
class ShapeAppTests:
    def test_a_kind_with_a_throttled_call_a_wait_and_a_decision_runs_on_a_real_worker(
        self, cluster, environments, sandbox, client
    ):
        erin, eddie = make_persona("erin"), make_persona("eddie")
        # More throttles than boto3's own retries absorb: the engine retries the step.
        sandbox.inject(service="sts", operation="GetCallerIdentity", code="Throttling", count=4)
        cluster.worker()
        run = run_start(
            kind="shape.canary",
            actor=erin,
            params={"environment": "dev", "invocations": 50, "every": 0.2},
        )
        page = reverse("runs:detail", args=[run.pk])

        client.force_login(eddie)
        wait_for(
            lambda: 'data-testid="decide-promote"' in client.get(page).content.decode(),
            90,
            "the decision on the run page",
        )
        run.refresh_from_db()
        assert run.status == RunStatus.WAITING
        who, bake, verdict = run.steps.order_by("position")
        assert who.status == StepStatus.SUCCEEDED and who.attempts == 2  # retried once
        assert bake.status == StepStatus.SUCCEEDED
        assert (bake.attempts, bake.ticks, bake.output) == (1, 5, {"invocations": 50, "errors": 0})

        response = client.post(
            reverse("runs:step-decide", args=[run.pk, verdict.pk]),
            {"choice": "promote", "reason": "clean bake"},
        )
        assert response.status_code == 302
        run = wait_run(run, ("succeeded", "failed"), 60, cluster)

        assert run.status == RunStatus.SUCCEEDED, run.error
        verdict.refresh_from_db()
        assert verdict.output == {"choice": "promote", "by": "eddie", "by_default": False}
        actions = list(
            AuditEvent.objects.filter(object_type="runs.run", object_id=str(run.pk))
            .order_by("seq")
            .values_list("action", flat=True)
        )
        assert actions.count("step.retry_scheduled") == 1
        assert actions.count("step.waiting") == 1
        assert actions.count("step.decision_needed") == 1
        assert actions.count("step.decided") == 1
        assert actions[-1] == "run.succeeded"

    def test_the_run_page_shows_the_bake_live(self, cluster, environments, sandbox, client):
        erin = make_persona("erin")
        cluster.worker()
        run = run_start(
            kind="shape.canary",
            actor=erin,
            params={"environment": "dev", "invocations": 1000, "every": 0.5},
        )
        client.force_login(erin)
        page = reverse("runs:detail", args=[run.pk])
        wait_for(
            lambda: (
                "of 1000 invocations needed, 0 errors"
                in client.get(page, headers={"HX-Request": "true"}).content.decode()
            ),
            60,
            "a bake tick on the run page",
        )
