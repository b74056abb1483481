"""The NDJSON screen (onboarding.validation.screen) against the record path.

The screen may only be cautious: every row it passes must be one the record validator
accepts, and a chunk it screens must get exactly the record path's result (records, invalid
count, the first errors). Each test here compares the two on the same lines: hand-written
edge values for every keyword, line-level oddities, random byte mutations, and whole files
through ``validate_sample`` with the screen on and off.
"""

from __future__ import annotations

import datetime as dt
import io
import random
import uuid

import jsonschema_rs
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from django.test import override_settings

from onboarding.validation import Limits, SampleFormat, SampleReport, validate_sample
from onboarding.validation.engine import ValidationSink
from onboarding.validation.ndjson import ndjson_chunk
from onboarding.validation.readers import Source, read_ndjson
from onboarding.validation.schema import compile_validator
from onboarding.validation.screen import _FORMATS, Unsupported, compile_screen, safe_pattern

DRAFT2020 = "https://json-schema.org/draft/2020-12/schema"
DRAFT7 = "http://json-schema.org/draft-07/schema#"

SCHEMA = {
    "$schema": DRAFT2020,
    "title": "events",
    "type": "object",
    "required": ["id", "timestamp", "event", "sequence", "customer", "items"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "timestamp": {"type": "string", "format": "date-time"},
        "day": {"type": "string", "format": "date"},
        "ip": {"type": "string", "format": "ipv4"},
        "event": {"enum": ["create", "update", "delete"]},
        "kind": {"type": ["string", "null"], "enum": ["a", "b", None]},
        "code": {"const": "X"},
        "sequence": {"type": "integer", "minimum": 1, "maximum": 1_000_000_000},
        "amount": {"type": "number", "minimum": 0, "exclusiveMaximum": 1_000_000},
        "ratio": {"type": "number", "exclusiveMinimum": 0.5, "maximum": 2.5},
        "customer": {
            "type": "object",
            "required": ["email"],
            "properties": {
                "email": {"type": "string", "format": "email"},
                "name": {"type": "string", "minLength": 1, "maxLength": 20},
                "address": {
                    "type": ["object", "null"],
                    "properties": {
                        "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                        "city": {"type": "string"},
                    },
                },
            },
        },
        "tags": {
            "type": "array",
            "items": {"type": "string"},
            "uniqueItems": True,
            "maxItems": 4,
        },
        "scores": {"type": "array", "items": {"type": ["integer", "null"]}, "uniqueItems": True},
        "ratios": {"type": "array", "items": {"type": "number"}, "uniqueItems": True},
        "items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["sku", "qty"],
                "additionalProperties": False,
                "properties": {
                    "sku": {"type": "string", "pattern": "^SKU-[0-9]{4}$"},
                    "qty": {"type": "integer", "minimum": 1},
                    "price": {"type": "number", "minimum": 0},
                },
            },
        },
        "active": {"type": "boolean"},
        "note": {"type": ["string", "null"], "maxLength": 10},
    },
}


def record(i: int) -> dict:
    return {
        "id": str(uuid.UUID(int=i * 7919 + 1, version=4)),
        "timestamp": f"2024-0{i % 9 + 1}-1{i % 9}T1{i % 10}:0{i % 6}:00.{i:03d}Z",
        "day": "2024-03-15",
        "ip": f"10.0.{i % 256}.{(i * 7) % 256}",
        "event": ["create", "update", "delete"][i % 3],
        "kind": ["a", "b", None][i % 3],
        "code": "X",
        "sequence": i + 1,
        "amount": round(i * 1.25, 2),
        "ratio": 1.5,
        "customer": {
            "email": f"user.{i}+tag@mail-{i % 5}.example.com",
            "name": f"Customer {i}",
            "address": {"zip": f"{10_000 + i:05d}", "city": "London"},
        },
        "tags": ["a", "b", "c", "d"][: i % 5],
        "scores": [1, 2, None][: i % 4],
        "ratios": [0.5, 1, 2.25][: i % 4],
        "items": [{"sku": f"SKU-{1000 + i % 9000}", "qty": 1 + i % 3, "price": 9.5}],
        "active": bool(i % 2),
        "note": None if i % 2 else "call back",
    }


def line(value: dict) -> bytes:
    return orjson.dumps(value)


PLACEHOLDER = "@@RAW@@"


def with_raw(path: list, raw: bytes, i: int = 3) -> bytes:
    """A record's line with the value at `path` replaced by raw JSON text (None deletes)."""
    value = record(i)
    target = value
    for key in path[:-1]:
        target = target[key]
    if raw is None:
        del target[path[-1]]
        return line(value)
    target[path[-1]] = PLACEHOLDER
    return line(value).replace(f'"{PLACEHOLDER}"'.encode(), raw)


