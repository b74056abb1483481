"""Benchmark onboarding's provisioning on the sandbox (or PostgreSQL/Redis when configured).

Prints:
1. provision + smoke test of the dev environment for one approved request, through the
   engine with real workers, against the same AWS calls in a plain script on the same
   server (the provision run's `apply_*` functions in its order, then the smoke test's
   upload / poll / verify calls, with the same reused boto3 clients), and the ratio
   engine / plain for provision, smoke test and both (target ≤ 1.3×);
2. N sources (20 by default) provisioned at once by two worker processes: total wall time,
   per-run p50/p95, how many succeeded, and a duplicate check read from the sandbox (raw
   buckets, EventBridge rules and their targets, alarms, dashboard widgets, config items).

Usage: .venv/bin/python benchmarks/provision_bench.py [--repeat 5] [--sources 20]
It starts its own sandbox and workers in a temporary folder and stops them. It honours
DATABASE_URL and CELERY_BROKER_URL when they are set (give it a database and a broker of its
own: the workers it starts consume the default queue). Exits 1 when a run fails, or when the
sandbox holds a duplicate or lacks a resource.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from harness import Stack, percentile, wait_terminal

ENVIRONMENT = "dev"


class ProvisionStack(Stack):
    """The sandbox and the workers, and what each worker has done (from its log)."""

    def add_workers(self, count: int, concurrency: int) -> None:
        for _ in range(count):
            self.add_worker(concurrency=concurrency, options=("--without-heartbeat",))

    def tasks_done(self, result: str = "") -> dict[str, int]:
        """Tasks each worker has finished so far (that returned `result`), from its log."""
        ending = f"'{result}'" if result else ""
        return {
            name: sum(
                "succeeded in" in line and line.endswith(ending)
                for line in self.log(name).splitlines()
            )
            for name in self.workers
        }


# --- requests and runs ---------------------------------------------------------------------------


def approved_requests(people: dict[str, Any], names: list[str]) -> list[Any]:
    """One request per source name, with 9 valid and 1 malformed NDJSON sample, validated by
    the workers, submitted, and approved by a security and a governance approver — through
    the same services the pages call."""
    from onboarding import services
    from tests.onboarding.test_requests import add_samples, make_request

    rita, validations = people["rita"], []
    for name in names:
        request = make_request(rita, source_name=name)
        add_samples(request, rita)
        validations.append((request, services.request_validate(request=request, actor=rita)))
    approved = []
    for request, run in validations:
        run = wait_terminal(run.pk)
        if run.status != "succeeded":
            raise RuntimeError(f"validating {request.source_name} failed: {run.error}")
        request.refresh_from_db()
        request = services.request_submit(request=request, actor=rita)
        services.approval_grant(request=request, actor=people["sam"], role="security")
        services.approval_grant(request=request, actor=people["gina"], role="governance")
        request.refresh_from_db()
        assert request.status == "approved", request.status
        approved.append(request)
    return approved


# --- part 1: one environment, engine against a plain script ----------------------------------


def plain_provision(request: Any, env: Any) -> None:
    """The provision run's AWS work in a plain script: its `apply_*` functions in its order,
    with the reused clients of portal.aws, the plan computed once."""
    from onboarding.aws import apply
    from onboarding.request_state import plan_for
    from onboarding.steps.provision import PROVISION_STEPS
    from portal import aws

    clients = partial(aws.client, environment=env)
    entries: list[tuple[str, str]] = []

    def log(action: str, message: str) -> None:
        entries.append((action, message))

    plan = plan_for(request, env)
    for _key, _title, func in PROVISION_STEPS:
        if func is None:  # the schema step also needs the request's schema text
            apply.apply_schema_object(plan, request.schema_text, clients, log)
        else:
            func(plan, clients, log)


def plain_smoke(request: Any, env: Any, tag: str) -> int:
    """The smoke test's AWS calls in a plain script: the same per-file calls to upload the
    valid samples, the same executions poll every SMOKE_POLL_SECONDS until each file's
    execution ended, then the same reads of the metadata items and processed output.
    Returns how many times it polled."""
    from botocore.exceptions import ClientError

    from onboarding.request_state import plan_for
    from onboarding.rules import SLA_SECONDS, p95
    from onboarding.steps.smoke import (
        SMOKE_DEADLINE,
        SMOKE_POLL_SECONDS,
        TERMINAL,
        _bucket_exists,
        _executions,
        _processed_object,
        smoke_samples,
    )
    from portal import aws

    plan = plan_for(request, env)
    bucket, source = plan["bucket"]["name"], plan["source"]
    s3 = aws.client("s3", env)
    files = []
    for sample in smoke_samples(request, env):
        key = f"{plan['bucket']['producer_prefix']}smoke/{tag}/{sample.original_name}"
        try:  # the step reads first, so a retry after a crash does not upload twice
            s3.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == "404" and not _bucket_exists(s3, bucket):
                raise
            if code not in ("404", "NoSuchKey", "NotFound"):
                raise
        else:
            raise RuntimeError(f"s3://{bucket}/{key} exists already")
        with sample.file.open("rb") as stream:
            s3.put_object(Bucket=bucket, Key=key, Body=stream.read())
        head = s3.head_object(Bucket=bucket, Key=key)
        files.append({"name": sample.original_name, "key": key, "at": head["LastModified"]})

    sfn, deadline, polls = aws.client("stepfunctions", env), time.monotonic(), 0
    deadline += SMOKE_DEADLINE.total_seconds()
    since = min(f["at"] for f in files).astimezone(UTC) - timedelta(seconds=5)
    while True:
        polls += 1
        executions = _executions(sfn, env.state_machine_arn, bucket, since)
        if all(executions.get(f["key"], {}).get("status") in TERMINAL for f in files):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"no finished executions after {SMOKE_DEADLINE}")
        time.sleep(SMOKE_POLL_SECONDS)

    ddb, table = aws.client("dynamodb", env), plan["config_item"]["table"]
    processed = env.resource(env.processed_bucket_name)
    latencies = []
    for f in files:
        execution = executions[f["key"]]
        assert execution["status"] == "SUCCEEDED", execution
        item = ddb.get_item(
            TableName=table,
            Key={"pk": {"S": f"SOURCE#{source}"}, "sk": {"S": f"FILE#{f['key']}"}},
            ConsistentRead=True,
        ).get("Item")
        assert item is not None and item["status"]["S"] == "SUCCEEDED", item
        assert _processed_object(s3, processed, source, item, f["key"]) is not None
        latencies.append((execution["stopDate"] - f["at"]).total_seconds())
    assert p95(latencies) < SLA_SECONDS[plan["spec"]["latency_sla"]]
    return polls


def engine_cycle(request: Any, engineer: Any) -> dict[str, float]:
    """Provision, then smoke-test, dev through the engine, as an engineer's two clicks do."""
    from onboarding.services import rollout_start

    t0 = time.perf_counter()
    provision = rollout_start(
        request=request, actor=engineer, environment=ENVIRONMENT, action="provision"
    )
    provision = wait_terminal(provision.pk)
    t1 = time.perf_counter()
    assert provision.status == "succeeded", provision.error
    smoke = rollout_start(request=request, actor=engineer, environment=ENVIRONMENT, action="smoke")
    smoke = wait_terminal(smoke.pk)
    t2 = time.perf_counter()
    assert smoke.status == "succeeded", smoke.error

    def executed(run: Any) -> float:
        return (run.finished_at - run.started_at).total_seconds()

    return {
        "provision_click": t1 - t0,
        "smoke_click": t2 - t1,
        "both_click": t2 - t0,
        "provision_exec": executed(provision),
        "smoke_exec": executed(smoke),
        "both_exec": executed(provision) + executed(smoke),
        "provision_steps": provision.steps.count(),
        "smoke_steps": smoke.steps.count(),
        "polls": smoke.steps.get(key="onboarding.smoke_wait").attempts,
    }


