"""Services of sample files: upload (streamed: size, sha256, format from the content),
remove, and mark as expected malformed. The validate run records each sample's report
(`onboarding.request_state.sample_record_report`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.files import File
from django.db import transaction

from onboarding.models import (
    DataFormat,
    OnboardingRequest,
    Sample,
)
from onboarding.rules import sample_limits
from onboarding.services.revisions import (
    locked_request,
    require_editable,
    require_editor,
    revise,
)
from onboarding.validation import (
    SampleFormat,
    check_sample_files,
    detect_format,
    safe_filename,
)
from onboarding.validation.types import human_bytes
from portal.errors import ApplicationError

MAX_SAMPLE_NAME = 200
DETECT_HEAD_BYTES = 64 * 1024


class UploadRefused(ApplicationError):
    """One or more files of an upload were refused; nothing of the upload was kept."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("Nothing was uploaded: " + " ".join(problems), field="files")
        self.problems = problems


@dataclass
class _Incoming:
    file: File
    name: str
    size: int = 0
    sha256: str = ""
    head: bytes = b""
    detected: str = ""
    problems: list[str] = field(default_factory=list)


def _sample_storage() -> Any:
    return Sample._meta.get_field("file").storage


def _clean_sample_name(name: str) -> str:
    if len(name) > MAX_SAMPLE_NAME:
        raise ApplicationError(f"its name is longer than {MAX_SAMPLE_NAME} characters")
    if "/" in name or "\\" in name or "\x00" in name or name.strip() in ("", ".", ".."):
        raise ApplicationError("its name is a path, not a file name")
    try:
        return safe_filename(name)
    except ValueError:
        raise ApplicationError("its name has no usable characters") from None


def _inspect(incoming: _Incoming, *, max_bytes: int) -> None:
    """Size, sha256 and the first bytes, streamed; stops reading past the limit."""
    digest = hashlib.sha256()
    head = bytearray()
    for chunk in incoming.file.chunks():
        incoming.size += len(chunk)
        if incoming.size > max_bytes:
            break
        digest.update(chunk)
        if len(head) < DETECT_HEAD_BYTES:
            head += chunk[: DETECT_HEAD_BYTES - len(head)]
    incoming.sha256 = digest.hexdigest()
    incoming.head = bytes(head)


def sample_upload(*, request: OnboardingRequest, actor: Any, files: Sequence[File]) -> list[Sample]:
    """Store sample files under generated names, with their size, sha256 and the format
    detected from their content. Either every file is kept or none is."""
    require_editor(actor, request)
    limits = sample_limits()
    if not files:
        raise ApplicationError("Choose at least one file.", field="files")
    stored: list[str] = []
    try:
        with transaction.atomic():
            request = locked_request(request)
            require_editable(request)
            existing = dict(request.samples.values_list("sha256", "original_name"))
            if len(existing) + len(files) > limits.max_files:
                raise UploadRefused(
                    [
                        f"a request holds at most {limits.max_files} sample files; it has "
                        f"{len(existing)} and this upload has {len(files)}."
                    ]
                )
            incoming = _check_files(files, existing=existing, max_bytes=limits.max_file_bytes)
            problems = [f"{i.name[:80]}: {'; '.join(i.problems)}." for i in incoming if i.problems]
            if not problems:  # names that collide once cleaned
                problems = check_sample_files([i.name for i in incoming], limits=limits)
            if problems:
                raise UploadRefused(problems)
            samples = []
            for item in incoming:
                sample = Sample(
                    request=request,
                    original_name=item.name,
                    size=item.size,
                    sha256=item.sha256,
                    detected_format=item.detected,
                    uploaded_by=actor,
                )
                sample.file.save("sample", item.file, save=False)
                stored.append(sample.file.name)
                sample.save()
                samples.append(sample)
            revise(
                request,
                actor=actor,
                summary=f"Added sample(s): {', '.join(s.original_name for s in samples)}.",
                action="onboarding.samples_uploaded",
                data={
                    "samples": [
                        {"id": s.pk, "name": s.original_name, "sha256": s.sha256, "size": s.size}
                        for s in samples
                    ],
                },
            )
    except Exception:
        for name in stored:  # the rows are rolled back: do not leave their files behind
            _sample_storage().delete(name)
        raise
    return samples


def _check_files(
    files: Sequence[File], *, existing: dict[str, str], max_bytes: int
) -> list[_Incoming]:
    seen = dict(existing)
    incoming = []
    for upload in files:
        raw_name = str(getattr(upload, "name", "") or "")
        item = _Incoming(file=upload, name=raw_name)
        incoming.append(item)
        try:
            item.name = _clean_sample_name(raw_name)
        except ApplicationError as exc:
            item.name = raw_name.replace("\x00", "")[:80] or "(no name)"
            item.problems.append(exc.message)
            continue
        _inspect(item, max_bytes=max_bytes)
        if item.size > max_bytes:
            item.problems.append(f"it is larger than the limit of {human_bytes(max_bytes)}")
            continue
        if item.size == 0:
            item.problems.append("it is empty")
            continue
        if item.sha256 in seen:
            item.problems.append(f"it has the same content as {seen[item.sha256]}")
            continue
        seen[item.sha256] = item.name
        detected = detect_format(item.head)
        if detected is None:
            item.problems.append(
                "its content is not recognisable as JSON, NDJSON, CSV, Parquet or Avro"
            )
            continue
        item.detected = DataFormat(SampleFormat(detected).value).value
    return incoming


def sample_delete(*, sample: Sample, actor: Any) -> None:
    """Remove a sample and its file (only while the request can be changed)."""
    request = sample.request
    require_editor(actor, request)
    with transaction.atomic():
        request = locked_request(request)
        require_editable(request)
        locked = request.samples.select_for_update().filter(pk=sample.pk).first()
        if locked is None:
            raise ApplicationError("This sample was already removed.")
        name, storage_name = locked.original_name, locked.file.name
        locked.delete()
        revise(
            request,
            actor=actor,
            summary=f"Removed sample {name}.",
            action="onboarding.sample_deleted",
            data={"sample": name, "sha256": locked.sha256},
        )
        transaction.on_commit(lambda: _sample_storage().delete(storage_name))


def sample_mark(*, sample: Sample, actor: Any, expected_malformed: bool) -> Sample:
    """Mark a sample as one the schema must reject (or not)."""
    request = sample.request
    require_editor(actor, request)
    with transaction.atomic():
        request = locked_request(request)
        require_editable(request)
        sample = request.samples.select_for_update().get(pk=sample.pk)
        if sample.expected_malformed == expected_malformed:
            return sample
        sample.expected_malformed = expected_malformed
        sample.save(update_fields=["expected_malformed"])
        verb = "Marked" if expected_malformed else "Unmarked"
        revise(
            request,
            actor=actor,
            summary=f"{verb} sample {sample.original_name} as expected malformed.",
            action="onboarding.sample_marked",
            data={"sample": sample.original_name, "expected_malformed": expected_malformed},
        )
    return sample