VALIDATOR = compile_validator(SCHEMA)
SCREEN = compile_screen(SCHEMA)


def compare(lines: list[bytes], room: int = 20) -> bool:
    """Screen and record path on one chunk; True when the screen took it."""
    assert SCREEN is not None
    chunk = b"\n".join(lines)
    job = SCREEN.start(chunk, max_depth=Limits().max_depth)
    try:
        screened = job.finish(VALIDATOR, room)
    finally:
        job.wait()
    expected = ndjson_chunk(
        chunk, validator=VALIDATOR, limits=Limits(), room=room, deadline=float("inf")
    )
    if screened is not None:
        assert not expected.rejected, expected.rejected
        assert screened == (expected.records, expected.invalid, expected.errors)
    return screened is not None


def around(bad: bytes | list[bytes]) -> list[bytes]:
    middle = bad if isinstance(bad, list) else [bad]
    return [line(record(i)) for i in range(10)] + middle + [line(record(i)) for i in range(10, 20)]


# Values the screen must judge as the validator does. (path, raw JSON text).
VALUES = (
    [
        (["timestamp"], v)
        for v in [
            b'"2024-02-29T10:00:00Z"',
            b'"2023-02-29T10:00:00Z"',
            b'"2024-04-31T00:00:00Z"',
            b'"2024-04-30T00:00:00Z"',
            b'"2024-12-31T23:59:59.999999999Z"',
            b'"2024-06-30T23:59:60Z"',
            b'"2024-01-01t10:00:00z"',
            b'"2024-01-01T10:00:00+24:00"',
            b'"2024-01-01T10:00:00-23:59"',
            b'"2024-01-01T10:00:00.1234567890Z"',
            b'"2024-01-01 10:00:00Z"',
            b'"0000-01-01T00:00:00Z"',
            b'"2024-1-01T00:00:00Z"',
            b'"2024-01-01T10:00:00"',
            b'"yesterday"',
            b'""',
            b'"2024-01-01T10:00:00Z\\n"',
        ]
    ]
    + [
        (["day"], v)
        for v in [b'"2024-02-29"', b'"2023-02-29"', b'"2024-13-01"', b'"2024-01-01T00:00:00Z"']
    ]
    + [
        (["ip"], v)
        for v in [b'"255.255.255.255"', b'"256.1.1.1"', b'"01.2.3.4"', b'"1.2.3"', b'"0.0.0.0"']
    ]
    + [
        (["customer", "email"], v)
        for v in [
            b'"a.b+c@example.co.uk"',
            b'"a..b@example.com"',
            b'".a@example.com"',
            b'"a.@example.com"',
            b'"a@example"',
            b'"a@-example.com"',
            b'"a@example-.com"',
            b'"a@example.c"',
            b'"\xc3\xa4@example.com"',
            b'"a@b.co"',
            b'"' + b"x" * 65 + b'@example.com"',
            b'"a b@example.com"',
            b'"\\"a\\"@example.com"',
            b'"a@[127.0.0.1]"',
            b'"a@example.com."',
            b'"not-an-email"',
        ]
    ]
    + [
        (["id"], v)
        for v in [
            b'"' + str(uuid.uuid4()).upper().encode() + b'"',
            b'"' + uuid.uuid4().hex.encode() + b'"',
            b'"{' + str(uuid.uuid4()).encode() + b'}"',
            b'"urn:uuid:' + str(uuid.uuid4()).encode() + b'"',
            b'"123456789012345678901234567890"',
            b'"00000000-0000-0000-0000-00000000000g"',
        ]
    ]
    + [(["event"], v) for v in [b'"CREATE"', b'"upsert"', b'""', b"null", b"1"]]
    + [(["kind"], v) for v in [b"null", b'"c"', b'"a"']]
    + [(["code"], v) for v in [b'"X"', b'"Y"', b"null"]]
    + [
        (["sequence"], v)
        for v in [
            b"0",
            b"1",
            b"-1",
            b"1.0",
            b"1e2",
            b"1000000000",
            b"1000000001",
            b"9223372036854775807",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"12345678901234567890123",
            b"1" * 150,
            b'"1"',
            b"true",
            b"null",
        ]
    ]
    + [
        (["amount"], v)
        for v in [
            b"-0.0",
            b"-1",
            b"0",
            b"1e-300",
            b"NaN",
            b"Infinity",
            b"-Infinity",
            b"1e400",
            b"999999.99",
            b"1e6",
            b"1000000",
            b"1e19",
            b"123456789012345678901234567890",
            b"9007199254740993",
            b'"5"',
        ]
    ]
    + [(["ratio"], v) for v in [b"0.5", b"0.5000000000000001", b"2.5", b"2.5000000000000004", b"1"]]
    + [
        (["customer", "address", "zip"], v)
        for v in [
            b'"12345"',
            b'"1234"',
            '"\u0661\u0662\u0663\u0664\u0665"'.encode(),
            b'"12345\\n"',
            b'"\\u0031\\u0032\\u0033\\u0034\\u0035"',
        ]
    ]
    + [
        (["customer", "name"], v)
        for v in [
            b'""',
            b'"' + b"x" * 20 + b'"',
            b'"' + b"x" * 21 + b'"',
            ('"' + "\u00e9" * 20 + '"').encode(),
            ('"' + "\U0001f600" * 20 + '"').encode(),
            ('"' + "\U0001f600" * 21 + '"').encode(),
            b'"' + b"\\ud83d\\ude00" * 20 + b'"',
            b'"\\ud800"',
        ]
    ]
    + [(["customer", "address"], v) for v in [b"null", b"{}", b'{"zip": null}', b'{"other": 1}']]
    + [
        (["customer"], v)
        for v in [b"null", b"{}", b'{"email": null}', b'{"email": "a@b.co", "extra": 1}']
    ]
    + [
        (["tags"], v)
        for v in [
            b"[]",
            b'["a", "a"]',
            b'["a", "b"]',
            b"[null]",
            b'["a", 1]',
            b'["a", "b", "c", "d", "e"]',
            b'"x"',
            b"null",
            b"{}",
            b'["\\u0061", "a"]',
        ]
    ]
    + [
        (["scores"], v)
        for v in [b"[1, 1]", b"[null, null]", b"[1, null, 2]", b"[1, 1.0]", b"[2, 1e0]", b"[1.5]"]
    ]
    + [
        (["ratios"], v)
        for v in [b"[0, -0.0]", b"[-0.0, 0.0]", b"[1, 1.0]", b"[0.1, 0.1]", b"[1, 2]", b"[1e0, 1]"]
    ]
    + [
        (["items"], v)
        for v in [
            b"[]",
            b'[{"sku": "SKU-1234", "qty": 1}]',
            b'[{"qty": 1}]',
            b'[{"sku": "SKU-1234", "qty": 0}]',
            b'[{"sku": null, "qty": 1}]',
            b"[null]",
            b'[{"sku": "SKU-1234", "qty": 1, "extra": 1}]',
            b'[{"sku": "SKU-12345", "qty": 1}, {"sku": "SKU-1234", "qty": 2}]',
            b'[{"sku": "SKU-1234", "qty": 1, "price": NaN}]',
        ]
    ]
    + [(["note"], v) for v in [b"null", b'"x"', b"1", b'"' + b"y" * 11 + b'"']]
    + [(["active"], v) for v in [b"1", b'"true"', b"null", b"false"]]
)