def plain_cycle(request: Any, env: Any, tag: str) -> dict[str, float]:
    t0 = time.perf_counter()
    plain_provision(request, env)
    t1 = time.perf_counter()
    polls = plain_smoke(request, env, tag)
    t2 = time.perf_counter()
    return {"provision": t1 - t0, "smoke": t2 - t1, "both": t2 - t0, "polls": polls}


def count_calls(env: Any, func: Callable[[], Any]) -> dict[str, int]:
    """How many AWS calls `func` makes, per service (botocore's before-call event)."""
    from portal import aws

    counts: dict[str, int] = {}
    services = ("kms", "s3", "events", "dynamodb", "cloudwatch", "stepfunctions")
    handlers = []
    for service in services:

        def counted(service: str = service, **_: Any) -> None:
            counts[service] = counts.get(service, 0) + 1

        client = aws.client(service, env)
        client.meta.events.register("before-call", counted)
        handlers.append((client, counted))
    try:
        func()
    finally:
        for client, counted in handlers:
            client.meta.events.unregister("before-call", counted)
    return counts


def recheck_seconds(request: Any, env: Any, times: int = 20) -> float:
    """What a provision step spends before its AWS calls, measured in this process: load the
    request, build the plan and take its digest (to compare with the digest the run's
    approval check recorded; the full approval check runs once, as the first step)."""
    from onboarding.models import OnboardingRequest
    from onboarding.plan import plan_digest
    from onboarding.request_state import plan_for

    def once() -> None:
        fresh = OnboardingRequest.objects.filter(pk=request.pk).first()
        plan_digest(plan_for(fresh, env))

    once()
    samples = []
    for _ in range(times):
        t0 = time.perf_counter()
        once()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def calls_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{service} {n}" for service, n in counts.items())


