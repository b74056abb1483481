"""Sample files: limits, content-based format detection, names, storage and hashes."""

from __future__ import annotations

import hashlib
import io
import json

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse

from onboarding import services
from onboarding.models import RequestStatus, Sample
from portal.errors import ApplicationError
from portal.models import AuditEvent
from tests.onboarding.test_requests import (
    add_samples,
    make_request,
    malformed_ndjson,
    media_fixture,  # noqa: F401 - fixture
    rita_fixture,  # noqa: F401 - fixture
    submitted_request,
    upload,
    valid_ndjson,
)
from tests.personas import PASSWORD


def parquet_bytes() -> bytes:
    table = pa.table({"id": ["a", "b"], "timestamp": ["2024-01-01T00:00:00Z"] * 2})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def avro_bytes() -> bytes:
    schema = {
        "type": "record",
        "name": "Event",
        "fields": [{"name": "id", "type": "string"}, {"name": "event_type", "type": "string"}],
    }
    buffer = io.BytesIO()
    fastavro.writer(buffer, schema, [{"id": "a", "event_type": "create"}])
    return buffer.getvalue()


def csv_bytes() -> bytes:
    return (
        b"id,timestamp,event_type\na,2024-01-01T00:00:00Z,create\nb,2024-01-01T00:00:01Z,update\n"
    )


def json_bytes() -> bytes:
    return json.dumps(
        [{"id": "a", "timestamp": "2024-01-01T00:00:00Z", "event_type": "create"}], indent=2
    ).encode()


class SampleUploadTests:
    def test_it_stores_through_the_storage_api_under_a_generated_name(self, rita):
        request = make_request(rita)
        content = valid_ndjson(1)
        (sample,) = services.sample_upload(
            request=request, actor=rita, files=[upload("clicks.ndjson", content)]
        )
        assert sample.file.name.startswith("onboarding/samples/")
        assert "clicks" not in sample.file.name
        assert default_storage.exists(sample.file.name)
        with default_storage.open(sample.file.name, "rb") as stored:
            assert stored.read() == content
        assert sample.original_name == "clicks.ndjson"

    def test_it_records_size_and_sha256(self, rita):
        request = make_request(rita)
        content = valid_ndjson(2, records=500)
        (sample,) = services.sample_upload(
            request=request, actor=rita, files=[upload("big.ndjson", content)]
        )
        assert sample.size == len(content)
        assert sample.sha256 == hashlib.sha256(content).hexdigest()

    @pytest.mark.parametrize(
        ("name", "content", "expected"),
        [
            ("looks-like.csv", json_bytes(), "json"),
            ("looks-like.json", csv_bytes(), "csv"),
            ("events.parquet.txt", valid_ndjson(3), "ndjson"),
            ("events.json", parquet_bytes(), "parquet"),
            ("events.csv", avro_bytes(), "avro"),
        ],
    )
    def test_it_detects_the_format_from_the_content_not_the_name(
        self, rita, name, content, expected
    ):
        request = make_request(rita)
        (sample,) = services.sample_upload(
            request=request, actor=rita, files=[upload(name, content)]
        )
        assert sample.detected_format == expected

    def test_it_refuses_content_of_no_supported_format(self, rita):
        request = make_request(rita)
        with pytest.raises(services.UploadRefused) as exc:
            services.sample_upload(
                request=request, actor=rita, files=[upload("x.json", b"\x00\x01\x02binary\xff")]
            )
        assert "not recognisable" in exc.value.problems[0]
        assert not Sample.objects.exists()

    def test_a_file_over_the_size_limit_refuses_the_whole_upload(self, rita, settings, media):
        settings.ONBOARDING_SAMPLE_MAX_BYTES = 200
        request = make_request(rita)
        files = [
            upload("small.ndjson", valid_ndjson(1, records=1)),
            upload("big.ndjson", b"{}\n" * 100),
        ]
        with pytest.raises(services.UploadRefused) as exc:
            services.sample_upload(request=request, actor=rita, files=files)
        assert exc.value.field == "files"
        assert exc.value.problems == ["big.ndjson: it is larger than the limit of 200 bytes."]
        assert not Sample.objects.exists()
        assert not any(path.is_file() for path in media.rglob("*"))

    def test_too_many_files_are_refused(self, rita, settings):
        settings.ONBOARDING_SAMPLE_MAX_FILES = 3
        request = make_request(rita)
        services.sample_upload(
            request=request,
            actor=rita,
            files=[upload(f"{i}.ndjson", valid_ndjson(i)) for i in range(2)],
        )
        more = [upload(f"more-{i}.ndjson", valid_ndjson(10 + i)) for i in range(2)]
        with pytest.raises(services.UploadRefused, match="at most 3 sample files"):
            services.sample_upload(request=request, actor=rita, files=more)
        assert request.samples.count() == 2

    @pytest.mark.parametrize(
        "name",
        ["../../etc/passwd.json", "..\\..\\boot.ini", "dir/evil.json", "..", "x" * 201 + ".json"],
    )
    def test_it_refuses_path_and_over_long_names(self, rita, name):
        request = make_request(rita)
        # ContentFile keeps the name as given (an UploadedFile would strip the directories).
        raw = ContentFile(valid_ndjson(1), name=name)
        with pytest.raises(services.UploadRefused) as exc:
            services.sample_upload(request=request, actor=rita, files=[raw])
        assert "name" in exc.value.problems[0]
        assert not Sample.objects.exists()

    def test_it_refuses_the_same_content_twice(self, rita):
        request = make_request(rita)
        services.sample_upload(
            request=request, actor=rita, files=[upload("a.ndjson", valid_ndjson(1))]
        )
        with pytest.raises(services.UploadRefused, match=r"same content as a\.ndjson"):
            services.sample_upload(
                request=request, actor=rita, files=[upload("b.ndjson", valid_ndjson(1))]
            )

    def test_it_refuses_an_empty_file(self, rita):
        request = make_request(rita)
        with pytest.raises(services.UploadRefused, match="empty"):
            services.sample_upload(request=request, actor=rita, files=[upload("e.ndjson", b"")])

    def test_one_upload_is_one_revision_and_one_audit_event(self, rita):
        request = make_request(rita)
        before = AuditEvent.objects.count()
        services.sample_upload(
            request=request,
            actor=rita,
            files=[upload(f"{i}.ndjson", valid_ndjson(i)) for i in range(3)],
        )
        request.refresh_from_db()
        assert request.revision == 2
        assert AuditEvent.objects.count() == before + 1
        assert AuditEvent.objects.order_by("-seq").first().action == "onboarding.samples_uploaded"

    def test_samples_cannot_be_added_to_a_submitted_request(self, rita):
        request = submitted_request(rita)
        with pytest.raises(ApplicationError, match="can be changed only"):
            services.sample_upload(
                request=request, actor=rita, files=[upload("n.ndjson", valid_ndjson(77))]
            )