DELETIONS = [([key], None) for key in record(1)] + [
    (["customer", key], None) for key in record(1)["customer"]
]

# The screen must take these (a value it reads, then checks or hands to the validator);
# NaN and Infinity it reads too, but orjson refuses them, so the record path words that.
MUST_SCREEN = {
    b'"2023-02-29T10:00:00Z"',
    b'"2024-01-01t10:00:00z"',
    b'"yesterday"',
    b'"a..b@example.com"',
    b'"upsert"',
    b"0",
    b"1000000001",
    b'["a", "a"]',
    b"[0, -0.0]",
    b'[{"sku": "SKU-1234", "qty": 0}]',
    b'"1234"',
    b"9223372036854775807",
}


@pytest.mark.parametrize(
    ("path", "raw"),
    VALUES + DELETIONS,
    ids=[f"{'.'.join(p)}={r!r}"[:80] for p, r in VALUES + DELETIONS],
)
def test_a_screened_value_is_judged_as_the_validator_judges_it(path, raw):
    screened = compare(around(with_raw(path, raw)))
    if raw in MUST_SCREEN and path != ["customer"]:
        assert screened, "the screen gave this chunk to the record path"


LINE_CASES = {
    "valid only": [],
    "duplicate key": [b'{"id": "a", "id": "b"}'],
    "two objects on one line": [line(record(1)) + b" " + line(record(2))],
    "an object over two lines, another line with two": [
        line(record(1))[:-1] + b',\n"active": true}',
        line(record(2)) + b" " + line(record(3)),
    ],
    "blank line": [b""],
    "blank line and two objects on a line": [b"", line(record(1)) + line(record(2))],
    "whitespace-only line": [b"  \t"],
    "leading space": [b" " + line(record(1))],
    "carriage returns": [line(record(1)) + b"\r", line(record(2)) + b"\r"],
    "trailing garbage": [line(record(1)) + b"x"],
    "a top-level array": [b"[1, 2]"],
    "an empty object": [b"{}"],
    "invalid UTF-8 in a string": [line(record(1)).replace(b"London", b"Lon\xffdon")],
    "raw tab in a string": [line(record(1)).replace(b"London", b"Lon\tdon")],
    "NaN outside a number column": [line(record(1)).replace(b'"London"', b"NaN")],
    "extra field nested 70 deep": [
        line(record(1))[:-1] + b',"extra":' + b"[" * 70 + b"]" * 70 + b"}"
    ],
    "extra field nested 100,000 deep": [
        line(record(1))[:-1] + b',"extra":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    ],
    "string of 30 digits": [with_raw(["customer", "address", "city"], b'"' + b"7" * 30 + b'"')],
    "integer of 101 digits where a number goes": [with_raw(["amount"], b"9" * 101)],
    "comment": [line(record(1)) + b" // note"],
    "an escaped key": [line(record(1)).replace(b'"id"', b'"\\u0069d"')],
    "an escaped key that is not in the schema": [line(record(1)).replace(b'"id"', b'"\\u0069x"')],
    "trailing comma": [line(record(1))[:-1] + b",}"],
}


@pytest.mark.parametrize("lines", LINE_CASES.values(), ids=LINE_CASES.keys())
def test_line_level_oddities_match_the_record_path(lines):
    compare(around(lines))


def test_a_clean_chunk_is_screened_and_every_row_vouched_for():
    assert SCREEN is not None
    lines = [line(record(i)) for i in range(500)]
    chunk = b"\n".join(lines)
    rows = SCREEN.read(chunk)
    unsure = SCREEN.unsure_rows(rows)
    # Only rows with a null where null is ambiguous (kind is nullable but optional: fine;
    # scores hold a null item: fine) may be unsure; these records have none of those.
    assert unsure == []
    assert compare(lines)


def test_the_first_errors_are_reported_in_record_order_across_screened_rows():
    lines = [line(record(i)) for i in range(200)]
    for i in range(5, 200, 7):
        lines[i] = with_raw(["event"], b'"upsert"', i)
    assert compare(lines, room=20)
    assert compare(lines, room=3)


MUTATION_BYTES = b'{}[]":,0123456789eE.+-ntfalsru\\ \t\nNIaxy\xff\xc3'


def test_random_byte_mutations_never_pass_an_invalid_row():
    rng = random.Random(20261126)
    base = [line(record(i)) for i in range(40)]
    screened = 0
    for _ in range(1200):
        target = bytearray(base[rng.randrange(len(base))])
        for _ in range(rng.randint(1, 3)):
            where = rng.randrange(len(target))
            action = rng.random()
            if action < 0.6:
                target[where] = rng.choice(MUTATION_BYTES)
            elif action < 0.8:
                target.insert(where, rng.choice(MUTATION_BYTES))
            else:
                del target[where]
        screened += compare([*base[:5], bytes(target), *base[5:10]])
    assert screened > 100  # many mutations stay readable and are decided by the screen


@pytest.mark.parametrize(
    "limits",
    [Limits(), Limits(max_line_bytes=4096)],
    ids=["one chunk", "chunks of 4 KiB"],
)
def test_whole_files_get_the_same_report_with_the_screen_on_and_off(limits):
    rng = random.Random(7)
    lines = []
    for i in range(3000):
        if rng.random() < 0.05:
            path, raw = VALUES[rng.randrange(len(VALUES))]
            if raw in (b"1" * 150,):  # refuses the whole file; tested below
                raw = b"1"
            lines.append(with_raw(path, raw, i))
        else:
            lines.append(line(record(i)))
    data = b"\n".join(lines) + b"\n"
    on = validate(data, limits)
    off = validate(data, Limits(**{**limits.__dict__, "screen": False}))
    assert on.rejected == off.rejected == ""
    assert (on.records_checked, on.invalid_count, on.errors) == (
        off.records_checked,
        off.invalid_count,
        off.errors,
    )
    assert on.records_checked == 3000 and on.invalid_count > 50


@pytest.mark.parametrize(
    "bad",
    [
        b"1" * 150,  # an integer over the digit limit
        b"[" * 100_000 + b"]" * 100_000,
    ],
    ids=["long integer", "deep nesting"],
)
def test_a_file_the_record_path_refuses_is_refused_the_same_way(bad):
    lines = [line(record(i)) for i in range(2000)]
    lines[1500] = with_raw(["amount"], bad, 1500)
    data = b"\n".join(lines)
    for limits in (Limits(), Limits(max_line_bytes=250_000)):
        on = validate(data, limits)
        off = validate(data, Limits(**{**limits.__dict__, "screen": False}))
        assert on.rejected and on.rejected == off.rejected
        assert "Line 1501" in on.rejected


def validate(data: bytes, limits: Limits):
    return validate_sample(
        io.BytesIO(data), schema=SCHEMA, declared_format=SampleFormat.NDJSON, limits=limits
    )


# --- what the screen's formats and patterns accept, the validator accepts ----------------


def _format_candidates(name: str, rng: random.Random) -> list[str]:
    two = [f"{n:02d}" for n in range(0, 62)]
    out = []
    for _ in range(4000):
        if name in ("date-time", "date"):
            year = rng.choice(["1900", "1999", "2000", "2023", "2024", "2099", "2100", "0000"])
            date = f"{year}-{rng.choice(two[:14])}-{rng.choice(two[:33])}"
            if name == "date":
                out.append(date)
                continue
            time = f"{rng.choice(two[:26])}:{rng.choice(two)}:{rng.choice(two)}"
            frac = rng.choice(["", ".1", ".123456789", ".1234567890", "."])
            offset = rng.choice(["Z", "z", "+00:00", "-23:59", "+24:00", "+05:60", ""])
            sep = rng.choice(["T", "T", "t", " "])
            out.append(f"{date}{sep}{time}{frac}{offset}")
        elif name == "email":
            atoms = ["a", "Z9", "x_y", "a+b", "-", "a-b", "q" * 20, "q" * 21, ""]
            local = ".".join(rng.choice(atoms) for _ in range(rng.randint(1, 4)))
            labels = ["example", "a", "a-b", "-a", "a-", "x" * 50, "9", "co"]
            domain = ".".join(rng.choice(labels) for _ in range(rng.randint(1, 4)))
            tld = rng.choice(["com", "uk", "c", "c0m", "x" * 24, "x" * 25])
            out.append(f"{local}@{domain}.{tld}")
        elif name == "uuid":
            text = str(uuid.UUID(int=rng.getrandbits(128)))
            out.append("".join(c.upper() if rng.random() < 0.3 else c for c in text))
        elif name == "ipv4":
            octets = ["0", "1", "9", "10", "99", "100", "199", "249", "250", "255", "256", "01"]
            out.append(".".join(rng.choice(octets) for _ in range(4)))
    return out


@pytest.mark.parametrize("dialect", [DRAFT2020, DRAFT7])
@pytest.mark.parametrize("name", sorted(_FORMATS))
def test_every_value_a_format_pattern_vouches_for_the_validator_accepts(name, dialect):
    rng = random.Random(name)
    candidates = _format_candidates(name, rng)
    matched = pc.match_substring_regex(pa.array(candidates), _FORMATS[name]).to_pylist()
    vouched = [c for c, m in zip(candidates, matched, strict=True) if m]
    validator = jsonschema_rs.validator_for(
        {"$schema": dialect, "format": name}, validate_formats=True
    )
    assert len(vouched) > 200
    rejected = [c for c in vouched if not validator.is_valid(c)]
    assert rejected == []


SAFE_PATTERNS = [
    "^[0-9]{5}$",
    "^SKU-[0-9]{4}$",
    r"^\d+$",
    r"^\w+@x$",
    "^(ab|cd)+$",
    "a|b",
    r"^[A-Z]{2}\-[a-z0-9_]*$",
]
UNSAFE_PATTERNS = [
    ".",
    r"^\S+$",
    r"^\W$",
    r"\bword",
    "(?=a)b",
    r"(a)\1",
    "[^a]",
    "a$b",
    "^^a",
    "(a",
    "a)",
    r"\p{L}",
    "x" * 201,
    5,
]


@pytest.mark.parametrize("pattern", SAFE_PATTERNS)
def test_a_safe_pattern_never_matches_what_the_validator_would_not(pattern):
    assert safe_pattern(pattern) == pattern
    rng = random.Random(pattern)
    alphabet = "abcdSKU-0123456789_@x\u0661\u00e9 \nAZ"
    candidates = [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8))) for _ in range(3000)
    ] + ["12345", "SKU-1234", "ab", "cdab", "AB-a_1", "\u0661\u0662", "a@x"]
    matched = pc.match_substring_regex(pa.array(candidates), pattern).to_pylist()
    validator = jsonschema_rs.validator_for({"$schema": DRAFT2020, "pattern": pattern})
    wrong = [c for c, m in zip(candidates, matched, strict=True) if m and not validator.is_valid(c)]
    assert wrong == []
    assert any(matched)


