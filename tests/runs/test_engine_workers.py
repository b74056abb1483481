"""The run engine's guarantees, shown with real Celery workers on a real broker.

Each test starts worker (and, where the reaper matters, beat) processes against the test
database: the embedded file-system broker by default, Redis when CELERY_BROKER_URL is set.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections import defaultdict
from pathlib import Path

import pytest
from django.contrib.auth.models import User

import tests.runs.worker_steps  # noqa: F401 - registers the test run kinds
from portal.models import AuditEvent
from portal.runs import queue
from portal.runs.models import Run, RunStatus, StepStatus
from portal.runs.services import run_start, run_wake
from tests.personas import make_persona
from tests.workers import ROOT, Cluster, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def read_journal(path: Path) -> list[tuple[int, int, str, int, float]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        run_id, position, event, pid, at = line.split()
        rows.append((int(run_id), int(position), event, int(pid), float(at)))
    return rows


def wait_run(run: Run, statuses: tuple[str, ...], timeout: float, cluster: Cluster) -> Run:
    try:
        wait_for(
            lambda: Run.objects.get(pk=run.pk).status in statuses,
            timeout,
            f"run {run.pk} {statuses}",
        )
    except AssertionError:
        status = Run.objects.get(pk=run.pk).status
        raise AssertionError(
            f"run {run.pk} is {status}, wanted {statuses}\n{cluster.logs()}"
        ) from None
    return Run.objects.get(pk=run.pk)


@pytest.fixture
def engineer(transactional_db) -> User:
    return make_persona("erin")


class NormalPathTests:
    def test_it_executes_each_step_exactly_once_in_order(self, cluster, engineer, tmp_path):
        journal = tmp_path / "journal"
        cluster.worker()
        run = run_start(
            kind="test.sequence", actor=engineer, params={"steps": 6, "journal": str(journal)}
        )

        run = wait_run(run, ("succeeded", "failed"), 60, cluster)

        assert run.status == RunStatus.SUCCEEDED
        starts = [(r, p) for r, p, e, _, _ in read_journal(journal) if e == "start"]
        assert starts == [(run.pk, i) for i in range(6)]
        steps = list(run.steps.order_by("position"))
        assert [s.status for s in steps] == [StepStatus.SUCCEEDED] * 6
        assert [s.attempts for s in steps] == [1] * 6
        actions = list(
            AuditEvent.objects.filter(object_type="runs.run", object_id=str(run.pk))
            .order_by("seq")
            .values_list("action", flat=True)
        )
        assert actions == ["run.started"] + ["step.running", "step.succeeded"] * 6 + [
            "run.succeeded"
        ]


class ConcurrencyTests:
    def test_two_workers_never_run_the_same_step_at_once(self, cluster, engineer, tmp_path):
        journal = tmp_path / "journal"
        # Steps outlast the lease (3 s) several times over: only heartbeats keep it.
        runs = [
            run_start(
                kind="test.sequence",
                actor=engineer,
                params={"steps": 2, "sleep": 4 if i == 0 else 0.3, "journal": str(journal)},
            )
            for i in range(4)
        ]
        cluster.worker("w1", concurrency=2)
        cluster.worker("w2", concurrency=2)
        for _ in range(5):  # duplicate messages for every run, as a redelivering broker would
            for run in runs:
                queue.enqueue(run.pk)

        for run in runs:
            assert wait_run(run, ("succeeded", "failed"), 90, cluster).status == RunStatus.SUCCEEDED

        intervals: dict[tuple[int, int], list[list[float]]] = defaultdict(list)
        pids = set()
        for run_id, position, event, pid, at in read_journal(journal):
            if event == "start":
                intervals[(run_id, position)].append([at, None])
                pids.add(pid)
            else:
                intervals[(run_id, position)][-1][1] = at
        assert len(pids) >= 2, "both workers should have taken part"
        assert all(len(v) == 1 for v in intervals.values()), intervals
        # Within a run, no step starts before the previous one ended.
        for run in runs:
            spans = [intervals[(run.pk, p)][0] for p in range(2)]
            assert spans[0][1] <= spans[1][0]


class WaitTests:
    def test_a_timed_wait_frees_the_worker_and_resumes_when_due(self, cluster, engineer, tmp_path):
        journal = tmp_path / "journal"
        cluster.worker(concurrency=1)
        waiting = run_start(
            kind="test.waits", actor=engineer, params={"wait": 4, "journal": str(journal)}
        )
        wait_run(waiting, ("waiting",), 30, cluster)
        quick = run_start(kind="test.sequence", actor=engineer, params={"steps": 1})

        # The only worker process is free while the first run waits.
        assert wait_run(quick, ("succeeded",), 30, cluster).status == RunStatus.SUCCEEDED
        assert Run.objects.get(pk=waiting.pk).status == RunStatus.WAITING

        done = wait_run(waiting, ("succeeded", "failed"), 30, cluster)
        assert done.status == RunStatus.SUCCEEDED
        assert (
            done.finished_at >= done.created_at.replace()
            and (done.finished_at - done.created_at).total_seconds() >= 4
        )

    def test_a_wait_for_a_person_resumes_when_they_act(self, cluster, engineer, tmp_path):
        flag = tmp_path / "pressed"
        cluster.worker(concurrency=1)
        run = run_start(kind="test.waits", actor=engineer, params={"flag": str(flag)})
        run = wait_run(run, ("waiting",), 30, cluster)
        assert run.wake_at is None
        time.sleep(2)
        assert Run.objects.get(pk=run.pk).status == RunStatus.WAITING

        flag.touch()
        run_wake(run=run)

        assert wait_run(run, ("succeeded", "failed"), 30, cluster).status == RunStatus.SUCCEEDED


class ReaperTests:
    def test_a_run_committed_but_never_enqueued_is_picked_up_by_the_reaper(
        self, cluster, engineer, tmp_path
    ):
        # A process creates a run and dies right after the commit, before its on-commit
        # hook could enqueue it.
        script = textwrap.dedent(
            f"""
            import os, django
            django.setup()
            from django.contrib.auth.models import User
            from django.db import transaction
            from portal.runs.services import run_start
            import tests.runs.worker_steps
            with transaction.atomic():
                transaction.on_commit(lambda: os._exit(0))
                run = run_start(kind="test.sequence", actor=User.objects.get(pk={engineer.pk}),
                                params={{"steps": 2}})
            raise SystemExit("the enqueue hook ran")
            """
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            env=cluster.env(),
            capture_output=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr.decode()
        run = Run.objects.get()
        assert run.last_enqueued_at is None

        cluster.worker()
        time.sleep(2)
        assert Run.objects.get(pk=run.pk).status == RunStatus.PENDING, "nothing knew about it yet"

        cluster.beat()
        assert wait_run(run, ("succeeded", "failed"), 60, cluster).status == RunStatus.SUCCEEDED


class CrashTests:
    def test_a_worker_killed_mid_step_is_replaced_and_leaves_no_duplicate(
        self, cluster, engineer, environments, tmp_path
    ):
        from portal import aws
        from portal.models import Environment

        journal = tmp_path / "journal"
        alias = f"alias/engine-crash-{tmp_path.name[-12:]}"
        doomed = cluster.worker("doomed")
        run = run_start(
            kind="test.kms",
            actor=engineer,
            params={"environment": "dev", "alias": alias, "pause": 60, "journal": str(journal)},
        )
        # Kill the worker (and its pool process) with SIGKILL between CreateKey and
        # CreateAlias: the worst moment for a non-idempotent AWS call.
        wait_for(
            lambda: any(e == "created" for _, _, e, _, _ in read_journal(journal)), 60, "CreateKey"
        )
        doomed.kill()
        doomed.popen.wait(10)
        assert Run.objects.get(pk=run.pk).status == RunStatus.RUNNING

        cluster.worker("rescuer")
        cluster.beat()
        run = wait_run(run, ("succeeded", "failed"), 90, cluster)

        assert run.status == RunStatus.SUCCEEDED
        step = run.steps.get()
        assert step.attempts == 2
        assert step.output["action"] == "updated"  # it adopted the key the dead worker made
        kms = aws.client("kms", Environment.objects.get(name="dev"))
        tagged = [
            key["KeyId"]
            for key in kms.list_keys()["Keys"]
            if {"TagKey": "onramp:alias", "TagValue": alias}
            in kms.list_resource_tags(KeyId=key["KeyId"]).get("Tags", [])
        ]
        assert len(tagged) == 1, f"expected exactly one key for {alias}, found {tagged}"
        aliases = [a for a in kms.list_aliases()["Aliases"] if a["AliasName"] == alias]
        assert [a["TargetKeyId"] for a in aliases] == tagged
        actions = list(
            AuditEvent.objects.filter(object_type="runs.run", object_id=str(run.pk))
            .order_by("seq")
            .values_list("action", flat=True)
        )
        assert actions == [
            "run.started",
            "step.running",
            "step.restarted",
            "step.succeeded",
            "run.succeeded",
        ]


class AwsErrorTests:
    def test_throttling_is_retried_with_backoff_and_the_run_succeeds(
        self, cluster, engineer, environments, sandbox
    ):
        # More throttles than boto3's own retries absorb: the engine has to back off too.
        sandbox.inject(
            service="sts",
            operation="GetCallerIdentity",
            code="Throttling",
            message="Rate exceeded",
            status=400,
            count=4,
        )
        cluster.worker()
        run = run_start(kind="test.aws", actor=engineer, params={"environment": "dev"})

        run = wait_run(run, ("succeeded", "failed"), 60, cluster)

        assert run.status == RunStatus.SUCCEEDED, run.error
        caller = run.steps.get(key="test.caller")
        assert caller.attempts == 2
        assert any("retrying in" in entry["message"] for entry in caller.log)
        assert (
            AuditEvent.objects.filter(
                object_type="runs.run", object_id=str(run.pk), action="step.retry_scheduled"
            ).count()
            == 1
        )

    def test_access_denied_fails_the_run_with_the_aws_message_until_retried(
        self, cluster, engineer, environments, sandbox, client
    ):
        from django.urls import reverse

        sandbox.inject(
            service="sts",
            operation="GetCallerIdentity",
            code="AccessDenied",
            message=(
                "User: arn:aws:iam::111111111111:user/onramp is not authorized to perform: "
                "sts:GetCallerIdentity"
            ),
            status=403,
            count=-1,
        )
        cluster.worker()
        run = run_start(kind="test.aws", actor=engineer, params={"environment": "dev"})

        run = wait_run(run, ("succeeded", "failed"), 60, cluster)

        assert run.status == RunStatus.FAILED
        failed = run.steps.get(key="test.caller")
        assert failed.attempts == 1, "a permanent error is not retried"
        client.force_login(engineer)
        page = client.get(reverse("runs:detail", args=[run.pk])).content.decode()
        assert (
            "AccessDenied" in page and "is not authorized to perform: sts:GetCallerIdentity" in page
        )

        sandbox.clear()
        response = client.post(reverse("runs:step-retry", args=[run.pk, failed.pk]))
        assert response.status_code == 302
        run = wait_run(run, ("succeeded", "failed"), 60, cluster)
        assert run.status == RunStatus.SUCCEEDED
        assert run.steps.get(key="test.record", position=2).status == StepStatus.SUCCEEDED
