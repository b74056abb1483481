"""Samples go through Django's storage API: with ONRAMP_MEDIA_BUCKET set, that is S3."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.workers import ROOT


class S3StorageTests:
    def test_a_sample_uploaded_with_a_media_bucket_lands_in_s3_encrypted(self, tmp_path):
        # A fresh process: STORAGES is read once at start, as in production.
        script = textwrap.dedent(
            """
            import boto3, django
            from moto import mock_aws
            with mock_aws():
                s3 = boto3.client("s3", region_name="us-east-1")
                s3.create_bucket(Bucket="onramp-samples-test")
                django.setup()
                from django.core.files.base import ContentFile
                from django.core.files.storage import default_storage
                name = default_storage.save("DATA-1/sample.ndjson", ContentFile(b'{"id": 1}\\n'))
                head = s3.head_object(Bucket="onramp-samples-test", Key=f"samples/{name}")
                body = default_storage.open(name).read()
                print(type(default_storage._wrapped).__name__, head["ServerSideEncryption"], body)
            """
        )
        env = dict(os.environ)
        env.pop("AWS_ENDPOINT_URL", None)
        env.update(
            ONRAMP_MEDIA_BUCKET="onramp-samples-test",
            ONRAMP_VAR_DIR=str(tmp_path),
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            DJANGO_SETTINGS_MODULE="portal.settings",
        )
        result = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, timeout=120
        )
        assert result.returncode == 0, result.stderr.decode()[-2000:]
        assert result.stdout.decode().split() == ["S3Storage", "aws:kms", 'b\'{"id":', "1}\\n'"]
