"""The engine's own cost per step, in-process: runs of no-op steps driven by
`dispatch.advance` in this process, so only the engine's bookkeeping is timed (claim, one
transaction per step with its audit events, release) — no broker, no worker, no AWS.

    .venv/bin/python benchmarks/engine_step_cost.py [--runs 15] [--steps 30]
    DATABASE_URL=postgres://… .venv/bin/python benchmarks/engine_step_cost.py

With no DATABASE_URL it uses a SQLite file in a temporary folder, never the dev database.
Run it on two checkouts at the same time of day to compare engine changes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from harness import ROOT  # noqa: F401 - puts the project on sys.path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    if "DATABASE_URL" not in os.environ:
        os.environ["ONRAMP_VAR_DIR"] = tempfile.mkdtemp(prefix="onramp-step-cost-")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    import tests.runs.worker_steps  # noqa: F401 - the no-op sequence kind
    from portal.runs.api import RunStatus, run_start
    from portal.runs.dispatch import advance
    from portal.runs.models import Run
    from tests.personas import make_persona

    actor = make_persona("erin")
    per_step = []
    for _ in range(args.runs):
        run = run_start(kind="test.sequence", actor=actor, params={"steps": args.steps})
        started = time.perf_counter()
        advance(run.pk)
        per_step.append((time.perf_counter() - started) / args.steps)
        assert Run.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED
    print(f"database {connection.vendor}, {args.runs} runs of {args.steps} no-op steps")
    print(
        f"  engine cost per step: median {statistics.median(per_step) * 1000:.2f} ms, "
        f"min {min(per_step) * 1000:.2f} ms, max {max(per_step) * 1000:.2f} ms"
    )


if __name__ == "__main__":
    main()