def spread(values: list[float]) -> str:
    return (
        f"{statistics.median(values) * 1000:7.0f} ms  "
        f"({min(values) * 1000:.0f}–{max(values) * 1000:.0f})"
    )


def bench_one_environment(people: dict[str, Any], token: str, repeat: int) -> None:
    from portal.models import Environment

    env = Environment.objects.get(name=ENVIRONMENT)
    engineer = people["erin"]
    # Two requests per repeat (one per side) and a warm-up pair; nothing is provisioned twice.
    names = [f"pb{token}-e{i:02}" for i in range(repeat + 1)]
    names += [f"pb{token}-p{i:02}" for i in range(repeat + 1)]
    requests = dict(zip(names, approved_requests(people, names), strict=True))

    # Warm both paths once (imports, connections, clients in every process), counting the
    # plain side's AWS calls on the way.
    engine_cycle(requests[names[0]], engineer)
    warm = requests[names[repeat + 1]]
    provision_calls = count_calls(env, lambda: plain_provision(warm, env))
    polled: list[int] = []
    smoke_calls = count_calls(env, lambda: polled.append(plain_smoke(warm, env, "plain-warm")))
    smoke_polls = polled[0]

    engine: list[dict[str, float]] = []
    plain: list[dict[str, float]] = []
    for i in range(1, repeat + 1):
        sides = [
            lambda i=i: engine.append(engine_cycle(requests[names[i]], engineer)),
            lambda i=i: plain.append(
                plain_cycle(requests[names[repeat + 1 + i]], env, f"plain-{i}")
            ),
        ]
        if i % 2 == 0:  # alternate which side goes first, so drift does not favour one
            sides.reverse()
        for side in sides:
            side()

    from onboarding.steps.smoke import SMOKE_POLL_SECONDS, smoke_samples

    files = len(smoke_samples(warm, env))
    p_calls, s_calls = sum(provision_calls.values()), sum(smoke_calls.values())
    e_polls = [e["polls"] for e in engine]
    d_polls = [p["polls"] for p in plain]
    print(
        f"\nProvision + smoke test of {ENVIRONMENT}, one worker, {repeat} runs each side after "
        "a warm-up (a fresh source every time), median (min–max):"
    )
    rows = (
        (
            "provision",
            f"{engine[0]['provision_steps']} steps, {p_calls} AWS calls",
            "provision",
        ),
        (
            "smoke",
            f"{engine[0]['smoke_steps']} steps, {files} files, {s_calls} AWS calls with "
            f"{smoke_polls} polls; polls every {SMOKE_POLL_SECONDS} s, median "
            f"{statistics.median(d_polls):.0f} plain, {statistics.median(e_polls):.0f} engine",
            "smoke",
        ),
        ("both", "provision, then smoke test", "both"),
    )
    ratios = {}
    for label, detail, key in rows:
        base = [p[key] for p in plain]
        executed = [e[f"{key}_exec"] for e in engine]
        clicked = [e[f"{key}_click"] for e in engine]
        med = statistics.median(base)
        ratios[key] = statistics.median(executed) / med
        print(f"  {label}: {detail}")
        print(f"    plain script, same calls            {spread(base)}")
        print(
            f"    engine, first step → finished       {spread(executed)}   "
            f"ratio {statistics.median(executed) / med:4.2f}×"
        )
        print(
            f"    engine, click → finished            {spread(clicked)}   "
            f"ratio {statistics.median(clicked) / med:4.2f}×"
        )
    print(
        f"  AWS calls (plain side): provision {calls_text(provision_calls)}; "
        f"smoke {calls_text(smoke_calls)}"
    )
    steps = engine[0]["provision_steps"]
    overhead = statistics.median(e["provision_exec"] for e in engine) - statistics.median(
        p["provision"] for p in plain
    )
    recheck = recheck_seconds(warm, env)
    print(
        f"  Engine overhead on provision: {overhead * 1000:.0f} ms, {overhead / steps * 1000:.1f} "
        f"ms a step. Each of the {steps} steps first loads the request and rebuilds the plan "
        f"to compare it with the approved one ({recheck * 1000:.1f} ms here, "
        f"{recheck * steps * 1000:.0f} ms a run); the rest, "
        f"{(overhead - recheck * steps) / steps * 1000:.1f} ms a step, is the engine's own "
        "bookkeeping (one transaction a step, audit events)."
    )
    sleeping = statistics.median((p["polls"] - 1) * SMOKE_POLL_SECONDS / p["smoke"] for p in plain)
    if sleeping > 0.5:
        print(
            f"  Note: the smoke test's wait dominates it — {sleeping:.0%} of the plain smoke "
            f"test is sleeping between polls ({SMOKE_POLL_SECONDS} s apart, on both sides), so "
            "its ratio measures the poll grid more than the engine. Provision only: "
            f"{ratios['provision']:.2f}× (target ≤ 1.3×)."
        )
    if e_polls != d_polls:
        print(f"  Polls per run: engine {e_polls}, plain {d_polls}.")


