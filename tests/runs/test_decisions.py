"""Decisions: named choices for the people allowed, a reason, separation of duties, a
default once the time limit passes, exactly one choice however many arrive at once."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.test import Client
from django.urls import reverse

import tests.shape_app.kinds  # noqa: F401 - registers the shape test kind
from portal.errors import ApplicationError
from portal.models import AuditEvent
from portal.runs import dispatch
from portal.runs.api import RunStatus, StepStatus, run_decide, run_start
from portal.runs.models import Decision
from tests.personas import make_persona


def to_decision(run, **params):
    """Drive the run in-process up to its decision (the bake needs no ticks here)."""
    for _ in range(10):
        dispatch.advance(run.pk)
        run.refresh_from_db()
        verdict = run.steps.get(key="shape.verdict")
        if verdict.status == StepStatus.WAITING:
            return run, verdict
        if run.wake_at:
            run.wake_at = run.created_at
            run.save(update_fields=["wake_at"])
    raise AssertionError(f"run never reached its decision: {run.status} {run.error}")


def timed_canary(people):
    """A canary at its decision, promoting by itself half a second from now."""
    run = run_start(
        kind="shape.canary",
        actor=people["erin"],
        params={"environment": "dev", "invocations": 0, "promote_after": 0.5},
    )
    return to_decision(run)


@pytest.fixture
def people(db):
    return {name: make_persona(name) for name in ("erin", "eddie", "rita", "ada")}


@pytest.fixture
def canary(people, sandbox, environments):
    run = run_start(
        kind="shape.canary",
        actor=people["erin"],
        params={"environment": "dev", "invocations": 0},
    )
    return to_decision(run)


@pytest.mark.django_db
class DecisionRuleTests:
    def test_only_the_roles_allowed_and_not_the_starter_may_choose(self, people, canary):
        run, verdict = canary
        assert verdict.decision_spec["prompt"] == "The canary baked cleanly: promote it?"
        with pytest.raises(ApplicationError, match="someone else must decide"):
            run_decide(run=run, step_id=verdict.pk, actor=people["erin"], choice="promote")
        for name in ("rita", "ada"):
            with pytest.raises(PermissionDenied):
                run_decide(run=run, step_id=verdict.pk, actor=people[name], choice="promote")
        with pytest.raises(ApplicationError, match="not one of"):
            run_decide(run=run, step_id=verdict.pk, actor=people["eddie"], choice="ship-it")
        assert not Decision.objects.exists()

        run_decide(
            run=run,
            step_id=verdict.pk,
            actor=people["eddie"],
            choice="rollback",
            reason="p95 latency doubled",
        )

        (event,) = AuditEvent.objects.filter(action="step.decided")
        assert event.actor == people["eddie"]
        assert event.data["choice"] == "rollback"
        assert event.data["reason"] == "p95 latency doubled"
        with pytest.raises(ApplicationError, match="eddie already chose “Roll back”"):
            run_decide(run=run, step_id=verdict.pk, actor=people["eddie"], choice="promote")
        dispatch.advance(run.pk)
        run.refresh_from_db()
        assert run.status == RunStatus.SUCCEEDED, run.error
        verdict.refresh_from_db()
        assert verdict.output == {"choice": "rollback", "by": "eddie", "by_default": False}

    def test_the_page_shows_the_choices_to_those_allowed_only(self, people, canary, client):
        run, verdict = canary
        url = reverse("runs:detail", args=[run.pk])
        client.force_login(people["eddie"])
        page = client.get(url).content.decode()
        for choice in ("promote", "rollback", "pause"):
            assert f'data-testid="decide-{choice}"' in page
        client.force_login(people["erin"])
        page = client.get(url).content.decode()
        assert 'data-testid="decide-promote"' not in page
        assert "You started this run, so someone else must decide it" in page
        client.force_login(people["rita"])
        assert 'data-testid="decide-promote"' not in client.get(url).content.decode()

        client.force_login(people["eddie"])
        response = client.post(
            reverse("runs:step-decide", args=[run.pk, verdict.pk]),
            {"choice": "pause", "reason": "waiting for the data team"},
        )
        assert response.status_code == 302
        page = client.get(url).content.decode()
        assert "eddie chose “Pause”" in page and "waiting for the data team" in page
        assert 'data-testid="decide-promote"' not in page

    def test_a_requester_posting_a_choice_gets_403_and_nothing_changes(
        self, people, canary, client
    ):
        run, verdict = canary
        client.force_login(people["rita"])
        response = client.post(
            reverse("runs:step-decide", args=[run.pk, verdict.pk]), {"choice": "promote"}
        )
        assert response.status_code == 403
        assert not Decision.objects.exists()

    def test_the_default_applies_once_the_time_limit_passes(self, people, sandbox, environments):
        run, verdict = timed_canary(people)
        assert run.wake_at is not None  # the engine looks again when the limit passes
        time.sleep(0.6)

        dispatch.advance(run.pk)

        run.refresh_from_db()
        assert run.status == RunStatus.SUCCEEDED, run.error
        decision = Decision.objects.get(step=verdict)
        assert (decision.choice, decision.chosen_by, decision.by_default) == (
            "promote",
            None,
            True,
        )
        (event,) = AuditEvent.objects.filter(action="step.decided")
        assert event.actor is None and event.data["by_default"] is True
        assert run.steps.get(pk=verdict.pk).output["by_default"] is True

    def test_a_choice_made_before_the_limit_stands(self, people, sandbox, environments):
        run, verdict = timed_canary(people)
        run_decide(run=run, step_id=verdict.pk, actor=people["eddie"], choice="rollback")
        time.sleep(0.6)
        dispatch.advance(run.pk)
        assert Decision.objects.get(step=verdict).choice == "rollback"
        assert run.steps.get(pk=verdict.pk).output["choice"] == "rollback"


@pytest.mark.django_db(transaction=True)
class ConcurrentDecisionTests:
    def test_fifty_concurrent_posts_of_different_choices_make_exactly_one_decision(
        self, sandbox, environments
    ):
        erin = make_persona("erin")
        engineers = [make_persona("eddie")]
        run = run_start(
            kind="shape.canary", actor=erin, params={"environment": "dev", "invocations": 0}
        )
        run, verdict = to_decision(run)
        url = reverse("runs:step-decide", args=[run.pk, verdict.pk])
        choices = ["promote", "rollback", "pause"]
        statuses: list[int] = []
        barrier = threading.Barrier(50)

        def post(i: int) -> None:
            client = Client()
            client.force_login(engineers[i % len(engineers)])
            barrier.wait()
            try:
                response = client.post(url, {"choice": choices[i % 3], "reason": f"post {i}"})
                statuses.append(response.status_code)
            finally:
                connection.close()

        threads = [threading.Thread(target=post, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)

        assert sorted(set(statuses)) == [302] and len(statuses) == 50
        (decision,) = Decision.objects.filter(step=verdict)
        (event,) = AuditEvent.objects.filter(action="step.decided")
        assert event.data["choice"] == decision.choice
        assert event.actor == decision.chosen_by
        run.refresh_from_db()
        assert run.wake_at is not None


def test_decide_rejects_a_default_without_a_time_limit():
    from portal.runs.api import Choice, Decide

    with pytest.raises(ValueError, match="go together"):
        Decide(prompt="?", choices=[Choice("a", "A")], default="a")
    with pytest.raises(ValueError, match="distinct"):
        Decide(prompt="?", choices=[Choice("a", "A"), Choice("a", "B")])
    assert Decide(
        prompt="?", choices=[Choice("a", "A")], default="a", timeout=timedelta(minutes=30)
    ).spec()["decide_by"]
