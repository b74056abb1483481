"""The requester's JSON Schema: parse it (bounded), pick the dialect, check it against its
meta-schema, refuse references that leave the document, and compile the fast validator.

Dialects: draft-07 (``http://json-schema.org/draft-07/schema#``) and draft 2020-12
(``https://json-schema.org/draft/2020-12/schema``); either scheme, with or without the
trailing ``#``. A schema without ``$schema`` is treated as 2020-12 and that is not a
problem (``schema_dialect()`` tells the caller, so a page can say so). Any other
``$schema`` is a problem.

References: ``$ref`` / ``$dynamicRef`` must resolve, against the base URI in force where
they appear, to this document or to a ``$id`` inside it. ``http(s):``, ``file:``, ``urn:``
and relative references to anything else are refused, and the compiled validator is given
a retriever that refuses every fetch, so nothing is ever downloaded or opened.

Formats (``date-time``, ``email``, ``uuid``, …) are asserted in both dialects.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urldefrag, urljoin

import jsonschema_rs
import orjson

from onboarding.validation.jsontext import careful_loads, depth_exceeds, has_long_digits
from onboarding.validation.types import Limits, Rejected, SchemaProblem

DRAFT7 = "draft-07"
DRAFT2020 = "2020-12"
MAX_SCHEMA_BYTES = 1024 * 1024
MAX_SCHEMA_DEPTH = 128
MAX_PROBLEMS = 20
MAX_MESSAGE = 300
# A pattern that backtracks more than this on one value is an error for that value, not a
# hung worker.
REGEX_BACKTRACK_LIMIT = 1_000_000

_DIALECTS = {
    "json-schema.org/draft-07/schema": DRAFT7,
    "json-schema.org/draft/2020-12/schema": DRAFT2020,
}
_RS_VALIDATORS = {
    DRAFT7: jsonschema_rs.Draft7Validator,
    DRAFT2020: jsonschema_rs.Draft202012Validator,
}
_ROOT_BASE = "https://schema.onramp.invalid/root.json"

# Keywords whose value is a schema, a map of schemas or a list of schemas.
_ONE = {
    "additionalItems",
    "additionalProperties",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
    "items",
}
_MAP = {
    "properties",
    "patternProperties",
    "definitions",
    "$defs",
    "dependentSchemas",
    "dependencies",
}
_LIST = {"allOf", "anyOf", "oneOf", "prefixItems", "items"}
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def schema_dialect(schema: Any) -> str | None:
    """ "draft-07" or "2020-12" (also for a schema without ``$schema``); None otherwise."""
    if not isinstance(schema, dict) or "$schema" not in schema:
        return DRAFT2020
    uri = schema["$schema"]
    if not isinstance(uri, str):
        return None
    bare = uri.strip().removesuffix("#")
    for scheme in ("http://", "https://"):
        if bare.startswith(scheme):
            return _DIALECTS.get(bare[len(scheme) :])
    return None


def check_schema(schema_text: str | bytes) -> tuple[dict | None, list[SchemaProblem]]:
    """Parse and check a schema; ``(schema, [])`` when it can be used to validate samples."""
    raw = (
        schema_text.encode("utf-8", "surrogatepass")
        if isinstance(schema_text, str)
        else schema_text
    )
    if len(raw) > MAX_SCHEMA_BYTES:
        return None, [
            SchemaProblem("$", f"The schema is larger than {MAX_SCHEMA_BYTES // 1024} KiB.")
        ]
    if not raw.strip():
        return None, [SchemaProblem("$", "The schema is empty.")]
    if depth_exceeds(raw, MAX_SCHEMA_DEPTH):
        return None, [
            SchemaProblem("$", f"The schema is nested more than {MAX_SCHEMA_DEPTH} levels deep.")
        ]
    try:
        # Integers past 64 bits are kept exact (orjson would round them to floats).
        schema = careful_loads(raw, Limits()) if has_long_digits(raw) else orjson.loads(raw)
    except Rejected as exc:
        return None, [SchemaProblem("$", f"The schema {exc.message}.")]
    except ValueError as exc:
        message = str(exc).removeprefix("invalid JSON: ")
        return None, [SchemaProblem("$", f"The schema is not valid JSON: {_short(message)}")]
    if not isinstance(schema, dict):
        return None, [SchemaProblem("$", "The schema must be a JSON object.")]
    problems = schema_problems(schema)
    return (schema, []) if not problems else (None, problems)


def schema_problems(schema: dict) -> list[SchemaProblem]:
    dialect = schema_dialect(schema)
    if dialect is None:
        return [
            SchemaProblem(
                "$.$schema",
                f"Unsupported $schema {str(schema.get('$schema'))[:120]!r}: use "
                '"http://json-schema.org/draft-07/schema#" or '
                '"https://json-schema.org/draft/2020-12/schema".',
            )
        ]
    # import here: only the meta-schema check needs jsonschema (validation uses jsonschema_rs)
    import jsonschema

    problems: list[SchemaProblem] = []
    kind = jsonschema.Draft7Validator if dialect == DRAFT7 else jsonschema.Draft202012Validator
    meta = kind(kind.META_SCHEMA)
    try:
        for error in meta.iter_errors(schema):
            problems.append(SchemaProblem(json_path(error.absolute_path), _short(error.message)))
            if len(problems) >= MAX_PROBLEMS:
                break
    except RecursionError:
        problems.append(SchemaProblem("$", "The schema is too deeply nested to check."))
    if problems:
        return sorted(problems, key=lambda p: p.path)
    problems.extend(reference_problems(schema))
    if problems:
        return problems
    try:
        compile_validator(schema)
    except Rejected as exc:
        problems.append(SchemaProblem("$", exc.message))
    return problems


def reference_problems(schema: dict) -> list[SchemaProblem]:
    """A problem for each reference that leaves the document."""
    dialect = schema_dialect(schema) or DRAFT2020
    known: set[str] = set()
    refs: list[tuple[str, str, str]] = []  # (path, base, ref)
    for path, node, base in _walk(schema, "$", _ROOT_BASE, dialect):
        known.add(base)
        for keyword in ("$ref", "$dynamicRef"):
            ref = node.get(keyword)
            if isinstance(ref, str):
                refs.append((f"{path}.{keyword}" if path else keyword, base, ref))
    problems = []
    for path, base, ref in refs:
        target, _fragment = urldefrag(urljoin(base, ref.strip()))
        if target not in known:
            problems.append(
                SchemaProblem(
                    path,
                    f"Reference {ref[:200]!r} points outside this schema; only references "
                    "inside the document (#/…, or a $id it declares) are allowed.",
                )
            )
    return problems[:MAX_PROBLEMS]


def _walk(node: Any, path: str, base: str, dialect: str) -> Iterator[tuple[str, dict, str]]:
    """Every schema object with its JSON path and base URI (iterative: no recursion)."""
    stack = [(node, path, base)]
    while stack:
        current, where, uri = stack.pop()
        if not isinstance(current, dict):
            continue
        ident = current.get("$id")
        # A draft-07 "$id": "#name" is an anchor, not a new base.
        plain_anchor = dialect == DRAFT7 and isinstance(ident, str) and ident.startswith("#")
        if isinstance(ident, str) and ident.strip() and not plain_anchor:
            uri = urldefrag(urljoin(uri, ident.strip()))[0]
        yield where, current, uri
        for key, value in current.items():
            child = f"{where}{_segment(key)}"
            if key in _ONE and isinstance(value, dict):
                stack.append((value, child, uri))
            if key in _MAP and isinstance(value, dict):
                for name, sub in value.items():
                    stack.append((sub, f"{child}{_segment(name)}", uri))
            if key in _LIST and isinstance(value, list):
                for i, sub in enumerate(value):
                    stack.append((sub, f"{child}[{i}]", uri))


def _refuse_retrieval(uri: str) -> Any:
    raise ValueError(f"fetching {uri} is not allowed")


def compile_validator(schema: dict) -> jsonschema_rs.Validator:
    """The fast validator for a checked schema, formats asserted; Rejected if unusable."""
    dialect = schema_dialect(schema)
    if dialect is None:
        raise Rejected("The schema's $schema is not draft-07 or 2020-12.")
    bad_refs = reference_problems(schema)
    if bad_refs:
        raise Rejected(f"The schema is not usable: {bad_refs[0].message}")
    try:
        return _RS_VALIDATORS[dialect](
            schema,
            validate_formats=True,
            retriever=_refuse_retrieval,
            pattern_options=jsonschema_rs.FancyRegexOptions(backtrack_limit=REGEX_BACKTRACK_LIMIT),
        )
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError) as exc:
        message = str(getattr(exc, "message", "") or exc).split("\n", 1)[0]
        raise Rejected(f"The schema cannot be compiled: {_short(message)}") from None


def json_path(segments: Any) -> str:
    """["address", "zip"] -> "$.address.zip"; [3, "a b"] -> "$[3]['a b']"."""
    return "$" + "".join(_segment(s) for s in segments)


def _segment(key: Any) -> str:
    if isinstance(key, int):
        return f"[{key}]"
    key = str(key)
    if _IDENT.match(key):
        return f".{key}"
    escaped = key.replace("\\", "\\\\").replace("'", "\\'")
    return f"['{escaped}']"


class ErrorSink:
    """Collects the first `room` errors, validating an invalid record again with
    ``iter_errors`` only while there is room left."""

    def __init__(self, validator: jsonschema_rs.Validator, room: int) -> None:
        self.validator = validator
        self.room = room
        self.errors: list[tuple[int, str, str]] = []  # (record, path, message)

    def add(self, record: int, instance: Any) -> None:
        if len(self.errors) >= self.room:
            return
        try:
            for error in self.validator.iter_errors(instance):
                self.errors.append((record, json_path(error.instance_path), _short(error.message)))
                if len(self.errors) >= self.room:
                    break
        except (ValueError, TypeError, OverflowError) as exc:
            self.add_message(record, "$", f"cannot be validated: {exc}")

    def add_message(self, record: int, path: str, message: str) -> None:
        if len(self.errors) < self.room:
            self.errors.append((record, path, _short(message)))


def is_valid(validator: jsonschema_rs.Validator, instance: Any) -> bool:
    try:
        return validator.is_valid(instance)
    except (ValueError, TypeError, OverflowError):
        return False


def _short(message: str) -> str:
    message = " ".join(message.split())
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 1] + "…"
