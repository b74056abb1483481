"""Hostile samples: each is generated in a temporary directory (or as a lazy stream) and must
get a clear rejection or a flag from ``validate_sample``: never acceptance, never an exception,
and never more reading or memory than the limits allow."""

from __future__ import annotations

import gzip
import io
import json
import resource
import zlib
from collections.abc import Callable
from pathlib import Path

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from onboarding.validation import (
    Limits,
    SampleFormat,
    check_sample_files,
    safe_filename,
    sample_passes,
    validate_sample,
)

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["id"],
    "properties": {
        "id": {"type": "string"},
        "amount": {"type": "number"},
        "name": {"type": "string"},
        "note": {"type": "string"},
    },
}
LIMITS = Limits()
MiB = 1024 * 1024
GiB = 1024 * MiB


class LazyStream(io.RawIOBase):
    """`size` bytes of `prefix` + `fill` repeated, made on demand (never held whole)."""

    def __init__(self, prefix: bytes, fill: bytes, size: int) -> None:
        self.prefix, self.fill, self.size, self.pos = prefix, fill, size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.size - self.pos)
        if n <= 0:
            return 0
        start = self.pos
        head = self.prefix[start : start + n]
        body = (self.fill * (n // len(self.fill) + 2))[: n - len(head)]
        buffer[:n] = head + body
        self.pos += n
        return n


# Each case: (tmp_path) -> (stream, declared format, words the rejection or a flag must hold)
Case = Callable[[Path], tuple[object, SampleFormat | None, str]]


def _parquet_fixed_width_bomb(tmp: Path):
    # 9.5 million rows x 15 int64 columns of zeros: ~1.1 GB decoded, a few KB on disk.
    path = tmp / "bomb.parquet"
    zeros = pa.array([0] * 500_000, pa.int64())
    table = pa.table({f"c{i}": zeros for i in range(15)})
    with pq.ParquetWriter(path, table.schema, compression="zstd") as writer:
        for _ in range(19):
            writer.write_table(table)
    return path.open("rb"), None, "decompress"


def _parquet_string_bomb(tmp: Path):
    # One 1 MiB string repeated in 2,000 rows: 2 GB of text from a dictionary of one value.
    path = tmp / "strings.parquet"
    column = pa.DictionaryArray.from_arrays(pa.array([0] * 2000, pa.int32()), pa.array(["x" * MiB]))
    pq.write_table(pa.table({"id": column}), path, compression="zstd")
    return path.open("rb"), SampleFormat.PARQUET, "decompress"


def _avro_deflate_bomb(tmp: Path):
    # One record whose 200 MiB string deflates to ~200 KB, written block by block by hand.
    schema = {"type": "record", "name": "R", "fields": [{"name": "id", "type": "string"}]}
    header = io.BytesIO()
    fastavro.writer(header, fastavro.parse_schema(schema), [], codec="deflate")
    head = header.getvalue()
    sync = head[-16:]
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    size = 200 * MiB
    body = [deflate.compress(_zigzag(size))]
    chunk = b"a" * MiB
    body += [deflate.compress(chunk) for _ in range(size // MiB)]
    body.append(deflate.flush())
    data = b"".join(body)
    path = tmp / "bomb.avro"
    path.write_bytes(head + _zigzag(1) + _zigzag(len(data)) + data + sync)
    return path.open("rb"), SampleFormat.AVRO, "decompress"


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _avro_null_array(tmp: Path):
    schema = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "id", "type": {"type": "array", "items": "null"}}],
    }
    path = tmp / "nulls.avro"
    with path.open("wb") as out:
        fastavro.writer(out, fastavro.parse_schema(schema), [{"id": [None] * 10}])
    return path.open("rb"), None, "zero-size"


def _json_deep(tmp: Path):
    path = tmp / "deep.json"
    path.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    return path.open("rb"), SampleFormat.JSON, "nested more than 64"


def _ndjson_deep(tmp: Path):
    path = tmp / "deep.ndjson"
    path.write_bytes(b'{"id": "1"}\n' + b'{"a":' * 100_000 + b"1" + b"}" * 100_000 + b"\n")
    return path.open("rb"), SampleFormat.NDJSON, "nested more than 64"


def _ndjson_huge_int(tmp: Path):
    path = tmp / "bigint.ndjson"
    path.write_bytes(b'{"id": "1", "amount": ' + b"9" * 5000 + b"}\n")
    return path.open("rb"), SampleFormat.NDJSON, "more than 100 digits"


def _csv_huge_int(tmp: Path):
    path = tmp / "bigint.csv"
    path.write_bytes(b"id,amount\n1," + b"9" * 5000 + b"\n")
    return path.open("rb"), SampleFormat.CSV, "more than 100 digits"


def _json_huge_int(tmp: Path):
    path = tmp / "bigint.json"
    path.write_bytes(b'[{"id": "1", "amount": ' + b"9" * 5000 + b"}]")
    return path.open("rb"), SampleFormat.JSON, "more than 100 digits"


def _invalid_utf8(tmp: Path):
    path = tmp / "latin1.ndjson"
    path.write_bytes('{"id": "1", "name": "Jos\u00e9"}\n'.encode("latin-1"))
    return path.open("rb"), SampleFormat.NDJSON, "not valid UTF-8"


def _invalid_utf8_late(tmp: Path):
    path = tmp / "late.csv"
    path.write_bytes(b"id,name\n" + b"1,ok\n" * 30_000 + b"2,\xc3\x28\n")
    return path.open("rb"), SampleFormat.CSV, "Line 30002 is not valid UTF-8"


def _one_gb_line_ndjson(tmp: Path):
    return LazyStream(b'{"id": "', b"x", GiB), SampleFormat.NDJSON, "longer than the limit"


def _one_gb_line_undeclared(tmp: Path):
    return LazyStream(b'{"id": "', b"x", GiB), None, "larger than the limit"


def _one_gb_line_csv(tmp: Path):
    return LazyStream(b"id,name\n", b"y", GiB), SampleFormat.CSV, "longer than the limit"


def _parquet_declared_csv(tmp: Path):
    path = tmp / "data.csv"
    pq.write_table(pa.table({"id": ["1"]}), path)
    return path.open("rb"), SampleFormat.CSV, "declared as CSV but its content is Parquet"


def _csv_declared_avro(tmp: Path):
    path = tmp / "data.avro"
    path.write_bytes(b"id,name\n1,a\n")
    return path.open("rb"), SampleFormat.AVRO, "declared as Avro but its content is CSV"


def _fake_parquet_magic(tmp: Path):
    path = tmp / "fake.parquet"
    path.write_bytes(b"PAR1" + b"id,name\n1,a\n" * 10)
    return path.open("rb"), SampleFormat.PARQUET, "not a readable Parquet file"


def _csv_formulas(tmp: Path):
    path = tmp / "formulas.csv"
    path.write_bytes(
        b"id,name,amount\n"
        b'1,"=HYPERLINK(""http://evil.example"",""x"")",1\n'
        b"2,ok,=1+2\n"
        b"3,@SUM(A1:A9),3\n"
    )
    return path.open("rb"), SampleFormat.CSV, "CSV formula cells in rows 1, 3 (column 'name')"


def _gzip_disguised(tmp: Path):
    path = tmp / "events.ndjson"
    path.write_bytes(gzip.compress(b'{"id": "1"}\n' * 1000))
    return path.open("rb"), SampleFormat.NDJSON, "gzip-compressed"


def _empty(tmp: Path):
    path = tmp / "empty.csv"
    path.write_bytes(b"")
    return path.open("rb"), SampleFormat.CSV, "empty"


def _truncated_parquet(tmp: Path):
    path = tmp / "cut.parquet"
    whole = io.BytesIO()
    pq.write_table(pa.table({"id": [str(i) for i in range(10_000)]}), whole)
    path.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    return path.open("rb"), SampleFormat.PARQUET, "not a readable Parquet file"


def _truncated_avro(tmp: Path):
    schema = {"type": "record", "name": "R", "fields": [{"name": "id", "type": "string"}]}
    whole = io.BytesIO()
    fastavro.writer(whole, fastavro.parse_schema(schema), [{"id": str(i)} for i in range(5000)])
    path = tmp / "cut.avro"
    path.write_bytes(whole.getvalue()[: len(whole.getvalue()) - 100])
    return path.open("rb"), SampleFormat.AVRO, "cut off"


def _random_binary(tmp: Path):
    path = tmp / "noise.bin"
    path.write_bytes(bytes(range(256)) * 64)
    return path.open("rb"), None, "not valid UTF-8"


def _oversized_file(tmp: Path):
    row = b"1," + b"a" * 200 + b"\n"
    return LazyStream(b"id,name\n", row, 2 * GiB), SampleFormat.CSV, "larger than the limit"


def _csv_wide_header(tmp: Path):
    path = tmp / "wide.csv"
    path.write_bytes(b",".join(b"c%d" % i for i in range(500_000)) + b"\n" + b"," * 499_999 + b"\n")
    return path.open("rb"), SampleFormat.CSV, "more than the limit of 10,000"


CASES: dict[str, Case] = {
    "parquet decompression bomb (fixed-width zeros)": _parquet_fixed_width_bomb,
    "parquet decompression bomb (dictionary string)": _parquet_string_bomb,
    "avro deflate bomb": _avro_deflate_bomb,
    "avro array of nulls": _avro_null_array,
    "json nested 100,000 deep": _json_deep,
    "ndjson nested 100,000 deep": _ndjson_deep,
    "ndjson 5,000-digit integer": _ndjson_huge_int,
    "csv 5,000-digit integer": _csv_huge_int,
    "json 5,000-digit integer": _json_huge_int,
    "invalid utf-8": _invalid_utf8,
    "invalid utf-8 after the head": _invalid_utf8_late,
    "1 GB single line (ndjson)": _one_gb_line_ndjson,
    "1 GB single line (undeclared)": _one_gb_line_undeclared,
    "1 GB single line (csv)": _one_gb_line_csv,
    "parquet magic declared csv": _parquet_declared_csv,
    "csv declared avro": _csv_declared_avro,
    "parquet magic on csv content": _fake_parquet_magic,
    "csv formula cells": _csv_formulas,
    "csv header of 500,000 columns": _csv_wide_header,
    "gzip in disguise": _gzip_disguised,
    "empty file": _empty,
    "truncated parquet": _truncated_parquet,
    "truncated avro": _truncated_avro,
    "random binary": _random_binary,
    "2 GB file": _oversized_file,
}


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class HostileSampleTests:
    @pytest.mark.parametrize("make", CASES.values(), ids=CASES.keys())
    def test_it_refuses_or_flags_without_crashing(self, tmp_path, make):
        stream, declared, says = make(tmp_path)
        rss_before = _peak_rss()
        try:
            report = validate_sample(stream, schema=SCHEMA, declared_format=declared, limits=LIMITS)
        finally:
            stream.close()
        assert not sample_passes(report, expected_malformed=False)
        assert report.rejected or report.flags
        assert says in report.rejected + " ".join(report.flags), report
        json.dumps(report.to_dict())
        # Bounded work: never more than the file limit plus one read buffer, and memory
        # growth far below what the file would expand to.
        assert report.bytes_read <= LIMITS.max_file_bytes + 2 * MiB
        assert report.records_checked <= 1_000_000
        assert _peak_rss() - rss_before < 512 * MiB

    def test_it_refuses_too_many_files_in_one_request(self):
        names = [f"sample-{i}.ndjson" for i in range(LIMITS.max_files + 1)]
        assert check_sample_files(names, limits=LIMITS) == [
            f"{len(names)} files were sent at once; at most {LIMITS.max_files} are accepted in one "
            "request."
        ]

    @pytest.mark.parametrize(
        "name",
        ["../../../etc/passwd", "/var/lib/onramp/secret", "..\\..\\windows\\win.ini", "a/./../b"],
    )
    def test_it_strips_path_traversal_from_names(self, name):
        cleaned = safe_filename(name)
        assert "/" not in cleaned and "\\" not in cleaned and not cleaned.startswith(".")

    def test_it_shortens_over_long_names(self):
        assert len(safe_filename("x" * 100_000 + ".csv")) == 120
