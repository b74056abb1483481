"""Sample validation (onboarding.validation): schema checks, every format's report, the
pass rule, format detection, schema inference and file names."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
from pathlib import Path

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from onboarding.validation import (
    Limits,
    RecordError,
    SampleFormat,
    SampleReport,
    check_sample_files,
    check_schema,
    detect_format,
    infer_schema,
    safe_filename,
    sample_passes,
    schema_dialect,
    validate_sample,
)

DRAFT7 = "http://json-schema.org/draft-07/schema#"
DRAFT2020 = "https://json-schema.org/draft/2020-12/schema"

EVENT_SCHEMA = {
    "$schema": DRAFT7,
    "type": "object",
    "required": ["id", "timestamp", "event_type"],
    "properties": {
        "id": {"type": "string"},
        "timestamp": {"type": "string", "format": "date-time"},
        "event_type": {"type": "string", "enum": ["create", "update", "delete"]},
        "count": {"type": "integer", "minimum": 0},
        "price": {"type": "number"},
        "active": {"type": "boolean"},
        "note": {"type": ["string", "null"]},
        "customer": {
            "type": "object",
            "properties": {
                "email": {"type": "string", "format": "email"},
                "address": {
                    "type": "object",
                    "properties": {"zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                },
            },
        },
        "tags": {"type": "array", "items": {"type": "string"}},
    },
}


def event(i: int, **changes) -> dict:
    record = {
        "id": f"evt-{i}",
        "timestamp": "2024-05-01T12:00:00Z",
        "event_type": "create",
        "count": i,
        "customer": {"email": f"user{i}@example.com", "address": {"zip": "12345"}},
        "tags": ["a"],
    }
    record.update(changes)
    return record


def ndjson(records) -> io.BytesIO:
    return io.BytesIO(b"".join(json.dumps(r).encode() + b"\n" for r in records))


def validate(data: bytes | io.BytesIO, schema=EVENT_SCHEMA, **kwargs) -> SampleReport:
    stream = data if isinstance(data, io.BytesIO) else io.BytesIO(data)
    return validate_sample(stream, schema=schema, **kwargs)


def parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def avro_bytes(schema: dict, records: list, codec: str = "deflate") -> bytes:
    sink = io.BytesIO()
    fastavro.writer(sink, fastavro.parse_schema(schema), records, codec=codec)
    return sink.getvalue()


class CheckSchemaTests:
    def test_it_accepts_a_draft_07_schema(self):
        schema, problems = check_schema(json.dumps(EVENT_SCHEMA))
        assert problems == []
        assert schema == EVENT_SCHEMA
        assert schema_dialect(schema) == "draft-07"

    def test_it_accepts_a_2020_12_schema(self):
        text = json.dumps({"$schema": DRAFT2020, "type": "object", "prefixItems": [{}]})
        schema, problems = check_schema(text.encode())
        assert problems == []
        assert schema_dialect(schema) == "2020-12"

    def test_it_treats_a_schema_without_dollar_schema_as_2020_12(self):
        schema, problems = check_schema('{"type": "object"}')
        assert problems == []
        assert schema_dialect(schema) == "2020-12"

    def test_it_refuses_other_dialects(self):
        _, problems = check_schema('{"$schema": "http://json-schema.org/draft-04/schema#"}')
        assert [p.path for p in problems] == ["$.$schema"]
        assert "draft-07" in problems[0].message

    def test_it_reports_meta_schema_violations_with_their_paths(self):
        text = json.dumps(
            {"$schema": DRAFT7, "type": "strin", "properties": {"a": {"minLength": -1}}}
        )
        schema, problems = check_schema(text)
        assert schema is None
        paths = {p.path for p in problems}
        assert "$.type" in paths
        assert "$.properties.a.minLength" in paths

    @pytest.mark.parametrize(
        "ref",
        [
            "http://example.com/schema.json",
            "https://example.com/schema.json#/definitions/a",
            "file:///etc/passwd",
            "urn:example:schema",
            "//evil.example/schema.json",
            "other.json",
            "https://json-schema.org/draft/2020-12/schema",
        ],
    )
    def test_it_refuses_references_that_leave_the_document(self, ref):
        text = json.dumps({"$schema": DRAFT2020, "properties": {"a": {"$ref": ref}}})
        schema, problems = check_schema(text)
        assert schema is None
        assert problems[0].path == "$.properties.a.$ref"
        assert "outside this schema" in problems[0].message

    def test_it_accepts_local_references_pointers_ids_and_anchors(self):
        schema = {
            "$schema": DRAFT2020,
            "$id": "https://onramp.example/events.json",
            "$defs": {
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                "named": {"$anchor": "named", "type": "string"},
                "money": {"$id": "money.json", "type": "number"},
            },
            "properties": {
                "zip": {"$ref": "#/$defs/zip"},
                "name": {"$ref": "#named"},
                "price": {"$ref": "money.json"},
                "self": {"$ref": "https://onramp.example/events.json#/$defs/zip"},
                "$ref": {"type": "string"},  # a property called $ref is not a reference
            },
        }
        assert check_schema(json.dumps(schema)) == (schema, [])

    def test_it_reports_a_pointer_to_nothing(self):
        _, problems = check_schema('{"properties": {"a": {"$ref": "#/$defs/missing"}}}')
        assert problems and "cannot be compiled" in problems[0].message

    @pytest.mark.parametrize(
        ("text", "says"),
        [
            ("", "empty"),
            ("{not json", "not valid JSON"),
            ("[1, 2]", "JSON object"),
            ("[" * 200 + "]" * 200, "nested"),
            ('{"description": "' + "x" * (1024 * 1024) + '"}', "larger"),
        ],
    )
    def test_it_explains_a_schema_it_cannot_read(self, text, says):
        schema, problems = check_schema(text)
        assert schema is None
        assert says in problems[0].message


class DetectFormatTests:
    @pytest.mark.parametrize(
        ("head", "expected"),
        [
            (b"PAR1\x15\x04", SampleFormat.PARQUET),
            (b"Obj\x01\x04\x14avro", SampleFormat.AVRO),
            (b'{"a": 1}\n{"a": 2}\n', SampleFormat.NDJSON),
            (b"[1]\n[2]\n", SampleFormat.NDJSON),
            (b'[\n  {"a": 1},\n  {"a": 2}\n]\n', SampleFormat.JSON),
            (b'{\n  "a": 1\n}\n', SampleFormat.JSON),
            (b'{"a": 1}', SampleFormat.JSON),
            (b'\xef\xbb\xbf[{"a": 1}]', SampleFormat.JSON),
            (b"id,name\n1,Ann\n", SampleFormat.CSV),
            ("name\nJos\u00e9\n".encode(), SampleFormat.CSV),
            ("name\nJos\u00e9".encode()[:-1], SampleFormat.CSV),  # cut inside a character
            (b"\x1f\x8b\x08\x00", None),  # gzip
            (b"PK\x03\x04", None),  # zip
            (b"id,name\n1,\xff\xfe\n", None),  # invalid UTF-8
            (b"a\x00b", None),
            (b"", None),
            (b"   \n\n", None),
        ],
    )
    def test_it_detects_the_format_from_content_only(self, head, expected):
        assert detect_format(head) == expected


class NdjsonTests:
    def test_it_reports_record_numbers_paths_and_messages(self):
        records = [
            event(1),
            event(2, timestamp="yesterday", customer={"email": "nobody", "address": {"zip": "1"}}),
            event(3),
        ]
        report = validate(ndjson(records).getvalue() + b"not json\n")
        assert report.format is SampleFormat.NDJSON
        assert report.rejected == ""
        assert report.records_checked == 4
        assert report.invalid_count == 2
        assert report.errors == [
            RecordError(2, "$.timestamp", '"yesterday" is not a "date-time"'),
            RecordError(2, "$.customer.email", '"nobody" is not a "email"'),
            RecordError(2, "$.customer.address.zip", '"1" does not match "^[0-9]{5}$"'),
            RecordError(4, "$", report.errors[3].message),
        ]
        assert report.errors[3].message.startswith("invalid JSON")
        assert report.bytes_read == len(ndjson(records).getvalue()) + 9

    def test_it_keeps_the_first_twenty_errors_and_counts_every_invalid_record(self):
        records = [event(i, event_type="upsert") for i in range(1, 51)]
        report = validate(ndjson(records))
        assert report.invalid_count == 50
        assert len(report.errors) == 20
        assert [e.record for e in report.errors] == list(range(1, 21))
        assert report.errors[0] == RecordError(
            1, "$.event_type", '"upsert" is not one of "create", "update" or "delete"'
        )

    def test_it_skips_blank_lines_and_accepts_crlf(self):
        report = validate(
            b'\r\n{"id":"1","timestamp":"2024-01-01T00:00:00Z","event_type":"create"}\r\n\n'
        )
        assert (report.records_checked, report.invalid_count, report.rejected) == (1, 0, "")

    def test_it_reports_a_missing_required_property(self):
        record = event(1)
        del record["id"]
        report = validate(ndjson([record]))
        assert report.errors == [RecordError(1, "$", '"id" is a required property')]

    @pytest.mark.parametrize(
        ("value", "valid"),
        [
            ("2024-02-29T23:59:59+01:00", True),
            ("2024-02-30T10:00:00Z", False),
            ("2024-01-01 10:00:00", False),
            ("2024-01-01T10:00:00", False),
        ],
    )
    def test_it_enforces_date_time_in_both_dialects(self, value, valid):
        for dialect in (DRAFT7, DRAFT2020):
            schema = {"$schema": dialect, "properties": {"t": {"format": "date-time"}}}
            report = validate(ndjson([{"t": value}]), schema=schema)
            assert (report.invalid_count == 0) is valid, (dialect, report.errors)

    @pytest.mark.parametrize(
        ("value", "valid"),
        [
            ("ann@example.com", True),
            ("ann.example.com", False),
            ("ann@", False),
            ("a b@x.io", False),
        ],
    )
    def test_it_enforces_email_in_both_dialects(self, value, valid):
        for dialect in (DRAFT7, DRAFT2020):
            schema = {"$schema": dialect, "properties": {"e": {"format": "email"}}}
            report = validate(ndjson([{"e": value}]), schema=schema)
            assert (report.invalid_count == 0) is valid, (dialect, report.errors)

    def test_it_honours_the_dialect(self):
        # draft-07 ignores keywords beside $ref; 2020-12 applies them.
        body = {
            "definitions": {"n": {"type": "integer"}},
            "properties": {"n": {"$ref": "#/definitions/n", "maximum": 1}},
        }
        draft7 = validate(b'{"n": 5}\n', schema={"$schema": DRAFT7, **body})
        draft2020 = validate(b'{"n": 5}\n', schema={"$schema": DRAFT2020, **body})
        assert (draft7.records_checked, draft7.invalid_count) == (1, 0)
        assert (draft2020.records_checked, draft2020.invalid_count) == (1, 1)

    def test_it_keeps_integers_beyond_64_bits_exact(self):
        schema = {"properties": {"n": {"type": "integer", "maximum": 10**24}}}
        report = validate(
            b'{"n": 1000000000000000000000000}\n{"n": 1000000000000000000000001}\n', schema=schema
        )
        assert report.records_checked == 2
        assert [e.record for e in report.errors] == [2]

    def test_it_keeps_a_negative_integer_just_below_64_bits_exact(self):
        # 19 digits, one below the smallest 64-bit integer: orjson alone would round it.
        schema = {"properties": {"n": {"type": "integer", "maximum": -9223372036854775809}}}
        report = validate(
            b'{"n": -9223372036854775809}\n{"n": -9223372036854775808}\n', schema=schema
        )
        assert report.records_checked == 2
        assert [e.record for e in report.errors] == [2]

    def test_it_refuses_an_integer_with_too_many_digits(self):
        report = validate(b'{"id": "1"}\n{"n": ' + b"7" * 101 + b"}\n")
        assert report.rejected == "Line 2 has an integer with more than 100 digits."

    def test_it_refuses_a_line_longer_than_the_limit_without_reading_it_all(self):
        limits = Limits(max_line_bytes=64 * 1024)
        data = b'{"a": "' + b"x" * (10 * 1024 * 1024) + b'"}\n'
        report = validate(data, limits=limits, declared_format=SampleFormat.NDJSON)
        assert report.rejected == "Line 1 is longer than the limit of 64 KiB."
        assert report.bytes_read <= 128 * 1024

    def test_it_refuses_invalid_utf8_after_the_head(self):
        good = ndjson([event(i) for i in range(1, 2001)]).getvalue()
        report = validate(good + b'{"id": "\xff"}\n', declared_format=SampleFormat.NDJSON)
        assert report.rejected == "Line 2001 is not valid UTF-8 (at its byte 9)."

    def test_it_refuses_a_record_nested_deeper_than_the_limit(self):
        deep = b'{"a":' * 65 + b"1" + b"}" * 65
        report = validate(ndjson([event(1)]).getvalue() + deep + b"\n")
        assert report.rejected == "Line 2 is nested more than 64 levels deep."

    def test_it_refuses_files_over_the_size_limit(self):
        report = validate(
            ndjson([event(i) for i in range(100)]), limits=Limits(max_file_bytes=4096)
        )
        assert report.rejected == "The file is larger than the limit of 4 KiB."
        assert report.bytes_read <= 4096 + 64 * 1024

    def test_it_refuses_more_records_than_the_limit(self):
        report = validate(ndjson([event(i) for i in range(3000)]), limits=Limits(max_records=2000))
        assert report.rejected == "The file holds more than 2,000 records."

    def test_it_stops_when_it_takes_too_long(self):
        report = validate(ndjson([event(i) for i in range(5000)]), limits=Limits(max_seconds=1e-9))
        assert report.rejected.startswith("Validation took longer than the limit of 1e-09 seconds")

    def test_a_helper_process_gives_the_same_report_and_is_stopped(self):
        records = [
            event(i, event_type="upsert" if i % 997 == 0 else "create") for i in range(1, 80001)
        ]
        data = ndjson(records).getvalue()
        assert len(data) > 14 * 1024 * 1024
        before = set(_children())  # e.g. the session's sandbox server
        alone = validate(data, limits=Limits(workers=1))
        helped = validate(data, limits=Limits(workers=2))
        assert alone.invalid_count == 80
        assert helped.to_dict() | {"duration_seconds": 0} == alone.to_dict() | {
            "duration_seconds": 0
        }
        assert set(_children()) - before == set()

    def test_a_helper_process_reports_the_same_rejection(self):
        records = [event(i) for i in range(1, 60001)]
        data = ndjson(records).getvalue() + b'{"n": ' + b"9" * 200 + b"}\n"
        alone = validate(data, limits=Limits(workers=1))
        helped = validate(data, limits=Limits(workers=2))
        assert alone.rejected == "Line 60001 has an integer with more than 100 digits."
        assert helped.rejected == alone.rejected
        assert helped.records_checked == alone.records_checked == 60000


def _children() -> list[int]:
    me = os.getpid()
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


class JsonDocumentTests:
    def test_it_validates_each_element_of_an_array(self):
        data = json.dumps([event(1), event(2, count=-1), event(3)], indent=2).encode()
        report = validate(data)
        assert report.format is SampleFormat.JSON
        assert (report.records_checked, report.invalid_count) == (3, 1)
        assert report.errors == [RecordError(2, "$.count", "-1 is less than the minimum of 0")]

    def test_it_validates_one_object(self):
        report = validate(json.dumps(event(1, tags=[1])).encode())
        assert (report.records_checked, report.invalid_count) == (1, 1)
        assert report.errors[0].path == "$.tags[0]"

    def test_it_handles_strings_with_brackets_and_escapes(self):
        tricky = event(1, note='he said "}]{[" \\ and left')
        report = validate(json.dumps([tricky, event(2)]).encode())
        assert (report.records_checked, report.invalid_count, report.rejected) == (2, 0, "")

    def test_it_counts_an_unparseable_element_as_an_invalid_record(self):
        good = b'{"id": "1", "timestamp": "2024-01-01T00:00:00Z", "event_type": "create"}'
        report = validate(b"[" + good + b', {"id": tru}]')
        assert (report.records_checked, report.invalid_count) == (2, 1)
        assert report.errors[0].record == 2
        assert report.errors[0].message.startswith("invalid JSON")

    @pytest.mark.parametrize(
        ("data", "says"),
        [
            (b'[{"a": 1}, {"a": 2', "cut off: it ends inside record 2"),
            (b'[{"a": 1}] trailing', "malformed at byte 12"),
            (b'[{"a": 1} {"a": 2}]', "expected , or ]"),
        ],
    )
    def test_it_refuses_a_broken_document(self, data, says):
        report = validate(data, declared_format=SampleFormat.JSON)
        assert says in report.rejected

    def test_an_empty_array_has_no_records_and_does_not_pass(self):
        report = validate(b"[]")
        assert (report.records_checked, report.rejected) == (0, "")
        assert not sample_passes(report, expected_malformed=False)


class CsvTests:
    SCHEMA = {
        "$schema": DRAFT2020,
        "type": "object",
        "required": ["id", "count"],
        "properties": {
            "id": {"type": "string"},
            "count": {"type": "integer"},
            "price": {"type": ["number", "null"]},
            "active": {"type": "boolean"},
            "when": {"$ref": "#/$defs/when"},
        },
        "$defs": {"when": {"type": "string", "format": "date"}},
    }

    def test_it_coerces_cells_by_the_schema_types(self):
        data = (
            b"id,count,price,active,when\n"
            b"007,12,3.5,TRUE,2024-01-31\n"
            b"008,-3,,false,2024-02-01\n"
            b'"multi\nline",1e3,x,yes,2024-02-30\n'
            b"010,,1,true,2024-03-01\n"
        )
        report = validate(data, schema=self.SCHEMA)
        assert report.format is SampleFormat.CSV
        assert (report.records_checked, report.invalid_count) == (4, 2)
        assert report.errors == [
            RecordError(3, "$.count", '"1e3" is not of type "integer"'),
            RecordError(3, "$.price", '"x" is not of types "null", "number"'),
            RecordError(3, "$.active", '"yes" is not of type "boolean"'),
            RecordError(3, "$.when", '"2024-02-30" is not a "date"'),
            RecordError(4, "$", '"count" is a required property'),
        ]

    def test_it_flags_formula_cells_per_column(self):
        data = b"id,count,price\n=cmd|' /C calc'!A0,1,2\nb,2,-3\n@SUM(A1),3,+4\nd,4,\t5\n"
        report = validate(data, schema=self.SCHEMA)
        assert report.flags == [
            "CSV formula cells in rows 1, 3 (column 'id')",
            "CSV formula cells in row 4 (column 'price')",
        ]
        assert report.invalid_count == 1  # the tab-prefixed price is not a number

    def test_it_counts_a_row_of_the_wrong_width_as_invalid(self):
        report = validate(b"id,count\na,1\nb,2,3\n", schema=self.SCHEMA)
        assert report.errors == [RecordError(2, "$", "the row has 3 cells but the header has 2")]

    @pytest.mark.parametrize(
        ("data", "says"),
        [
            (b"id,,count\n1,2,3\n", "no name for column 2"),
            (b"id,id\n1,2\n", "repeats the column name 'id'"),
            (b"id,count\n" + b"a,1\n" * 20000 + b"\xff,3\n", "Line 20002 is not valid UTF-8"),
        ],
    )
    def test_it_refuses_a_file_it_cannot_read(self, data, says):
        report = validate(data, schema=self.SCHEMA, declared_format=SampleFormat.CSV)
        assert says in report.rejected

    def test_it_strips_a_byte_order_mark(self):
        report = validate(b"\xef\xbb\xbfid,count\na,1\n", schema=self.SCHEMA)
        assert (report.records_checked, report.invalid_count) == (1, 0)


class ParquetTests:
    def test_it_validates_rows_with_nested_paths_and_timestamps(self):
        table = pa.table(
            {
                "id": ["a", "b", "c"],
                "timestamp": pa.array(
                    [dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC)] * 3, pa.timestamp("ms", tz="UTC")
                ),
                "event_type": ["create", "remove", "update"],
                "customer": [
                    {"email": "a@example.com", "address": {"zip": "12345"}},
                    {"email": "b@example.com", "address": {"zip": "12345"}},
                    {"email": "c@example", "address": {"zip": "1234"}},
                ],
            }
        )
        report = validate(parquet_bytes(table))
        assert report.format is SampleFormat.PARQUET
        assert (report.records_checked, report.invalid_count) == (3, 2)
        assert [(e.record, e.path) for e in report.errors] == [
            (2, "$.event_type"),
            (3, "$.customer.address.zip"),
        ]
        assert report.bytes_read == len(parquet_bytes(table))

    def test_it_refuses_a_truncated_file(self):
        data = parquet_bytes(pa.table({"id": [str(i) for i in range(1000)]}))
        report = validate(data[: len(data) // 2], declared_format=SampleFormat.PARQUET)
        assert report.rejected.startswith("The file is not a readable Parquet file")


class AvroTests:
    SCHEMA = {
        "type": "record",
        "name": "Event",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "event_type", "type": "string"},
            {"name": "count", "type": ["null", "long"]},
        ],
    }

    def records(self):
        when = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
        return [
            {"id": "1", "timestamp": when, "event_type": "create", "count": 1},
            {"id": "2", "timestamp": when, "event_type": "create", "count": -5},
            {"id": "3", "timestamp": when, "event_type": "merge", "count": None},
        ]

    @pytest.mark.parametrize("codec", ["null", "deflate", "bzip2", "xz"])
    def test_it_validates_records_of_every_supported_codec(self, codec):
        schema = {
            **EVENT_SCHEMA,
            "properties": {
                **EVENT_SCHEMA["properties"],
                "count": {"type": ["integer", "null"], "minimum": 0},
            },
        }
        report = validate(avro_bytes(self.SCHEMA, self.records(), codec), schema=schema)
        assert report.format is SampleFormat.AVRO
        assert (report.records_checked, report.invalid_count) == (3, 2)
        assert [(e.record, e.path) for e in report.errors] == [(2, "$.count"), (3, "$.event_type")]

    def test_it_refuses_a_codec_it_does_not_read(self):
        data = avro_bytes(self.SCHEMA, self.records(), "null").replace(
            b"\x08null", b"\x0csnappy", 1
        )
        report = validate(data)
        assert "codec 'snappy' is not supported" in report.rejected

    def test_it_refuses_a_truncated_file(self):
        data = avro_bytes(self.SCHEMA, self.records() * 50)
        report = validate(data[:-40])
        assert report.rejected == "The Avro file is cut off inside block 1."


class FormatMismatchTests:
    @pytest.mark.parametrize(
        ("data", "declared", "says"),
        [
            (
                b"PAR1" + b"\x00" * 20,
                SampleFormat.CSV,
                "declared as CSV but its content is Parquet",
            ),
            (
                b"id,count\n1,2\n",
                SampleFormat.PARQUET,
                "declared as Parquet but its content is CSV",
            ),
            (
                b'{"a": 1}\n{"a": 2}\n',
                SampleFormat.JSON,
                "declared as JSON but its content is NDJSON",
            ),
            (
                b'[\n{"a": 1}\n]\n',
                SampleFormat.NDJSON,
                "declared as NDJSON but its content is JSON",
            ),
        ],
    )
    def test_it_refuses_content_that_disagrees_with_the_declared_format(self, data, declared, says):
        report = validate(data, declared_format=declared)
        assert says in report.rejected

    def test_one_json_object_on_one_line_is_fine_as_ndjson(self):
        report = validate(json.dumps(event(1)).encode(), declared_format=SampleFormat.NDJSON)
        assert (report.format, report.records_checked, report.rejected) == (
            SampleFormat.NDJSON,
            1,
            "",
        )


class SamplePassesTests:
    @pytest.mark.parametrize(
        ("rejected", "checked", "invalid", "malformed", "passes"),
        [
            ("", 10, 0, False, True),
            ("", 10, 1, False, False),
            ("", 10, 0, True, False),
            ("", 10, 3, True, True),
            ("", 0, 0, False, False),
            ("", 0, 0, True, False),
            ("The file is empty.", 0, 0, False, False),
            ("The file is empty.", 5, 5, True, False),
        ],
    )
    def test_it_applies_the_expected_malformed_rule(
        self, rejected, checked, invalid, malformed, passes
    ):
        report = SampleReport(
            format=SampleFormat.CSV,
            records_checked=checked,
            invalid_count=invalid,
            rejected=rejected,
        )
        assert sample_passes(report, expected_malformed=malformed) is passes


class ReportTests:
    def test_it_round_trips_through_json(self):
        report = validate(ndjson([event(1), event(2, event_type="x")]))
        data = json.loads(json.dumps(report.to_dict()))
        again = SampleReport.from_dict(data)
        assert again.format is SampleFormat.NDJSON
        assert again.errors == report.errors
        assert again.to_dict() == report.to_dict()

    def test_limits_come_from_settings(self, settings):
        settings.ONBOARDING_SAMPLE_MAX_FILE_BYTES = 1234
        settings.ONBOARDING_SAMPLE_MAX_SECONDS = 5
        limits = Limits.from_settings()
        assert (limits.max_file_bytes, limits.max_seconds, limits.max_depth) == (1234, 5.0, 64)

    def test_limits_refuse_nonsense(self):
        with pytest.raises(ValueError, match="max_depth"):
            Limits(max_depth=0)


class InferSchemaTests:
    def test_an_inferred_schema_validates_the_samples_it_came_from(self):
        records = [
            event(i, event_type=["create", "update", "delete"][i % 3], note=None if i % 2 else "n")
            for i in range(1, 31)
        ]
        for record in records[::2]:
            del record["tags"]
        nd = ndjson(records).getvalue()
        csv_data = b"id,amount,when,ok,zip\n" + b"".join(
            f"r{i},{i * 1.5},2024-01-{i:02d},{'true' if i % 2 else 'false'},0{i:04d}\n".encode()
            for i in range(1, 21)
        )
        table = pa.table({"id": [f"p{i}" for i in range(10)], "n": list(range(10))})
        samples = [nd, csv_data, parquet_bytes(table)]
        for sample in samples:
            schema = infer_schema([io.BytesIO(sample)])
            checked, problems = check_schema(json.dumps(schema))
            assert problems == []
            report = validate_sample(io.BytesIO(sample), schema=checked)
            assert (report.rejected, report.invalid_count) == ("", 0), report.errors
            assert report.records_checked > 0

    def test_it_infers_types_formats_enums_and_required_keys(self):
        records = [
            event(i, event_type=["create", "update"][i % 2], note=None) for i in range(1, 21)
        ]
        records[0]["extra"] = 1
        schema = infer_schema([ndjson(records)])
        assert schema["$schema"] == DRAFT2020
        props = schema["properties"]
        assert props["timestamp"] == {"type": "string", "format": "date-time"}
        assert props["event_type"] == {"type": "string", "enum": ["create", "update"]}
        assert props["customer"]["properties"]["email"]["format"] == "email"
        assert props["tags"] == {"type": "array", "items": {"type": "string", "enum": ["a"]}}
        assert props["note"] == {"type": "null"}
        assert "extra" in props and "extra" not in schema["required"]
        assert set(schema["required"]) == {
            "id",
            "timestamp",
            "event_type",
            "count",
            "customer",
            "tags",
            "note",
        }

    def test_it_says_when_there_is_nothing_to_infer_from(self):
        with pytest.raises(ValueError, match="no records"):
            infer_schema([io.BytesIO(b"[]")])
        with pytest.raises(ValueError, match="sample 1 cannot be read"):
            infer_schema([io.BytesIO(b"\x1f\x8b\x08")])


class SafeFilenameTests:
    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("../../etc/passwd", "passwd"),
            ("/etc/passwd", "passwd"),
            ("C:\\Users\\ann\\orders.csv", "orders.csv"),
            ("..\\..\\boot.ini", "boot.ini"),
            ("orders\x00.csv.exe", "orders.csv.exe"),
            ("evil\u202egpj.csv", "evilgpj.csv"),
            ("  .hidden.json  ", "hidden.json"),
            ("a<b>c:d|e?.csv", "a_b_c_d_e_.csv"),
            ("CON.csv", "_CON.csv"),
            ("nul", "_nul"),
            ("données 2024.csv", "données 2024.csv"),
        ],
    )
    def test_it_cleans_names(self, name, expected):
        assert safe_filename(name) == expected

    def test_it_shortens_long_names_keeping_the_extension(self):
        cleaned = safe_filename("a" * 10_000 + ".parquet")
        assert len(cleaned) == 120
        assert cleaned.endswith(".parquet")
        assert len(safe_filename("é" * 10_000 + ".csv", max_length=1000).encode()) <= 255

    @pytest.mark.parametrize("name", ["", "..", "../..", "/", "\x00\x01", "...", "   "])
    def test_it_refuses_names_with_nothing_left(self, name):
        with pytest.raises(ValueError):
            safe_filename(name)

    def test_it_limits_a_batch_of_files(self):
        assert check_sample_files([f"s{i}.csv" for i in range(50)]) == []
        problems = check_sample_files([f"s{i}.csv" for i in range(51)])
        assert problems == ["51 files were sent at once; at most 50 are accepted in one request."]
        problems = check_sample_files(["a.csv", "../A.csv", ".."])
        assert len(problems) == 2