@pytest.mark.parametrize("pattern", UNSAFE_PATTERNS, ids=[str(p)[:20] for p in UNSAFE_PATTERNS])
def test_an_unsafe_pattern_is_not_screened(pattern):
    with pytest.raises(Unsupported):
        safe_pattern(pattern)


def _object(**properties):
    return {"$schema": DRAFT7, "type": "object", "properties": properties}


UNSUPPORTED_SCHEMAS = {
    "a $ref": _object(a={"$ref": "#/$defs/x"}),
    "anyOf": _object(a={"anyOf": [{"type": "string"}, {"type": "integer"}]}),
    "two types": _object(a={"type": ["string", "integer"]}),
    "no type": _object(a={"description": "anything"}),
    "numeric enum": _object(a={"enum": [1, 2]}),
    "enum against its type": _object(a={"type": "integer", "enum": ["a"]}),
    "unknown format": _object(a={"type": "string", "format": "uri"}),
    "multipleOf": _object(a={"type": "number", "multipleOf": 0.5}),
    "a bound past 2**53": _object(a={"type": "integer", "maximum": 2**60}),
    "boolean exclusiveMinimum": _object(a={"type": "number", "exclusiveMinimum": True}),
    "tuple items": _object(a={"type": "array", "items": [{"type": "string"}]}),
    "prefixItems": _object(a={"type": "array", "prefixItems": [{"type": "string"}]}),
    "unique objects": _object(
        a={"type": "array", "uniqueItems": True, "items": _object(b={"type": "string"})}
    ),
    "additionalProperties schema": {
        **_object(a={"type": "string"}),
        "additionalProperties": {"type": "string"},
    },
    "patternProperties": {**_object(a={"type": "string"}), "patternProperties": {"^x": {}}},
    "required not in properties": {**_object(a={"type": "string"}), "required": ["b"]},
    "no properties": {"$schema": DRAFT7, "type": "object"},
    "unsafe pattern": _object(a={"type": "string", "pattern": "^.+$"}),
    "a root that is not an object": {"$schema": DRAFT7, "type": "array", "items": {}},
    "a nullable root": {**_object(a={"type": "string"}), "type": ["object", "null"]},
    "items missing": _object(a={"type": "array"}),
    "deeper than the screen goes": _object(
        a=_object(
            b=_object(
                c=_object(
                    d=_object(
                        e=_object(
                            f=_object(
                                g=_object(
                                    h=_object(
                                        i=_object(
                                            j=_object(
                                                k=_object(
                                                    l=_object(
                                                        m=_object(
                                                            n=_object(
                                                                o=_object(
                                                                    p=_object(
                                                                        q=_object(
                                                                            r={"type": "string"}
                                                                        )
                                                                    )
                                                                )
                                                            )
                                                        )
                                                    )
                                                )
                                            )
                                        )
                                    )
                                )
                            )
                        )
                    )
                )
            )
        ),
    ),
}


