"""What a sample is, from its first bytes only. The client's file name and content type are
never consulted.

* ``PAR1`` → Parquet, ``Obj\\x01`` → Avro object container.
* Known compressed or binary containers (gzip, zip, bzip2, xz, zstd, 7z, PDF, images,
  executables) and anything with NUL bytes or invalid UTF-8 → not a sample format (None);
  ``describe_binary()`` names them so a rejection can say "this is a gzip file".
* Text whose first non-blank character is ``{`` or ``[``: NDJSON when its first line is a
  complete JSON value and another line follows it; otherwise JSON (one document). A single
  line holding one value is JSON; it is also valid NDJSON, so a sample declared NDJSON is
  accepted for it (see ``compatible()``).
* Any other UTF-8 text → CSV (a header row and data rows).
"""

from __future__ import annotations

import orjson

from onboarding.validation.types import SampleFormat

HEAD_BYTES = 64 * 1024
BOM = b"\xef\xbb\xbf"

_MAGIC = [
    (b"\x1f\x8b", "gzip-compressed"),
    (b"PK\x03\x04", "a zip archive"),
    (b"PK\x05\x06", "a zip archive"),
    (b"\xfd7zXZ\x00", "xz-compressed"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed"),
    (b"\x04\x22\x4d\x18", "lz4-compressed"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
    (b"%PDF-", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\x7fELF", "an executable"),
    (b"SQLite format 3", "an SQLite database"),
    (b"\xd0\xcf\x11\xe0", "an Office document"),
]


def detect_format(head: bytes) -> SampleFormat | None:
    """The sample format its first bytes (up to 64 KiB is plenty) show, or None."""
    if head.startswith(b"PAR1"):
        return SampleFormat.PARQUET
    if head.startswith(b"Obj\x01"):
        return SampleFormat.AVRO
    if describe_binary(head) or not _is_text(head):
        return None
    body = head.removeprefix(BOM).lstrip()
    if not body:
        return None
    if body[:1] in (b"{", b"["):
        return SampleFormat.NDJSON if _looks_like_ndjson(body) else SampleFormat.JSON
    return SampleFormat.CSV


def describe_binary(head: bytes) -> str:
    """ "gzip-compressed", "a zip archive", … for a known non-sample container, else ""."""
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head[:3] == b"BZh" and head[3:4].isdigit() and head[4:10] == b"1AY&SY":
        return "bzip2-compressed"
    return ""


def compatible(declared: SampleFormat, detected: SampleFormat | None, head: bytes) -> bool:
    """Whether content detected as `detected` can honestly be read as `declared`."""
    if detected == declared:
        return True
    if declared is SampleFormat.NDJSON and detected is SampleFormat.JSON:
        # A document on one line is one NDJSON record (or a broken one, which the NDJSON
        # reader reports); a line too long for the head is left to the reader's limit.
        return b"\n" not in head.strip()
    return False


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The head may end in the middle of a character.
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def _looks_like_ndjson(body: bytes) -> bool:
    first, sep, rest = body.partition(b"\n")
    if not sep:
        return False
    first = first.rstrip()
    if not (_parses(first) or (first.endswith((b"}", b"]")) and len(first) > 1)):
        return False
    following = rest.lstrip()
    return bool(following) and following[:1] in (b"{", b"[")


def _parses(line: bytes) -> bool:
    if len(line) > HEAD_BYTES:
        return False
    try:
        orjson.loads(line)
    except orjson.JSONDecodeError:
        return False
    return True
