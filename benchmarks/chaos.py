"""Chaos: kill Onramp's processes at random moments while runs go, and count what survives.

    .venv/bin/python benchmarks/chaos.py [--seconds 180] [--kills 12] [--sources 2] [--seed 1]
    .venv/bin/python benchmarks/chaos.py --redis redis://127.0.0.1:6379/12 \
        --postgres postgres://postgres@127.0.0.1:5432/onramp_chaos

It starts `onramp.py run` (embedded: SQLite, file broker, sandbox; the launcher supervises
and restarts what dies) in a temporary folder on free ports, with the engine's timings
compressed. Then, for `--seconds`, it keeps runs going — an environment check, and per
source a provision → teardown or a provision → smoke test cycle in dev — while it kills, at random
moments: one pool process of the worker, every pool process (the jam), the whole worker,
beat, the web server, the sandbox. After that it lets the runs settle and prints:

- kills made, by kind;
- runs started, and how they ended: succeeded, failed (with their messages), stuck (not
  finished when the settle time ran out — must be 0);
- duplicate AWS resources: KMS keys made for one alias, dashboard widgets for one source
  (must be 0);
- steps executed more than once (a worker died mid-step and another ran it again);
- time from a kill to the runs moving again (the next step event after it): p50, p95, max.

In the PostgreSQL mode (`--postgres`, `--redis`: the local servers, which it restarts — never
point it at servers others use) it also restarts Redis (its queued messages are lost: it
keeps nothing on disk) and PostgreSQL (`pg_ctlcluster … restart -m immediate`, a crash for
every connection). It exits 1 when a run is stuck or a resource is duplicated.
tests/test_chaos.py runs a small version in CI; README's reliability section has the
full figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import ROOT, free_port, percentile

KINDS = ("one pool process", "every pool process", "worker", "beat", "web", "sandbox")
SERVER_KINDS = ("redis", "postgres")
REDIS_START = (
    "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no "
    "--dir /var/lib/redis --logfile /var/log/redis/ci.log"
)
FAST = {
    "RUNS_LEASE_SECONDS": "6",
    "RUNS_HEARTBEAT_SECONDS": "1",
    "RUNS_REAPER_INTERVAL_SECONDS": "1",
    "RUNS_ENQUEUE_GRACE_SECONDS": "3",
    "RUNS_STALL_SECONDS": "8",
    "RUNS_BACKOFF_BASE_SECONDS": "0.5",
    "RUNS_BACKOFF_MAX_SECONDS": "2",
    "ONRAMP_HEALTH_GRACE": "5",
    "ONRAMP_RESTART_LIMIT": "1000",
    "ONRAMP_RESTART_BACKOFF": "0.5",
    "ONRAMP_SANDBOX_SAVE_SECONDS": "1",
    # It SIGKILLs the sandbox on purpose: keep every write it acknowledged, as AWS does.
    "ONRAMP_SANDBOX_DURABLE_WRITES": "true",
}
PRODUCTION = ("DATABASE_URL", "CELERY_BROKER_URL", "AWS_ENDPOINT_URL", "ONRAMP_BROKER_DIR")


@dataclass
class Figures:
    kills: Counter[str] = field(default_factory=Counter)
    kill_times: list[float] = field(default_factory=list)
    runs: list[int] = field(default_factory=list)


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


class Portal:
    """`onramp.py run` in a temporary folder."""

    def __init__(self, servers: dict[str, str] | None = None) -> None:
        self.var = Path(tempfile.mkdtemp(prefix="onramp-chaos-"))
        self.web_port, self.sandbox_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if k not in PRODUCTION}
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env.update(FAST)
        env.update(
            ONRAMP_VAR_DIR=str(self.var),
            ONRAMP_WEB_PORT=str(self.web_port),
            ONRAMP_SANDBOX_PORT=str(self.sandbox_port),
            ONRAMP_SKIP_INSTALL="1",
            NO_COLOR="1",
        )
        env.update(servers or {})
        self.env = env
        self.log = (self.var / "launcher.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "onramp.py", "run"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the launcher exited:\n{self.output()[-3000:]}")
            with contextlib.suppress(OSError):
                url = f"http://127.0.0.1:{self.web_port}/healthz"
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200 and "ready." in self.output():
                        return
            time.sleep(0.5)
        raise RuntimeError(f"not ready after {timeout} s:\n{self.output()[-3000:]}")

    def output(self) -> str:
        return (self.var / "launcher.log").read_text(errors="replace")

    def pids(self) -> dict[str, int]:
        with contextlib.suppress(OSError, ValueError):
            return json.loads((self.var / "onramp-run.json").read_text())["children"]
        return {}

    def kill(self, kind: str, rng: random.Random) -> bool:
        if kind == "redis":
            subprocess.run(["redis-cli", "-p", "6379", "shutdown", "nosave"], check=False)
            time.sleep(1)
            subprocess.run(["sh", "-c", REDIS_START], check=False)
            return True
        if kind == "postgres":
            version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]
            command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"]
            subprocess.run([*command, "-m", "immediate"], check=False, capture_output=True)
            return True
        pids = self.pids()
        name = {"one pool process": "worker", "every pool process": "worker"}.get(kind, kind)
        pid = pids.get(name)
        if not pid:
            return False  # restarting right now
        if kind.endswith("pool process"):
            pool = children(pid)
            if not pool:
                return False
            victims = [rng.choice(pool)] if kind == "one pool process" else pool
            for victim in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
            return True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        return True

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def setup_django(portal: Portal) -> None:
    """This process works on the launcher's database, broker and sandbox (embedded, even
    when the caller's environment points at PostgreSQL and Redis)."""
    for name in PRODUCTION:
        os.environ.pop(name, None)
    servers = ("DATABASE_URL", "CELERY_BROKER_URL")
    os.environ.update({k: v for k, v in portal.env.items() if k in servers})
    os.environ.update({k: v for k, v in portal.env.items() if k.startswith(("ONRAMP_", "RUNS_"))})
    os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    import django

    django.setup()