@pytest.mark.parametrize("schema", UNSUPPORTED_SCHEMAS.values(), ids=UNSUPPORTED_SCHEMAS.keys())
def test_a_schema_the_screen_cannot_check_exactly_gets_no_screen(schema):
    assert compile_screen(schema) is None


def test_the_schemas_the_screen_checks():
    assert compile_screen(SCHEMA) is not None
    assert compile_screen(_object(a={"type": "string"}, b={"const": "x"})) is not None
    open_schema = {**_object(a={"type": "integer"}), "additionalProperties": True}
    assert compile_screen(open_schema) is not None


def test_an_open_schema_with_extra_fields_falls_back_and_reports_the_same():
    schema = {**_object(a={"type": "integer", "minimum": 0}), "additionalProperties": True}
    lines = [b'{"a": 1, "extra": NaN}', b'{"a": -1, "extra": [1, 2]}', b'{"a": 2}'] * 50
    data = b"\n".join(lines)

    def run(limits):
        return validate_sample(
            io.BytesIO(data), schema=schema, declared_format=SampleFormat.NDJSON, limits=limits
        )

    on, off = run(Limits()), run(Limits(screen=False))
    assert (on.records_checked, on.invalid_count, on.errors) == (
        off.records_checked,
        off.invalid_count,
        off.errors,
    )
    assert on.invalid_count == 100


