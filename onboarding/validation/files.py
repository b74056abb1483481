"""Names of uploaded sample files: cleaned before they are stored or shown."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from onboarding.validation.types import Limits

MAX_NAME_BYTES = 255  # what common file systems hold
_FORBIDDEN = set('<>:"/\\|?*')
_RESERVED = {
    "CON", "PRN", "AUX", "NUL", "CLOCK$", "CONIN$", "CONOUT$",
    *(f"COM{i}" for i in "123456789¹²³"),
    *(f"LPT{i}" for i in "123456789¹²³"),
}  # fmt: skip


def safe_filename(name: str, *, max_length: int = 120) -> str:
    """The last path component of `name`, cleaned: no directories or traversal, no control
    or format characters (NUL, bidi overrides), no characters Windows forbids, no leading
    dots or trailing dots/spaces, not a reserved device name, at most `max_length` characters
    (and 255 UTF-8 bytes) with the extension kept. ValueError when nothing usable is left."""
    name = unicodedata.normalize("NFC", str(name))
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(
        "_" if ch in _FORBIDDEN else ch
        for ch in name
        if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")
    )
    cleaned = " ".join(cleaned.split())  # tabs, runs of spaces
    cleaned = cleaned.lstrip(". ").rstrip(". ")
    if not cleaned or not any(ch.isalnum() for ch in cleaned):
        raise ValueError("The file name is empty once unsafe characters are removed.")
    dot = cleaned.rfind(".")
    stem, ext = (cleaned[:dot], cleaned[dot:]) if dot > 0 else (cleaned, "")
    if stem.split(".")[0].upper() in _RESERVED:
        stem = f"_{stem}"
    if len(ext) > 16 or not stem:
        stem, ext = stem + ext, ""
    room = max(max_length - len(ext), 1)
    stem = stem[:room].rstrip(". ")
    while len((stem + ext).encode("utf-8")) > MAX_NAME_BYTES and stem:
        stem = stem[:-1].rstrip(". ")
    result = stem + ext
    if not stem or not result:
        raise ValueError("The file name is empty once unsafe characters are removed.")
    return result


def check_sample_files(names: Sequence[str], *, limits: Limits = Limits()) -> list[str]:  # noqa: B008
    """Problems with one request's batch of file names: too many files, unusable names,
    names that collide once cleaned. Empty when the batch is fine."""
    problems = []
    if len(names) > limits.max_files:
        problems.append(
            f"{len(names)} files were sent at once; at most {limits.max_files} are accepted "
            "in one request."
        )
        return problems
    seen: dict[str, str] = {}
    for raw in names:
        shown = repr(raw[:60]) + ("…" if len(raw) > 60 else "")
        try:
            clean = safe_filename(raw)
        except ValueError:
            problems.append(f"The file name {shown} has no usable characters.")
            continue
        if clean.lower() in seen:
            problems.append(
                f"The file name {shown} is the same as {seen[clean.lower()]!r} once cleaned."
            )
        seen.setdefault(clean.lower(), clean)
    return problems
