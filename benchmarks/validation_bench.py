"""Benchmark sample validation (onboarding.validation) against parsing alone.

For each sample it measures, each phase in a fresh subprocess so peak memory is its own:

* parse-only: NDJSON with ``orjson.loads`` per line, CSV with ``csv.DictReader``, Parquet with
  ``iter_batches().to_pylist()`` (rows as dicts), all reading the same file;
* for NDJSON, the reference point of the issue: orjson + jsonschema-rs ``is_valid`` per line,
  with no error details and none of the limits;
* ``validate_sample`` as configured by default: NDJSON and Parquet through the columnar
  screen (``onboarding/validation/screen.py``), error details on;
* for NDJSON and Parquet, ``validate_sample`` with the screen off (the record path every
  record takes without it); for NDJSON with one process and with a helper process
  (``--workers 1,2``).

and prints MB/s, records/s, peak RSS (the helper's separately), CPU seconds (this process
plus the helper; all threads: the screen parses on Arrow's thread pool) and validation/parse-only,
by wall time (the target) and by CPU time (steadier on a shared machine; for the screen and for
workers=2 it shows the cost, not the speed-up). The best of --repeat
runs (by wall time) is shown; the phases of a sample take turns, one run each per round.
Targets (from the issue): NDJSON validation with error details at >= 50% of parse-only
throughput, and peak memory that does not grow from 100 MB to 1 GB of input.

The samples are realistic events (uuid ids, RFC 3339 timestamps, emails, enums, nested
objects and arrays, ~1% invalid records), generated into a temporary folder and removed after.

Usage: .venv/bin/python benchmarks/validation_bench.py [--sizes 100,1000] [--formats
ndjson,csv,parquet] [--workers 1,2] [--repeat 1] [--dir DIR]

``--formats unsure,tiny`` measures where the screen cannot help (see ``adverse()``).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MB = 1024 * 1024
POOL = 20_000
COUNTRIES = ["GB", "US", "DE", "FR", "NL", "SE", "IE"]
EVENTS = ["create", "update", "delete"]

# The fields both schemas describe the same way.
EVENT_FIELDS = {
    "id": {"type": "string", "format": "uuid"},
    "timestamp": {"type": "string", "format": "date-time"},
    "event_type": {"enum": EVENTS},
    "sequence": {"type": "integer", "minimum": 1},
    "amount": {"type": "number", "minimum": 0},
}

NDJSON_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["id", "timestamp", "event_type", "sequence", "customer", "items"],
    "additionalProperties": False,
    "properties": {
        **EVENT_FIELDS,
        "customer": {
            "type": "object",
            "required": ["email"],
            "properties": {
                "email": {"type": "string", "format": "email"},
                "name": {"type": "string", "maxLength": 200},
                "address": {
                    "type": "object",
                    "properties": {
                        "street": {"type": "string"},
                        "city": {"type": "string"},
                        "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                        "country": {"enum": COUNTRIES},
                    },
                },
            },
        },
        "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["sku", "qty"],
                "properties": {
                    "sku": {"type": "string", "pattern": "^SKU-[0-9]{4}$"},
                    "qty": {"type": "integer", "minimum": 1},
                    "price": {"type": "number", "minimum": 0},
                },
            },
        },
        "active": {"type": "boolean"},
        "note": {"type": ["string", "null"]},
    },
}

CSV_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["id", "timestamp", "event_type", "sequence", "email"],
    "properties": {
        **EVENT_FIELDS,
        "email": {"type": "string", "format": "email"},
        "name": {"type": "string", "maxLength": 200},
        "street": {"type": "string"},
        "city": {"type": "string"},
        "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
        "country": {"enum": COUNTRIES},
        "active": {"type": "boolean"},
        "note": {"type": ["string", "null"]},
    },
}


def make_record(rng: random.Random, i: int) -> dict:
    when = dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=rng.randint(0, 30_000_000))
    record = {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "timestamp": when.isoformat().replace("+00:00", "Z"),
        "event_type": rng.choice(EVENTS),
        "sequence": i,
        "amount": round(rng.uniform(0, 1000), 2),
        "customer": {
            "email": f"user{rng.randint(1, 99_999)}@example.com",
            "name": f"Customer {i}",
            "address": {
                "street": f"{rng.randint(1, 999)} High Street",
                "city": "London",
                "zip": f"{rng.randint(10_000, 99_999)}",
                "country": rng.choice(COUNTRIES),
            },
        },
        "tags": rng.sample(["a", "b", "c", "d", "e", "f"], rng.randint(0, 4)),
        "items": [
            {
                "sku": f"SKU-{rng.randint(1000, 9999)}",
                "qty": rng.randint(1, 5),
                "price": round(rng.uniform(1, 100), 2),
            }
            for _ in range(rng.randint(1, 3))
        ],
        "active": rng.random() < 0.5,
        "note": None if rng.random() < 0.7 else "call back",
    }
    if rng.random() < 0.01:  # ~1% invalid, in different ways
        kind = rng.randint(0, 4)
        if kind == 0:
            record["timestamp"] = "yesterday"
        elif kind == 1:
            record["customer"]["email"] = "not-an-email"
        elif kind == 2:
            record["event_type"] = "upsert"
        elif kind == 3:
            record["items"][0]["qty"] = 0
        else:
            del record["id"]
    return record


def flat(record: dict) -> dict:
    customer = record["customer"]
    address = customer["address"]
    return {
        "id": record.get("id", ""),
        "timestamp": record["timestamp"],
        "event_type": record["event_type"],
        "sequence": record["sequence"],
        "amount": record["amount"],
        "email": customer["email"],
        "name": customer["name"],
        "street": address["street"],
        "city": address["city"],
        "zip": address["zip"],
        "country": address["country"],
        "active": "true" if record["active"] else "false",
        "note": record["note"] or "",
    }


def generate(folder: Path, fmt: str, megabytes: int) -> tuple[Path, dict]:
    import orjson

    rng = random.Random(7)
    pool = [make_record(rng, i) for i in range(1, POOL + 1)]
    target = megabytes * MB
    if fmt == "ndjson":
        path = folder / f"sample-{megabytes}.ndjson"
        lines = [orjson.dumps(r) + b"\n" for r in pool]
        with path.open("wb") as out:
            written = 0
            while written < target:
                block = b"".join(lines)
                out.write(block[: target - written] if written + len(block) > target else block)
                written += min(len(block), target - written)
        _trim_to_line(path)
        return path, NDJSON_SCHEMA
    if fmt == "csv":
        path = folder / f"sample-{megabytes}.csv"
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=list(flat(pool[0])))
            writer.writeheader()
            while out.tell() < target:
                writer.writerows(flat(r) for r in pool)
        return path, CSV_SCHEMA
    import pyarrow as pa
    import pyarrow.parquet as pq

    # As many records as the NDJSON sample of the same nominal size holds.
    path = folder / f"sample-{megabytes}.parquet"
    per_record = sum(len(orjson.dumps(r)) + 1 for r in pool) / len(pool)
    rows = int(target / per_record)
    table = pa.Table.from_pylist(pool)
    with pq.ParquetWriter(path, table.schema) as writer:
        done = 0
        while done < rows:
            part = table.slice(0, min(len(table), rows - done))
            writer.write_table(part, row_group_size=50_000)
            done += len(part)
    return path, NDJSON_SCHEMA


def adverse(folder: Path, kind: str, megabytes: int) -> tuple[Path, dict]:
    """Samples the screen cannot help with. "unsure": the NDJSON sample against a schema with
    an optional field no record has (missing or null? every row goes to the validator).
    "tiny": `{}` lines, more per chunk than the screen takes (all invalid: fields missing)."""
    if kind == "unsure":
        path, schema = generate(folder, "ndjson", megabytes)
        properties = {**schema["properties"], "channel": {"type": "string"}}
        return path, {**schema, "properties": properties}
    path = folder / f"tiny-{megabytes}.ndjson"
    path.write_bytes(b"{}\n" * (megabytes * MB // 3))
    return path, NDJSON_SCHEMA


def _trim_to_line(path: Path) -> None:
    with path.open("r+b") as f:
        f.seek(max(f.seek(0, 2) - 4096, 0))
        tail = f.read()
        cut = tail.rfind(b"\n")
        f.truncate(f.tell() - len(tail) + cut + 1)


# --- phases, each run in its own process --------------------------------------------------


def phase(kind: str, fmt: str, path: str, schema_path: str, workers: int) -> dict:
    # What a phase needs is imported before the clock starts: importing onboarding.validation
    # (~60 ms) or pyarrow is a worker's one-off start-up cost, not throughput.
    import orjson

    if kind == "rs-only":
        import jsonschema_rs
    if kind in ("validate", "record"):
        from onboarding.validation import Limits, validate_sample
    if fmt == "parquet":
        import pyarrow.parquet as pq
    schema = json.loads(Path(schema_path).read_text())
    started = time.perf_counter()
    cpu_started = time.process_time()
    records = invalid = 0
    if kind == "parse":
        if fmt == "ndjson":
            with Path(path).open("rb") as f:
                for line in f:
                    orjson.loads(line)
                    records += 1
        elif fmt == "csv":
            with Path(path).open(newline="", encoding="utf-8") as f:
                for _ in csv.DictReader(f):
                    records += 1
        else:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=4096, use_threads=False):
                records += len(batch.to_pylist())
    elif kind == "rs-only":
        # The reference point: orjson + jsonschema-rs is_valid per line, formats asserted, no
        # error details, no limits or hostile-input checks.
        is_valid = jsonschema_rs.validator_for(schema, validate_formats=True).is_valid
        with Path(path).open("rb") as f:
            for line in f:
                records += 1
                invalid += not is_valid(orjson.loads(line))
    else:
        limits = Limits(
            max_file_bytes=4 * 1024 * MB,
            max_seconds=3600,
            max_records=100_000_000,
            max_decompressed_bytes=16 * 1024 * MB,
            workers=workers,
            screen=kind == "validate",
        )
        with Path(path).open("rb") as f:
            report = validate_sample(f, schema=schema, limits=limits)
        if report.rejected:
            raise SystemExit(f"rejected: {report.rejected}")
        records, invalid = report.records_checked, report.invalid_count
        assert len(report.errors) == min(invalid, 20)
    seconds = time.perf_counter() - started
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "seconds": seconds,
        "cpu": time.process_time() - cpu_started,
        "helper_cpu": children.ru_utime + children.ru_stime,
        "records": records,
        "invalid": invalid,
        "rss_mb": _peak_rss_mb(),
        # The helper's own peak (ru_maxrss of waited-for children; for a child forked from
        # this process it can include what this process held when it forked).
        "helper_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the
    parent that forked it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_phases(
    phases: list[tuple[str, int]], fmt: str, path: Path, schema_path: Path, repeat: int
) -> list[dict]:
    """The best run (by wall time) of each (kind, workers) phase. The phases take turns, one
    run each per round, so a burst of load from other work on the machine spreads over all
    of them instead of landing on every run of one phase."""
    best: list[dict | None] = [None] * len(phases)
    for _ in range(max(repeat, 1)):
        for i, (kind, workers) in enumerate(phases):
            out = subprocess.run(
                [sys.executable, __file__, "--phase", kind, "--format", fmt, "--file", str(path),
                 "--schema", str(schema_path), "--workers", str(workers)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            result = json.loads(out.stdout.strip().splitlines()[-1])
            current = best[i]
            if current is None or result["seconds"] < current["seconds"]:
                best[i] = result
    return [b for b in best if b is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100", help="NDJSON sizes in MB, e.g. 100,1000")
    parser.add_argument("--formats", default="ndjson,csv,parquet")
    parser.add_argument("--workers", default="1,2", help="validate_sample workers to measure")
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs per phase")
    parser.add_argument("--dir", help="generate samples here (kept) instead of a temp folder")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--format", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--schema", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, args.format, args.file, args.schema, int(args.workers))))
        return

    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="validation-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    plan = [("ndjson", s) for s in sizes if "ndjson" in args.formats]
    plan += [(f, 100) for f in ("csv", "parquet") if f in args.formats]
    # Where the screen cannot help: NDJSON whose every row it is unsure of, and tiny records.
    plan += [(f, 100 if f == "unsure" else 30) for f in ("unsure", "tiny") if f in args.formats]
    rows = []
    try:
        for label, size in plan:
            fmt = "ndjson" if label in ("unsure", "tiny") else label
            path, schema = (
                adverse(folder, label, size) if fmt != label else generate(folder, fmt, size)
            )
            schema_path = folder / f"{label}-schema.json"
            schema_path.write_text(json.dumps(schema))
            file_mb = path.stat().st_size / MB
            phases = [("parse", 1)]
            names = ["parse only"]
            if label == "ndjson":
                phases.append(("rs-only", 1))
                names.append("orjson+jsonschema-rs")
            phases.append(("validate", 1))
            names.append("validate" + (" (screen)" if fmt != "csv" else ""))
            # NDJSON and Parquet have the screen, and only NDJSON has helper processes.
            for w in {"ndjson": workers, "parquet": [1]}.get(fmt, []) if label == fmt else [1]:
                phases.append(("record", w))
                names.append(f"record path, workers={w}")
            results = run_phases(phases, fmt, path, schema_path, args.repeat)
            parse = results[0]
            for name, result in zip(names, results, strict=True):
                rows.append((label, file_mb, name, result, None if result is parse else parse))
            if not args.dir:
                path.unlink()
    finally:
        if not args.dir:
            shutil.rmtree(folder, ignore_errors=True)
    columns = ["sample", "MB", "phase", "s", "MB/s", "records/s", "invalid", "RSS MB", "helper"]
    columns += ["cpu s", "cpu vs parse"]
    widths = [8, 7, 26, 7, 7, 10, 7, 7, 7, 7, 12]
    header = " ".join(
        c.ljust(w) if i in (0, 2) else c.rjust(w)
        for i, (c, w) in enumerate(zip(columns, widths, strict=True))
    )
    header += " wall vs parse"
    print(header)
    print("-" * len(header))
    for fmt, file_mb, name, r, parse in rows:
        ratio = f"{parse['seconds'] / r['seconds']:.0%}" if parse else ""
        cpu = r["cpu"] + r["helper_cpu"]
        cpu_ratio = f"{parse['cpu'] / cpu:.0%}" if parse else ""
        helper = f"{r['helper_rss_mb']:.0f}" if r["helper_rss_mb"] else ""
        cells = [
            f"{fmt:8}",
            f"{file_mb:7.0f}",
            f"{name:26}",
            f"{r['seconds']:7.2f}",
            f"{file_mb / r['seconds']:7.1f}",
            f"{r['records'] / r['seconds']:10.0f}",
            f"{r['invalid']:7}",
            f"{r['rss_mb']:7.0f}",
            f"{helper:>7}",
            f"{cpu:7.2f}",
            f"{cpu_ratio:>12}",
            f"{ratio:>13}",
        ]
        print(" ".join(cells))


if __name__ == "__main__":
    main()