# --- part 2: N sources at once --------------------------------------------------------------------


def paged(
    method: Callable[..., dict], key: str, token_in: str, token_out: str, **kw: Any
) -> Iterator[Any]:
    """Every item of a NextToken-style listing."""
    while True:
        page = method(**kw)
        yield from page.get(key, [])
        if not page.get(token_out):
            return
        kw[token_in] = page[token_out]


def sandbox_counts(plans: list[dict[str, Any]], env: Any, prefix: str) -> dict[str, Any]:
    """What the sandbox holds for the sources named `prefix`…, read from AWS, not from the
    runs: resources are matched by name prefix, so a copy under another name counts too."""
    import json

    from portal import aws

    s3, events = aws.client("s3", env), aws.client("events", env)
    cw, ddb = aws.client("cloudwatch", env), aws.client("dynamodb", env)
    sources = [p["source"] for p in plans]
    buckets = [
        b["Name"]
        for b in s3.list_buckets()["Buckets"]
        if b["Name"].startswith(f"{env.raw_bucket_prefix}{prefix}")
    ]
    rules = [
        r["Name"]
        for r in paged(
            events.list_rules,
            "Rules",
            "NextToken",
            "NextToken",
            NamePrefix=f"etl-s3-events-{prefix}",
        )
    ]
    targets = {rule: len(events.list_targets_by_rule(Rule=rule)["Targets"]) for rule in rules}
    alarms = [
        a["AlarmName"]
        for a in paged(
            cw.describe_alarms,
            "MetricAlarms",
            "NextToken",
            "NextToken",
            AlarmNamePrefix=f"etl-{prefix}",
        )
    ]
    dashboard = plans[0]["dashboard_widget"]["dashboard_name"]
    body = json.loads(cw.get_dashboard(DashboardName=dashboard)["DashboardBody"])
    titles = [str(w.get("properties", {}).get("title", "")) for w in body.get("widgets", [])]
    widgets = {s: sum(t.startswith(f"Source {s}:") for t in titles) for s in sources}
    config_items = list(
        paged(
            ddb.scan,
            "Items",
            "ExclusiveStartKey",
            "LastEvaluatedKey",
            TableName=plans[0]["config_item"]["table"],
            FilterExpression="begins_with(pk, :p) AND sk = :c",
            ExpressionAttributeValues={":p": {"S": f"SOURCE#{prefix}"}, ":c": {"S": "CONFIG"}},
        )
    )
    return {
        "buckets": buckets,
        "buckets_planned": sorted(buckets) == sorted(p["bucket"]["name"] for p in plans),
        "rules": rules,
        "targets": targets,
        "alarms": alarms,
        "widgets": widgets,
        "widgets_total": sum(widgets.values()),
        "config_items": [i["pk"]["S"] for i in config_items],
    }


