"""Soak the embedded broker: 10,000 pings through a real Celery worker, none may be lost.

    .venv/bin/python benchmarks/broker_soak.py [--tasks 10000] [--paced 1000 --rate 100]

Starts `celery -A portal worker -c 2` as a subprocess on the embedded broker (onrampfs://)
in a temporary ONRAMP_VAR_DIR / ONRAMP_BROKER_DIR, waits until it runs a first ping, then

1. soak: publishes --tasks `portal.ping` tasks as fast as one producer can, while the worker
   consumes (with --prefill: all of them before the worker starts, which measures how fast
   the worker drains a deep queue);
2. paced: publishes --paced more at --rate per second (latency with no backlog);

and waits until every ping ran. Each ping appends "<id> <sent_at> <ran_at> <pid>" to the
file named by ONRAMP_PING_LOG, so no result backend is needed. Reports publish rate,
throughput (first publish to last run), drain rate (first run to last run), enqueue-to-start
p50/p95/max, lost and duplicated tasks, and whether the worker survived. Exits non-zero if a
task was lost or the worker died.

--broker-url redis://127.0.0.1:6379/13 runs the same soak on Redis, for comparison (use a
database nothing else uses; tasks are counted by id, so leftovers in it do not skew counts).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

Pings = dict[str, list[tuple[float, float, int]]]


@dataclass
class Phase:
    name: str
    ids: list[str]
    started: float
    published: float


def read_pings(path: Path) -> Pings:
    runs: Pings = {}
    if not path.exists():
        return runs
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 4 or parts[1] == "-":
            continue
        runs.setdefault(parts[0], []).append((float(parts[1]), float(parts[2]), int(parts[3])))
    return runs


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def publish(app: Any, name: str, count: int, rate: float = 0.0) -> Phase:
    """Publish `count` pings over one connection, at `rate` per second (0: flat out)."""
    ids: list[str] = []
    with app.producer_or_acquire() as producer:
        started = time.time()
        for index in range(count):
            if rate:
                delay = started + index / rate - time.time()
                if delay > 0:
                    time.sleep(delay)
            result = app.send_task(
                "portal.ping", kwargs={"sent_at": time.time()}, producer=producer
            )
            ids.append(result.id)
    phase = Phase(name, ids, started, time.time())
    print(f"{name}: published {count} in {phase.published - started:.1f} s", flush=True)
    return phase


class Worker:
    def __init__(self, env: dict[str, str], concurrency: int, log: Path) -> None:
        self.log = log
        self._handle = log.open("wb")
        self.proc = subprocess.Popen(
            [
                *[sys.executable, "-m", "celery", "-A", "portal", "worker", "-l", "info"],
                *["-c", str(concurrency), "-n", f"soak-{uuid.uuid4().hex[:6]}@%h"],
            ],
            cwd=ROOT,
            env=env,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._handle.close()


def wait_for(ids: set[str], ping_log: Path, worker: Worker, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ids <= read_pings(ping_log).keys():
            return True
        if not worker.alive():
            return False
        time.sleep(0.2)
    return False


def report(phases: list[Phase], runs: Pings) -> bool:
    """Print one row per phase; True when every task of every phase ran."""
    print()
    print(
        f"{'phase':<14}{'tasks':>7}{'ran':>7}{'lost':>6}{'dupes':>6}{'publish/s':>11}"
        f"{'tasks/s':>9}{'drain/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}"
    )
    complete = True
    for phase in phases:
        ran = [runs[i][0] for i in phase.ids if i in runs]
        lost = len(phase.ids) - len(ran)
        dupes = sum(len(runs[i]) - 1 for i in phase.ids if i in runs)
        latencies = [(ran_at - sent_at) * 1000 for sent_at, ran_at, _ in ran]
        first = min((ran_at for _, ran_at, _ in ran), default=phase.started)
        last = max((ran_at for _, ran_at, _ in ran), default=phase.started)
        publish_rate = len(phase.ids) / max(phase.published - phase.started, 1e-9)
        throughput = len(ran) / max(last - phase.started, 1e-9)
        drain = len(ran) / max(last - first, 1e-9)
        print(
            f"{phase.name:<14}{len(phase.ids):>7}{len(ran):>7}{lost:>6}{dupes:>6}"
            f"{publish_rate:>11.0f}{throughput:>9.0f}{drain:>9.0f}"
            f"{percentile(latencies, 50):>9.1f}{percentile(latencies, 95):>9.1f}"
            f"{max(latencies, default=float('nan')):>9.1f}"
        )
        complete = complete and lost == 0
    return complete


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--prefill", action="store_true", help="publish before the worker starts")
    parser.add_argument("--paced", type=int, default=1_000, help="0 skips the paced phase")
    parser.add_argument("--rate", type=float, default=100.0, help="paced tasks per second")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait per phase")
    parser.add_argument("--broker-url", default="onrampfs://")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="onramp-soak-"))
    ping_log = tmp / "pings.log"
    ignored = {"DATABASE_URL", "CELERY_BROKER_URL", "PYTEST_VERSION"}
    env = {k: v for k, v in os.environ.items() if k not in ignored}
    env.update(
        ONRAMP_VAR_DIR=str(tmp / "var"),
        ONRAMP_BROKER_DIR=str(tmp / "broker"),
        ONRAMP_PING_LOG=str(ping_log),
        CELERY_BROKER_URL=args.broker_url,
        DJANGO_SETTINGS_MODULE="portal.settings",
        PYTHONUNBUFFERED="1",
    )
    os.environ.clear()
    os.environ.update(env)  # this process publishes through the same settings
    sys.path.insert(0, str(ROOT))
    from portal.celery import app  # after the environment is set

    print(f"broker {args.broker_url}, folder {tmp}")
    print(f"worker: celery -A portal worker -c {args.concurrency}, log {tmp / 'worker.log'}")
    phases: list[Phase] = []
    if args.prefill:
        phases.append(publish(app, "soak prefill", args.tasks))
    worker = Worker(env, args.concurrency, tmp / "worker.log")
    try:
        if args.prefill:
            wait_for(set(phases[0].ids), ping_log, worker, args.timeout)
        else:
            # One ping proves the worker consumes before the clock starts.
            warm = publish(app, "warm-up", 1)
            if not wait_for(set(warm.ids), ping_log, worker, 120):
                print("the worker never ran the warm-up ping")
            else:
                phases.append(publish(app, "soak", args.tasks))
                wait_for(set(phases[-1].ids), ping_log, worker, args.timeout)
        if args.paced and worker.alive():
            phases.append(publish(app, f"paced {args.rate:g}/s", args.paced, args.rate))
            wait_for(set(phases[-1].ids), ping_log, worker, args.timeout)
    finally:
        survived = worker.alive()
        worker.stop()

    complete = report(phases, read_pings(ping_log))
    log_text = worker.log.read_text(errors="replace")
    broken = tmp / "broker" / "broken"
    broken_count = len(list(broken.iterdir())) if broken.exists() else 0
    print(f"worker survived: {'yes' if survived else f'NO (exit code {worker.proc.returncode})'}")
    print(f"unreadable broker messages (broker/broken/): {broken_count}")
    print(f"tracebacks in the worker log: {'yes' if 'Traceback' in log_text else 'none'}")
    if not survived:
        print("--- last lines of the worker log ---")
        print("\n".join(log_text.splitlines()[-40:]))
    failed = not (complete and survived and phases)
    if args.keep or failed:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print("RESULT:", "FAIL" if failed else "OK")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