def test_the_screen_can_be_switched_off_in_settings():
    assert Limits.from_settings().screen is True
    with override_settings(ONBOARDING_SAMPLE_SCREEN=False):
        assert Limits.from_settings().screen is False
    with pytest.raises(ValueError, match="True or False"):
        Limits(screen=1)


# --- Parquet: batches of typed columns, a null always an explicit null ---------------------


def parquet(table: pa.Table, row_group_size: int = 700) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out, row_group_size=row_group_size)
    return out.getvalue()


def parquet_records(n: int = 3000) -> list[dict]:
    """Records with a mix of invalid values the Parquet columns can still hold."""
    rng = random.Random(11)
    records = [record(i) for i in range(n)]
    for i in range(0, n, 17):
        value = records[i]
        choice = rng.randrange(12)
        if choice == 0:
            value["event"] = "upsert"
        elif choice == 1:
            value["timestamp"] = rng.choice(["2023-02-29T10:00:00Z", "2024-02-29T10:00:00Z", "x"])
        elif choice == 2:
            value["items"][0]["qty"] = 0
        elif choice == 3:
            value["tags"] = ["a", "a"]
        elif choice == 4:
            value["customer"] = None
        elif choice == 5:
            value["amount"] = float("nan")
        elif choice == 6:
            value["ratios"] = [0.0, -0.0]
        elif choice == 7:
            value["customer"]["address"] = None
        elif choice == 8:
            value["note"] = "much too long for it"
        elif choice == 9:
            value["id"] = None
        elif choice == 10:
            value["scores"] = [None, None]
        else:
            value["customer"]["email"] = "a..b@example.com"
    return records