def warm_workers(stack: Stack, people: dict[str, Any], token: str, concurrency: int) -> None:
    """Have every worker execute a provision run before the clock starts, so its boto3
    clients, assumed role and connections exist, as a long-lived worker's do."""
    from django.db import transaction

    from onboarding.services import rollout_start

    for attempt in range(3):
        count = len(stack.workers) * concurrency
        requests = approved_requests(people, [f"pb{token}-w{attempt}{i}" for i in range(count)])
        before = stack.tasks_done("stop")
        with transaction.atomic():  # enqueued together: each idle worker takes one
            ids = [
                rollout_start(
                    request=r, actor=people["erin"], environment=ENVIRONMENT, action="provision"
                ).pk
                for r in requests
            ]
        for run_id in ids:
            assert wait_terminal(run_id).status == "succeeded"
        after = stack.tasks_done("stop")
        if all(after[name] > before[name] for name in stack.workers):
            return
    print("  (warning: not every worker ran a warm-up provision; the first runs include it)")


def bench_many_sources(
    stack: Stack, people: dict[str, Any], token: str, sources: int, concurrency: int
) -> list[str]:
    """Provision `sources` approved requests at once; returns what failed the checks."""
    from django.db import transaction

    from onboarding.request_state import plan_for
    from onboarding.services import rollout_start
    from portal.models import Environment
    from portal.runs.models import TERMINAL_RUN_STATUSES, Run, Step

    env = Environment.objects.get(name=ENVIRONMENT)
    prefix = f"pb{token}-c"
    requests = approved_requests(people, [f"{prefix}{i:02}" for i in range(sources)])
    plans = [plan_for(r, env) for r in requests]
    before = stack.tasks_done()

    t0 = time.perf_counter()
    with transaction.atomic():  # all enqueued together, when this commits
        ids = [
            rollout_start(
                request=r, actor=people["erin"], environment=ENVIRONMENT, action="provision"
            ).pk
            for r in requests
        ]
    started = time.perf_counter() - t0
    deadline = time.monotonic() + 600
    done = Run.objects.filter(pk__in=ids, status__in=TERMINAL_RUN_STATUSES)
    while done.count() < len(ids):
        if time.monotonic() > deadline:
            raise RuntimeError("the runs did not finish in 600 s")
        time.sleep(0.05)
    total = time.perf_counter() - t0

    runs = list(Run.objects.filter(pk__in=ids))
    succeeded = sum(r.status == "succeeded" for r in runs)
    queued = [(r.finished_at - r.created_at).total_seconds() for r in runs]
    executed = [(r.finished_at - r.started_at).total_seconds() for r in runs if r.started_at]
    again = Step.objects.filter(run__in=ids, attempts__gt=1).count()
    after = stack.tasks_done()
    counts = sandbox_counts(plans, env, prefix)

    workers = ", ".join(f"{name} {after[name] - before[name]}" for name in stack.workers)
    print(
        f"\n{sources} sources provisioned at once in {ENVIRONMENT}, "
        f"{len(stack.workers)} workers × concurrency {concurrency}:"
    )
    print(f"  runs succeeded                             {succeeded} / {sources}")
    print(f"  total, first click → last run finished     {total:7.2f} s")
    print(f"    of which starting the {sources} runs (one commit)  {started:5.2f} s")
    print(
        f"  per run, click → finished                  p50 {percentile(queued, 50):5.2f} s, "
        f"p95 {percentile(queued, 95):5.2f} s, max {max(queued):5.2f} s"
    )
    if executed:
        print(
            f"  per run, first step → finished             p50 {percentile(executed, 50):5.2f} s, "
            f"p95 {percentile(executed, 95):5.2f} s, max {max(executed):5.2f} s"
        )
    print(f"  steps executed more than once              {again}")
    print(f"  tasks per worker                           {workers}")

    doubled = sorted(s for s, n in counts["widgets"].items() if n > 1)
    missing = sorted(s for s, n in counts["widgets"].items() if n == 0)
    one_target = sum(n == 1 for n in counts["targets"].values())
    rows = [
        ("raw buckets", len(counts["buckets"])),
        ("EventBridge rules", len(counts["rules"])),
        ("rules with exactly one target", one_target),
        ("validation-errors alarms", len(counts["alarms"])),
        ("dashboard widgets", counts["widgets_total"]),
        ("sources with a widget", sum(n > 0 for n in counts["widgets"].values())),
        ("config items", len(counts["config_items"])),
    ]
    print(f"  read from the sandbox ({ENVIRONMENT})           expected   found")
    for label, found in rows:
        print(f"    {label:<38} {sources:5d}   {found:5d}")
    print(f"    widgets shown twice or more: {len(doubled)}; sources without one: {len(missing)}")

    problems = []
    if succeeded != sources:
        for r in runs:
            if r.status != "succeeded":
                problems.append(f"run {r.pk} ({r.title}) {r.status}: {r.error}")
    for label, found in rows:
        if found != sources:
            problems.append(f"{label}: expected {sources}, found {found}")
    if not counts["buckets_planned"]:
        problems.append(f"raw buckets are not the planned ones: {sorted(counts['buckets'])}")
    if doubled:
        problems.append(f"widget shown more than once for: {', '.join(doubled)}")
    if missing:
        problems.append(f"no dashboard widget for: {', '.join(missing)}")
    if more := [rule for rule, n in counts["targets"].items() if n != 1]:
        problems.append(f"rules without exactly one target: {', '.join(more)}")
    return problems


