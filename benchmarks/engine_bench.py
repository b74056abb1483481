"""Benchmark the run engine in the embedded set-up (or PostgreSQL/Redis when configured).

Prints:
1. the environment check's wall time through the engine (click → run finished, and first
   step started → run finished) against the same boto3 calls in a plain loop, and the ratio
   (target ≤ 1.3×);
2. the delay from a step finishing (its finished_at in the database) to the progress
   partial showing it in a real browser (target p95 ≤ 1.5 s).

Usage: .venv/bin/python benchmarks/engine_bench.py [--repeat 10] [--steps 30]
It starts its own sandbox, worker and web server in a temporary folder and stops them.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from typing import Any

from harness import Stack, percentile, wait_terminal

WORKER_CONCURRENCY = 2


def environment_check_calls(environments: list) -> None:
    """The environment check's boto3 calls, in a plain loop, with the same reused clients."""
    from portal import aws

    for env in environments:
        aws.client("sts", env).get_caller_identity()
        aws.client("stepfunctions", env).describe_state_machine(
            stateMachineArn=env.state_machine_arn
        )
        lam = aws.client("lambda", env)
        for name in env.lambda_functions:
            lam.get_function(FunctionName=name)
            lam.get_alias(FunctionName=name, Name=env.lambda_alias)
        aws.client("dynamodb", env).describe_table(TableName=env.resource(env.metadata_table_name))
        s3 = aws.client("s3", env)
        bucket = env.resource(env.processed_bucket_name)
        s3.head_bucket(Bucket=bucket)
        s3.get_bucket_versioning(Bucket=bucket)


def warm_workers(names: list[str], engineer: Any, processes: int = WORKER_CONCURRENCY) -> None:
    """Run the check until each worker process has run it once, so that no timed run pays
    for making boto3 clients and assuming roles (each process caches its own)."""
    from portal.models import AuditEvent
    from portal.runs.services import run_start

    seen: set[str] = set()
    for _ in range(5):
        runs = [
            run_start(kind="environment.check", actor=engineer, params={"environments": names})
            for _ in range(processes)
        ]
        for run in runs:
            wait_terminal(run.pk, poll=0.05)
        seen |= set(  # the engine's audit events name the worker process (host:pid)
            AuditEvent.objects.filter(
                object_type="runs.run",
                object_id__in=[str(run.pk) for run in runs],
                action="step.succeeded",
            ).values_list("actor_label", flat=True)
        )
        if len(seen) >= processes:
            return
    print(f"  (warm-up reached {len(seen)} of {processes} worker processes)")


def bench_environment_check(repeat: int) -> None:
    from portal.models import Environment
    from portal.runs.services import run_start
    from tests.personas import make_persona

    engineer = make_persona("erin")
    names = list(Environment.objects.values_list("name", flat=True))
    # Warm both paths (imports, connections, clients and role sessions): the plain loop here,
    # the engine in every worker process, as a run may land on either of them.
    warm_workers(names, engineer)
    environment_check_calls(list(Environment.objects.all()))

    clicked, executed, plain = [], [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        run = run_start(kind="environment.check", actor=engineer, params={"environments": names})
        run = wait_terminal(run.pk, poll=0.05)
        clicked.append(time.perf_counter() - t0)
        assert run.status == "succeeded", run.error
        executed.append((run.finished_at - run.started_at).total_seconds())

        t0 = time.perf_counter()
        environment_check_calls(list(Environment.objects.all()))
        plain.append(time.perf_counter() - t0)

    steps = run.steps.count()
    med_click, med_exec, med_plain = (statistics.median(v) for v in (clicked, executed, plain))
    print(f"\nEnvironment check, {len(names)} environments, {steps} steps, {repeat} runs (median):")
    print(f"  plain boto3 loop, same calls           {med_plain * 1000:8.1f} ms")
    for label, value in (
        ("engine, first step → finished         ", med_exec),
        ("engine, click → finished (incl. queue)", med_click),
    ):
        print(f"  {label} {value * 1000:8.1f} ms   ratio {value / med_plain:4.2f}×")


def bench_progress_delay(stack: Stack, steps: int) -> None:
    from playwright.sync_api import sync_playwright

    from portal.runs.models import Run
    from portal.runs.services import run_start
    from tests.personas import PASSWORD, make_persona

    make_persona("erin")
    base = f"http://127.0.0.1:{stack.web_port}"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=flags)
        page = browser.new_page(base_url=base)
        page.goto("/login/")
        page.fill("#id_username", "erin")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/login/" not in url)

        from django.contrib.auth.models import User

        rng = random.Random(7)
        # Random step lengths so finishing times fall at every phase of the 1 s poll.
        run = run_start(
            kind="test.sequence",
            actor=User.objects.get(username="erin"),
            params={"sleeps": [round(rng.uniform(0.2, 1.6), 3) for _ in range(steps)]},
        )
        page.goto(f"/runs/{run.pk}/")
        page.evaluate(
            """() => {
              window.__seen = {};
              const steps = () => document.querySelectorAll('[data-step-key]');
              const record = () => steps().forEach((el, i) => {
                const done = el.dataset.stepStatus === 'succeeded';
                if (done && !(i in window.__seen)) window.__seen[i] = Date.now();
              });
              record();
              const options = {subtree: true, childList: true, attributes: true};
              new MutationObserver(record).observe(document.body, options);
            }"""
        )
        page.wait_for_selector('#run-progress[data-status="succeeded"]', timeout=steps * 5000)
        seen = page.evaluate("() => window.__seen")
        if os.environ.get("BENCH_DEBUG"):
            print(seen, page.locator("[data-step-key]").count())
        browser.close()
    run = Run.objects.get(pk=run.pk)
    delays = []
    for step in run.steps.order_by("position"):
        shown_ms = seen.get(str(step.position))
        if shown_ms is None:
            continue
        delays.append(shown_ms / 1000 - step.finished_at.timestamp())
    print(f"\nProgress partial delay, {len(delays)} steps of 0.2–1.6 s, polling every 1 s:")
    print(
        f"  step finished → shown in the browser: p50 {percentile(delays, 50):.2f} s, "
        f"p95 {percentile(delays, 95):.2f} s, max {max(delays):.2f} s (target p95 ≤ 1.5 s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--skip-browser", action="store_true")
    args = parser.parse_args()

    stack = Stack()
    os.environ.update({k: v for k, v in stack.env.items() if k.startswith(("ONRAMP_", "DJANGO_"))})
    os.environ.pop("PYTEST_VERSION", None)
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    try:
        stack.start_sandbox()
        stack.add_worker(concurrency=WORKER_CONCURRENCY, options=("-I", "tests.runs.worker_steps"))
        if not args.skip_browser:
            stack.start_web()
        import django

        django.setup()
        from django.conf import settings

        import tests.runs.worker_steps  # noqa: F401 - the sequence kind used for the delay test

        print(
            f"database {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}, "
            f"broker {settings.CELERY_BROKER_URL.split('://')[0]}, "
            f"worker concurrency {WORKER_CONCURRENCY}"
        )
        bench_environment_check(args.repeat)
        if not args.skip_browser:
            bench_progress_delay(stack, args.steps)
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