def validate_parquet(data: bytes, schema: dict = SCHEMA, **limits):
    reports = [
        validate_sample(
            io.BytesIO(data),
            schema=schema,
            declared_format=SampleFormat.PARQUET,
            limits=Limits(screen=screen, **limits),
        )
        for screen in (True, False)
    ]
    on, off = reports
    assert (on.rejected, on.records_checked, on.invalid_count, on.errors) == (
        off.rejected,
        off.records_checked,
        off.invalid_count,
        off.errors,
    )
    return on


def screened_batches(data: bytes, schema: dict = SCHEMA) -> list[bool]:
    screen = compile_screen(schema)
    assert screen is not None
    batches = pq.ParquetFile(io.BytesIO(data)).iter_batches(batch_size=1000)
    return [screen.batch_unsure_rows(batch) is not None for batch in batches]


def test_a_parquet_sample_gets_the_record_paths_report_and_is_screened():
    data = parquet(pa.Table.from_pylist(parquet_records()))
    report = validate_parquet(data)
    assert report.records_checked == 3000 and report.invalid_count > 100
    assert all(screened_batches(data))


def _retyped(table: pa.Table, name: str, column: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, column)


def _variants() -> dict[str, tuple[pa.Table, bool]]:
    """Tables whose columns differ from the plain ones, and whether the screen takes them."""
    base = pa.Table.from_pylist(parquet_records(1500))
    sequence = base["sequence"].combine_chunks()
    amount = pc.if_else(pc.is_nan(base["amount"].combine_chunks()), 1.0, base["amount"])
    stamps = pa.array(
        [dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(hours=i) for i in range(1500)],
        pa.timestamp("us", tz="UTC"),
    )
    return {
        "int32 and float32": (
            _retyped(
                _retyped(base, "sequence", sequence.cast(pa.int32())),
                "amount",
                pc.fill_null(amount, 1.0).cast(pa.float32()),
            ),
            True,
        ),
        "large strings": (
            _retyped(base, "event", base["event"].combine_chunks().cast(pa.large_string())),
            True,
        ),
        "a timestamp column": (_retyped(base, "timestamp", stamps), False),
        "a uint64 column": (_retyped(base, "sequence", sequence.cast(pa.uint64())), False),
        "a decimal column": (
            _retyped(base, "amount", pc.fill_null(amount, 1.0).cast(pa.decimal128(12, 2))),
            False,
        ),
        "an optional column missing": (base.drop_columns(["note"]), True),
        "a required column missing": (base.drop_columns(["id"]), False),
        "an extra column where none is allowed": (
            base.append_column("extra", pa.array(range(1500))),
            False,
        ),
        "an extra field in an open object": (
            _retyped(
                base,
                "customer",
                pa.StructArray.from_arrays(
                    [*base["customer"].combine_chunks().flatten(), pa.array(range(1500))],
                    names=["email", "name", "address", "extra"],
                ),
            ),
            True,
        ),
        "a null-typed column": (_retyped(base, "note", pa.nulls(1500)), False),
        "a string where a number goes": (
            _retyped(base, "amount", pc.cast(pc.fill_null(amount, 1.0), pa.string())),
            False,
        ),
    }


VARIANTS = _variants()