# --- main ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="part 1: provision + smoke runs per side, after one warm-up each (default 5)",
    )
    parser.add_argument(
        "--sources",
        type=int,
        default=20,
        help="part 2: approved sources provisioned at once (default 20)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="worker processes in part 2 (default 2; part 1 has one)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=1, help="pool processes per worker (default 1)"
    )
    parser.add_argument(
        "--skip-single", action="store_true", help="skip part 1 (engine against plain script)"
    )
    parser.add_argument("--skip-many", action="store_true", help="skip part 2 (N at once)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary folder (database, logs)"
    )
    args = parser.parse_args()

    stack = ProvisionStack(prefix="onramp-provbench-")
    os.environ.update({k: v for k, v in stack.env.items() if k.startswith(("ONRAMP_", "DJANGO_"))})
    os.environ.pop("PYTEST_VERSION", None)
    problems: list[str] = []
    try:
        stack.start_sandbox()
        import django

        django.setup()
        from django.conf import settings

        from tests.personas import make_persona

        logging.getLogger("kombu.connection").setLevel(logging.ERROR)  # "no hostname" noise
        logging.getLogger("portal.aws").setLevel(logging.WARNING)

        people = {name: make_persona(name) for name in ("rita", "sam", "gina", "erin")}
        token = uuid.uuid4().hex[:4]  # source names of this run: pb<token>-…
        print(
            f"database {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}, "
            f"broker {settings.CELERY_BROKER_URL.split('://')[0]}, sandbox AWS, "
            f"worker concurrency {args.concurrency}; sources pb{token}-…; "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        )
        # Part 1 has one worker process: one engine process against one plain script.
        stack.add_workers(1, args.concurrency)
        if not args.skip_single:
            bench_one_environment(people, token, args.repeat)
        if not args.skip_many:
            stack.add_workers(args.workers - 1, args.concurrency)
            warm_workers(stack, people, token, args.concurrency)
            problems += bench_many_sources(stack, people, token, args.sources, args.concurrency)
        problems += [f"{name} died or logged a traceback" for name in stack.crashed()]
    except Exception as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        stack.stop()
        if problems:
            print("\nFAILED:")
            for problem in problems:
                print(f"  - {problem}")
        if problems or args.keep:
            print(f"\nlogs and database kept in {stack.tmp}")
        else:
            shutil.rmtree(stack.tmp, ignore_errors=True)
    if not problems:
        print("\nall checks passed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