# The cycles sources go round in dev, alternately: a smoke test leaves files in the bucket,
# which a teardown rightly refuses to delete, so teardowns get sources of their own.
CYCLES = (("provision", "teardown"), ("provision", "smoke"))


def keep_runs_going(requests: list[Any], engineer: Any, figures: Figures) -> None:
    """Start what is not running: an environment check, and the next rollout step per
    source in dev (provision → smoke test → teardown → provision…; a failed step again)."""
    from onboarding import services
    from onboarding.selectors import ROLLOUT_ACTIONS
    from portal.errors import ApplicationError
    from portal.kinds import environment_check
    from portal.runs.api import ACTIVE_RUN_STATUSES, Run, run_start, runs_of

    if not Run.objects.filter(kind=environment_check.key, status__in=ACTIVE_RUN_STATUSES):
        run = run_start(kind=environment_check, actor=engineer, params={"environments": ["dev"]})
        figures.runs.append(run.pk)
    action_of = {kind.key: action for action, (kind, _) in ROLLOUT_ACTIONS.items()}
    for i, request in enumerate(requests):
        cycle = CYCLES[i % len(CYCLES)]
        rollout = runs_of(request, *(ROLLOUT_ACTIONS[a][0] for a in cycle))
        if rollout.filter(status__in=ACTIVE_RUN_STATUSES).exists():
            continue
        last = rollout.last()
        if last is None:
            action = "provision"
        elif last.status != "succeeded":
            action = action_of[last.kind]
        else:
            action = cycle[(cycle.index(action_of[last.kind]) + 1) % len(cycle)]
        with contextlib.suppress(ApplicationError):
            run = services.rollout_start(
                request=request, actor=engineer, environment="dev", action=action
            )
            figures.runs.append(run.pk)


def duplicates() -> dict[str, int]:
    """KMS keys made for one alias, and dashboard widgets for one source, beyond the first."""
    from portal import aws
    from portal.models import Environment

    found: Counter[str] = Counter()
    for env in Environment.objects.all():
        kms = aws.client("kms", env)
        aliases: Counter[str] = Counter()
        for page in kms.get_paginator("list_keys").paginate():
            for key in page["Keys"]:
                meta = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
                if meta.get("KeyState") == "PendingDeletion":
                    continue
                tags = kms.list_resource_tags(KeyId=key["KeyId"]).get("Tags", [])
                for tag in tags:
                    if tag["TagKey"] == aws.KMS_ALIAS_TAG:
                        aliases[tag["TagValue"]] += 1
        found["KMS keys"] += sum(n - 1 for n in aliases.values() if n > 1)
        cw = aws.client("cloudwatch", env)
        for entry in cw.list_dashboards().get("DashboardEntries", []):
            body = json.loads(
                cw.get_dashboard(DashboardName=entry["DashboardName"])["DashboardBody"]
            )
            titles = Counter(
                w.get("properties", {}).get("title", "") for w in body.get("widgets", [])
            )
            found["dashboard widgets"] += sum(n - 1 for t, n in titles.items() if t and n > 1)
    return dict(found)