@pytest.mark.parametrize("name", VARIANTS)
def test_parquet_column_types_the_screen_cannot_take_go_to_the_record_path(name):
    table, screened = VARIANTS[name]
    data = parquet(table)
    validate_parquet(data)
    assert all(screened_batches(data)) is screened


def test_parquet_with_small_batches_and_many_row_groups_reports_the_same():
    data = parquet(pa.Table.from_pylist(parquet_records(5000)), row_group_size=333)
    report = validate_parquet(data)
    assert report.records_checked == 5000


def test_a_parquet_batch_with_nothing_unsure_is_counted_whole():
    data = parquet(pa.Table.from_pylist([record(i) for i in range(2500)]))
    report = validate_parquet(data)
    assert (report.records_checked, report.invalid_count, report.errors) == (2500, 0, [])
    assert all(screened_batches(data))


def test_a_chunk_of_many_short_lines_takes_the_record_path_with_the_same_report():
    schema = {**_object(a={"type": "integer", "minimum": 0}), "required": ["a"]}
    lines = [b'{"a": %d}' % (i if i % 1000 else -1) for i in range(200_000)]
    data = b"\n".join(lines)
    screen = compile_screen(schema)
    assert screen is not None
    job = screen.start(data[: 4 * 1024 * 1024], max_depth=64)
    assert job.future is None and job.line_count > 65_536  # not sent to Arrow
    reports = [
        validate_sample(
            io.BytesIO(data), schema=schema, declared_format=SampleFormat.NDJSON, limits=limits
        )
        for limits in (Limits(), Limits(screen=False))
    ]
    assert [(r.records_checked, r.invalid_count, r.errors) for r in reports] == [
        (200_000, 200, reports[1].errors)
    ] * 2


def _sink_after(data: bytes, schema: dict, limits: Limits) -> ValidationSink:
    report = SampleReport(format=SampleFormat.NDJSON)
    sink = ValidationSink(compile_validator(schema), report, limits, float("inf"))
    sink.use_screen(compile_screen(schema), SampleFormat.NDJSON)
    read_ndjson(Source(io.BytesIO(data), limits.max_file_bytes), sink, limits)
    sink.close()
    return sink


def test_the_screen_is_dropped_for_a_sample_it_does_not_help_with():
    # An optional field no record has: every row is unsure (missing or null?).
    schema = {**SCHEMA, "properties": {**SCHEMA["properties"], "channel": {"type": "string"}}}
    data = b"\n".join(line(record(i)) for i in range(400))
    limits = Limits(max_line_bytes=4096)  # chunks of 4 KiB: many of them
    dropped = _sink_after(data, schema, limits)
    assert dropped.screen is None
    kept = _sink_after(data, SCHEMA, limits)
    assert kept.screen is not None
    on, off = (
        validate_sample(
            io.BytesIO(data),
            schema=schema,
            declared_format=SampleFormat.NDJSON,
            limits=Limits(max_line_bytes=4096, screen=screen),
        )
        for screen in (True, False)
    )
    assert (on.records_checked, on.invalid_count, on.errors) == (
        off.records_checked,
        off.invalid_count,
        off.errors,
    )


def null_free(i: int) -> dict:
    """A record with no null anywhere (optional nullable fields left out instead)."""
    value = record(i)
    for key in ("kind", "note"):
        if value[key] is None:
            del value[key]
    value["scores"] = [s for s in value["scores"] if s is not None]
    return value


@pytest.mark.parametrize("path", [p for p, _ in DELETIONS], ids=[".".join(p) for p, _ in DELETIONS])
def test_without_null_literals_a_missing_field_is_judged_as_missing(path):
    lines = [line(null_free(i)) for i in range(30)]
    value = null_free(7)
    target = value
    for key in path[:-1]:
        target = target[key]
    target.pop(path[-1], None)  # null_free may have left it out already
    lines[15] = line(value)
    assert compare(lines)
    # The same missing field next to an explicit null: every null is unsure again.
    lines[3] = with_raw(["amount"], b"null", 3)
    assert compare(lines)


def test_a_chunk_without_null_vouches_for_records_lacking_optional_fields():
    assert SCREEN is not None
    records = [null_free(i) for i in range(300)]
    for value in records[::2]:
        for key in ("amount", "day", "ip", "active", "tags"):
            del value[key]
    chunk = b"\n".join(line(v) for v in records)
    assert b"null" not in chunk
    rows = SCREEN.read(chunk)
    assert SCREEN.unsure_rows(rows, absent=True) == []
    assert len(SCREEN.unsure_rows(rows, absent=False)) == 150  # missing or null? unsure
    assert compare([line(v) for v in records])