class SampleDeleteTests:
    def test_it_removes_the_row_and_the_stored_file(self, rita, django_capture_on_commit_callbacks):
        request = make_request(rita)
        (sample,) = services.sample_upload(
            request=request, actor=rita, files=[upload("a.ndjson", valid_ndjson(1))]
        )
        name = sample.file.name
        with django_capture_on_commit_callbacks(execute=True):
            services.sample_delete(sample=sample, actor=rita)
        assert not Sample.objects.exists()
        assert not default_storage.exists(name)

    def test_only_a_draft_loses_samples(self, rita):
        request = submitted_request(rita)
        sample = request.samples.first()
        with pytest.raises(ApplicationError):
            services.sample_delete(sample=sample, actor=rita)
        assert request.samples.count() == 10
        assert request.status == RequestStatus.SUBMITTED


class SampleUploadPageTests:
    def _login(self, client):
        client.login(username="rita", password=PASSWORD)

    def test_it_uploads_several_files_from_the_ticket(self, client, rita):
        request = make_request(rita)
        self._login(client)
        files = [upload(f"s{i}.ndjson", valid_ndjson(i)) for i in range(3)]
        response = client.post(
            reverse("onboarding:sample-upload", args=[request.number]), {"files": files}
        )
        assert response.status_code == 302
        assert sorted(request.samples.values_list("original_name", flat=True)) == [
            "s0.ndjson",
            "s1.ndjson",
            "s2.ndjson",
        ]

    def test_errors_show_beside_the_field_and_nothing_is_kept(self, client, rita, settings):
        settings.ONBOARDING_SAMPLE_MAX_BYTES = 200
        request = make_request(rita)
        self._login(client)
        files = [
            upload("fine.ndjson", valid_ndjson(1, records=1)),
            upload("huge.ndjson", malformed_ndjson(1) * 10),
            upload("y" * 230 + ".json", valid_ndjson(2, records=1)),
        ]
        response = client.post(
            reverse("onboarding:sample-upload", args=[request.number]), {"files": files}
        )
        assert response.status_code == 200
        html = response.content.decode()
        assert 'data-testid="upload-errors"' in html
        assert "huge.ndjson: it is larger than the limit of 200 bytes." in html
        assert "its name is longer than 200 characters" in html
        assert not request.samples.exists()

    def test_a_path_in_the_uploaded_name_never_reaches_storage(self, client, rita):
        request = make_request(rita)
        self._login(client)
        evil = upload("../../../../tmp/evil.ndjson", valid_ndjson(5))
        client.post(reverse("onboarding:sample-upload", args=[request.number]), {"files": [evil]})
        sample = request.samples.get()
        assert sample.original_name == "evil.ndjson"
        assert sample.file.name.startswith("onboarding/samples/")
        assert ".." not in sample.file.name

    def test_marking_a_sample_from_the_ticket(self, client, rita):
        request = make_request(rita)
        add_samples(request, rita, valid=1, malformed=0)
        sample = request.samples.get()
        self._login(client)
        client.post(
            reverse("onboarding:sample-mark", args=[request.number, sample.pk]),
            {"expected_malformed": "1"},
        )
        sample.refresh_from_db()
        assert sample.expected_malformed is True