def recovery_seconds(kill_times: list[float]) -> list[float]:
    """For each kill, seconds until the next step event in the audit trail."""
    from portal.models import AuditEvent

    events = sorted(
        e.timestamp()
        for e in AuditEvent.objects.filter(action__startswith="step.").values_list(
            "created_at", flat=True
        )
    )
    out = []
    for at in kill_times:
        later = next((e for e in events if e > at), None)
        if later is not None:
            out.append(later - at)
    return out


def patiently(read: Any, tries: int = 60) -> Any:
    """A read that waits out a database restart (a new connection each try)."""
    from django.db import DatabaseError, connection

    for _ in range(tries - 1):
        try:
            return read()
        except DatabaseError:
            connection.close()
            time.sleep(1)
    return read()


def fresh_database(url: str) -> None:
    """Drop and create the chaos database (it must be one this script may own)."""
    name = url.rsplit("/", 1)[1]
    if not name.startswith("onramp_chaos"):
        raise SystemExit("--postgres must name a database called onramp_chaos…")
    base = url.rsplit("/", 1)[0] + "/postgres"
    for sql in (f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'):
        subprocess.run(["psql", base, "-qc", sql], check=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--sources", type=int, default=2)
    parser.add_argument("--settle", type=float, default=150)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--postgres", default="", help="a database this script may create")
    parser.add_argument("--redis", default="", help="a Redis URL on the local server")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    servers = {}
    kinds = KINDS
    if args.postgres or args.redis:
        if not (args.postgres and args.redis):
            parser.error("the PostgreSQL mode needs both --postgres and --redis")
        servers = {"DATABASE_URL": args.postgres, "CELERY_BROKER_URL": args.redis}
        kinds = KINDS + SERVER_KINDS
        fresh_database(args.postgres)
    portal = Portal(servers)
    figures = Figures()
    try:
        portal.wait_ready()
        setup_django(portal)
        from django.db import connection
        from provision_bench import approved_requests

        from portal.runs.api import TERMINAL_RUN_STATUSES, Run
        from tests.personas import make_persona

        people = {n: make_persona(n) for n in ("rita", "sam", "gina", "erin")}
        requests = approved_requests(people, [f"chaos-{i}" for i in range(args.sources)])
        kill_at = sorted(rng.uniform(5, args.seconds) for _ in range(args.kills))
        started = time.monotonic()
        while time.monotonic() - started < args.seconds:
            try:
                keep_runs_going(requests, people["erin"], figures)
            except Exception:
                connection.close()
            while kill_at and time.monotonic() - started >= kill_at[0]:
                kill_at.pop(0)
                kind = rng.choice(kinds)
                if portal.kill(kind, rng):
                    figures.kills[kind] += 1
                    figures.kill_times.append(time.time())
            time.sleep(0.5)
        deadline = time.monotonic() + args.settle
        while time.monotonic() < deadline:
            if (
                not Run.objects.filter(pk__in=figures.runs)
                .exclude(status__in=TERMINAL_RUN_STATUSES)
                .exists()
            ):
                break
            time.sleep(1)
        runs = list(Run.objects.filter(pk__in=figures.runs))
        ended = Counter(r.status for r in runs)
        stuck = [r for r in runs if r.status not in TERMINAL_RUN_STATUSES]
        failures = Counter(r.error[:160] for r in runs if r.status == "failed")
        from portal.models import AuditEvent

        again = AuditEvent.objects.filter(action="step.restarted").count()
        dupes = duplicates()
        recovery = recovery_seconds(figures.kill_times)
    finally:
        portal.stop()
    mode = "PostgreSQL + Redis" if servers else "embedded"
    print(f"chaos: {args.seconds:.0f} s, seed {args.seed}, {args.sources} sources, {mode}")
    print(f"  kills made: {sum(figures.kills.values())} ({dict(figures.kills)})")
    print(f"  runs started: {len(runs)}")
    print(
        f"  ended: succeeded {ended['succeeded']}, failed {ended['failed']}, "
        f"cancelled {ended['cancelled']}, stuck {len(stuck)}"
    )
    for message, n in failures.items():
        print(f"    failed ×{n}: {message}")
    print(f"  duplicate AWS resources: {sum(dupes.values())} {dupes}")
    print(f"  steps executed more than once: {again}")
    if recovery:
        print(
            "  kill → runs moving again: "
            f"p50 {percentile(recovery, 50):.1f} s, p95 {percentile(recovery, 95):.1f} s, "
            f"max {max(recovery):.1f} s ({len(recovery)} kills)"
        )
    print(f"  restarts by the launcher: {portal.output().count('restarting it')}")
    for run in stuck:
        print(f"  STUCK: run {run.pk} {run.kind} {run.status}")
    return 1 if stuck or sum(dupes.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
