"""The watchdog: the reaper and the stall check run in beat's own process, so they go on
when no worker answers; the dashboard tells engineers and admins when runs are not moving."""

from __future__ import annotations

import io
import json
import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

import tests.runs.worker_steps  # noqa: F401 - registers the test run kinds
from portal.runs import watchdog
from portal.runs.api import RunStatus, run_start, worker_stall
from portal.runs.models import Run
from tests.personas import make_persona
from tests.runs.test_engine_workers import wait_run
from tests.workers import wait_for


def age(run: Run, seconds: float, **fields) -> None:
    """Make the run look `seconds` old (created, and any other time fields given)."""
    then = timezone.now() - timedelta(seconds=seconds)
    Run.objects.filter(pk=run.pk).update(created_at=then, **{f: then for f in fields})


@pytest.fixture
def stall_after_a_minute(settings):
    settings.RUNS_STALL_SECONDS = 60


@pytest.mark.django_db
@pytest.mark.usefixtures("stall_after_a_minute")
class StallTests:
    def test_nothing_waiting_is_no_stall(self):
        assert worker_stall() is None

    def test_a_run_pending_past_the_limit_with_no_worker_activity_is_a_stall(self):
        run = run_start(kind="test.sequence", actor=make_persona("erin"), params={"steps": 1})
        assert worker_stall() is None  # just started: a worker has time to take it
        age(run, 90)

        stall = worker_stall()

        assert stall is not None and stall.waiting == 1
        assert stall.message == "no worker has taken work yet; 1 run is waiting for a worker."

    def test_recent_worker_activity_on_any_run_is_no_stall(self):
        erin = make_persona("erin")
        waiting = run_start(kind="test.sequence", actor=erin, params={"steps": 1})
        age(waiting, 90)
        busy = run_start(kind="test.sequence", actor=erin, params={"steps": 1})
        Run.objects.filter(pk=busy.pk).update(heartbeat_at=timezone.now())

        assert worker_stall() is None

    def test_a_due_wait_and_an_expired_lease_count_and_say_how_long(self):
        erin = make_persona("erin")
        woken = run_start(kind="test.sequence", actor=erin, params={"steps": 1})
        Run.objects.filter(pk=woken.pk).update(status=RunStatus.WAITING)
        age(woken, 600, wake_at=True, heartbeat_at=True)
        left = run_start(kind="test.sequence", actor=erin, params={"steps": 1})
        Run.objects.filter(pk=left.pk).update(status=RunStatus.RUNNING, lease_owner="gone:1")
        age(left, 400, lease_expires_at=True)

        stall = worker_stall()

        assert stall is not None and stall.waiting == 2
        assert stall.message.startswith("no worker has taken work for 10 minutes; 2 runs")

    def test_the_dashboard_tells_engineers_and_admins_only(self, client):
        run = run_start(kind="test.sequence", actor=make_persona("erin"), params={"steps": 1})
        age(run, 90)
        for name, shown in (("erin", True), ("ada", True), ("rita", False)):
            client.force_login(make_persona(name))
            page = client.get(reverse("home")).content.decode()
            assert ('data-testid="worker-stall"' in page) is shown, name

    def test_a_check_reaps_and_writes_the_health_file(self, tmp_path):
        run = run_start(kind="test.sequence", actor=make_persona("erin"), params={"steps": 1})
        age(run, 90)
        Run.objects.filter(pk=run.pk).update(last_enqueued_at=None)

        watchdog.check(tmp_path)

        health = json.loads((tmp_path / "runs-health.json").read_text())
        assert health["worker"] == "stalled" and "1 run is waiting" in health["reason"]
        assert Run.objects.get(pk=run.pk).last_enqueued_at is not None  # reaped
        Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now())
        watchdog.check(tmp_path)
        assert json.loads((tmp_path / "runs-health.json").read_text())["worker"] == "ok"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
class WatchdogProcessTests:
    def test_beat_reaps_and_reports_a_stall_while_no_worker_answers(self, cluster, tmp_path):
        erin = make_persona("erin")
        run = run_start(kind="test.sequence", actor=erin, params={"steps": 2})
        Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, lease_owner="gone:1")
        age(run, 30, lease_expires_at=True)
        before = Run.objects.get(pk=run.pk).last_enqueued_at
        health = tmp_path / "runs-health.json"

        cluster.beat(ONRAMP_VAR_DIR=str(tmp_path), RUNS_STALL_SECONDS="2")

        wait_for(
            lambda: Run.objects.get(pk=run.pk).last_enqueued_at != before,
            30,
            "beat's watchdog to re-enqueue the run with no worker running",
        )
        wait_for(
            lambda: health.exists() and json.loads(health.read_text())["worker"] == "stalled",
            30,
            "the health file to say stalled",
        )
        cluster.worker()
        run = wait_run(run, ("succeeded", "failed"), 60, cluster)
        assert run.status == RunStatus.SUCCEEDED, run.error

    def test_a_worker_whose_pool_processes_were_all_killed_is_reported_stalled(
        self, cluster, tmp_path
    ):
        """The jam from the issue, reproduced: prefork's replacement pool processes block on
        the queue lock a killed one held, so the worker takes no work. The watchdog sees it."""
        worker = cluster.worker(concurrency=2)
        children = _children(worker.popen.pid)
        assert len(children) == 2
        for pid in children:
            _kill(pid)
        time.sleep(3)
        erin = make_persona("erin")
        runs = [run_start(kind="test.sequence", actor=erin, params={"steps": 1}) for _ in range(4)]
        health = tmp_path / "runs-health.json"
        cluster.beat(ONRAMP_VAR_DIR=str(tmp_path), RUNS_STALL_SECONDS="4")
        deadline = time.monotonic() + 40
        verdict = ""
        while time.monotonic() < deadline:
            done = Run.objects.filter(pk__in=[r.pk for r in runs], status="succeeded").count()
            if done == len(runs):
                verdict = "ran"  # this time the pool recovered by itself
                break
            if health.exists() and json.loads(health.read_text())["worker"] == "stalled":
                verdict = "stalled"
                break
            time.sleep(0.5)
        assert verdict in ("ran", "stalled"), "neither progress nor a stall report"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


@pytest.mark.django_db
@pytest.mark.usefixtures("stall_after_a_minute")
class RunsHealthCommandTests:
    def test_it_passes_while_runs_move_and_fails_with_the_reason_when_they_do_not(self):
        out = io.StringIO()
        call_command("runs_health", stdout=out)
        assert "runs are moving" in out.getvalue()
        run = run_start(kind="test.sequence", actor=make_persona("erin"), params={"steps": 1})
        age(run, 90)
        with pytest.raises(CommandError, match="runs are not moving: no worker has taken work"):
            call_command("runs_health")

    def test_it_fails_when_the_named_worker_does_not_answer(self):
        with pytest.raises(CommandError, match="did not answer a ping"):
            call_command("runs_health", worker="celery@nowhere", timeout=0.5)
