"""Waits with output and a deadline, on real workers: ticks are not attempts, no worker is
held while a run waits, and a worker killed during a wait loses nothing."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import User

import tests.runs.worker_steps  # noqa: F401 - registers the test run kinds
from portal.models import AuditEvent
from portal.runs import dispatch
from portal.runs.api import RunStatus, StepStatus, run_start
from tests.personas import make_persona
from tests.runs.test_engine_workers import read_journal, wait_run
from tests.workers import wait_for


@pytest.fixture
def engineer(transactional_db) -> User:
    return make_persona("erin")


def actions(run) -> list[str]:
    return list(
        AuditEvent.objects.filter(object_type="runs.run", object_id=str(run.pk))
        .order_by("seq")
        .values_list("action", flat=True)
    )


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
class WaitWorkerTests:
    def test_a_200_tick_wait_finishes_in_one_attempt_with_each_tick_seen(
        self, cluster, engineer, tmp_path
    ):
        journal = tmp_path / "journal"
        cluster.worker()
        run = run_start(
            kind="test.ticks",
            actor=engineer,
            params={"ticks": 200, "every": 0, "journal": str(journal)},
        )

        run = wait_run(run, ("succeeded", "failed"), 240, cluster)

        assert run.status == RunStatus.SUCCEEDED, run.error
        tick = run.steps.get(position=0)
        assert (tick.ticks, tick.attempts, tick.transient_failures) == (200, 1, 0)
        assert tick.output == {"ticks": 200}
        seen = [e for _, p, e, _, _ in read_journal(journal) if p == 0]
        assert seen == [f"tick{i}" for i in range(201)]
        # One "waiting" event for the whole wait, not one per tick.
        assert actions(run).count("step.waiting") == 1

    def test_a_wait_past_its_deadline_fails_with_a_clear_message(self, cluster, engineer):
        cluster.worker()
        run = run_start(
            kind="test.ticks",
            actor=engineer,
            params={"ticks": 10_000, "every": 0.3, "deadline": 2},
        )

        run = wait_run(run, ("succeeded", "failed"), 60, cluster)

        assert run.status == RunStatus.FAILED
        tick = run.steps.get(position=0)
        assert tick.status == StepStatus.FAILED
        assert "when the deadline passed after" in tick.error
        assert tick.attempts == 1  # the ticks never used up a retry
        assert 3 <= tick.ticks <= 10
        assert (tick.finished_at - tick.started_at).total_seconds() >= 2
        assert tick.output["of"] == 10_000  # the last tick's output stays for the page
        assert run.steps.get(position=1).status == StepStatus.PENDING

    def test_no_worker_is_held_while_a_run_waits(self, cluster, engineer, tmp_path):
        """With one worker process, a second run completes while the first one waits."""
        cluster.worker(concurrency=1)
        waiting = run_start(kind="test.ticks", actor=engineer, params={"ticks": 1, "every": 6})
        wait_for(
            lambda: waiting.steps.get(position=0).status == StepStatus.WAITING,
            30,
            "the first run to wait",
        )
        quick = run_start(kind="test.sequence", actor=engineer, params={"steps": 2})

        quick = wait_run(quick, ("succeeded", "failed"), 30, cluster)
        waiting.refresh_from_db()

        assert quick.status == RunStatus.SUCCEEDED
        assert waiting.status == RunStatus.WAITING

    def test_a_worker_killed_during_a_wait_loses_nothing_and_the_wait_resumes_on_time(
        self, cluster, engineer, tmp_path
    ):
        journal = tmp_path / "journal"
        first = cluster.worker("w1")
        run = run_start(
            kind="test.ticks",
            actor=engineer,
            params={"ticks": 1, "every": 5, "journal": str(journal)},
        )
        wait_for(lambda: run.steps.get(position=0).status == StepStatus.WAITING, 30, "the wait")
        step = run.steps.get(position=0)
        due = step.started_at.timestamp() + 5

        first.kill()  # SIGKILL to the whole process group, mid-wait
        first.popen.wait(10)
        time.sleep(0.5)
        cluster.worker("w2")
        cluster.beat()

        run = wait_run(run, ("succeeded", "failed"), 60, cluster)

        assert run.status == RunStatus.SUCCEEDED, run.error
        step.refresh_from_db()
        assert (step.attempts, step.ticks) == (1, 1)
        ticks = [(e, at) for _, p, e, _, at in read_journal(journal) if p == 0]
        assert [e for e, _ in ticks] == ["tick0", "tick1"]
        resumed_at = ticks[1][1]
        # On time: not before it was due, and within the reaper's interval and a lease after.
        assert due - 0.05 <= resumed_at <= due + 8, resumed_at - due


@pytest.mark.django_db
class WaitEngineTests:
    def test_the_run_page_shows_the_ticks_output_and_deadline_live(self, client):
        erin = make_persona("erin")
        run = run_start(
            kind="test.ticks", actor=erin, params={"ticks": 5, "every": 60, "deadline": 600}
        )
        dispatch.advance(run.pk)
        run.refresh_from_db()
        assert run.status == RunStatus.WAITING
        run.wake_at = run.created_at  # due now: the next look is a tick
        run.save(update_fields=["wake_at"])
        dispatch.advance(run.pk)

        client.force_login(erin)
        page = client.get(f"/runs/{run.pk}/").content.decode()

        assert "Waiting: tick 1 of 5" in page
        assert 'data-testid="wait-ticks"' in page and "Looked 1 time" in page
        assert "gives up at" in page
        tick = run.steps.get(position=0)
        assert (tick.attempts, tick.ticks, tick.output) == (1, 1, {"tick": 1, "of": 5})
