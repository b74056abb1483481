"""portal/aws.py: the client factory and the idempotent KMS key helper, against the sandbox."""

from __future__ import annotations

import threading
import uuid

import pytest
from botocore.exceptions import ClientError

from portal import aws


def _env(environments, name):
    return next(env for env in environments if env.name == name)


def _unique_table() -> str:
    return f"aws-test-{uuid.uuid4().hex[:10]}"


class ClientCacheTests:
    def test_it_reuses_a_client_for_the_same_service_and_environment(self, environments):
        dev, staging = _env(environments, "dev"), _env(environments, "staging")

        assert aws.client("s3") is aws.client("s3")
        assert aws.client("s3", dev) is aws.client("s3", dev)
        assert aws.client("s3", dev) is not aws.client("s3", staging)
        assert aws.client("s3", dev) is not aws.client("dynamodb", dev)

    def test_it_builds_new_clients_after_reset(self, environments):
        dev = _env(environments, "dev")
        before = aws.client("lambda", dev)

        aws.reset_clients()

        after = aws.client("lambda", dev)
        assert after is not before
        assert after.get_alias(FunctionName="ingest-handler", Name="production")["Name"]

    def test_it_hands_every_thread_the_same_client(self, environments):
        dev = _env(environments, "dev")
        aws.reset_clients()
        seen: list[object] = []
        barrier = threading.Barrier(8)

        def grab() -> None:
            barrier.wait()
            seen.append(aws.client("dynamodb", dev))

        threads = [threading.Thread(target=grab) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        assert len(seen) == 8
        assert len({id(c) for c in seen}) == 1

    def test_it_assumes_the_role_once_and_not_per_call(self, environments, sandbox):
        dev = _env(environments, "dev")
        aws.reset_clients()
        assert aws.client("sts", dev).get_caller_identity()["Account"] == dev.account_id
        # From now on AssumeRole fails: calls keep working on the credentials already held.
        sandbox.inject(service="sts", operation="AssumeRole", code="AccessDenied", count=-1)

        for _ in range(3):
            aws.client("sts", dev).get_caller_identity()
        aws.client("dynamodb", dev).list_tables()

        aws.reset_clients()  # a fresh session has to assume the role, and cannot
        with pytest.raises(ClientError) as caught:
            aws.client("sts", dev).get_caller_identity()
        assert caught.value.response["Error"]["Code"] == "AccessDenied"
        assert caught.value.operation_name == "AssumeRole"


class ClientConfigTests:
    def test_it_uses_the_environments_region_and_the_sandbox_endpoint(self, environments, sandbox):
        dev = _env(environments, "dev")
        dev.region = "eu-central-1"

        client = aws.client("dynamodb", dev)

        assert client.meta.region_name == "eu-central-1"
        assert client.meta.endpoint_url == sandbox.url

    def test_it_falls_back_to_the_settings_region_without_an_environment(self, sandbox, settings):
        settings.AWS_REGION = "ap-southeast-2"

        client = aws.client("sqs")

        assert client.meta.region_name == "ap-southeast-2"
        assert client.meta.endpoint_url == sandbox.url

    def test_it_talks_to_real_aws_when_no_endpoint_is_set(self, settings):
        settings.AWS_ENDPOINT_URL = ""
        try:
            client = aws.client("dynamodb")
            assert client.meta.endpoint_url == "https://dynamodb.us-east-1.amazonaws.com"
        finally:
            aws.reset_clients()

    def test_it_bounds_retries_and_timeouts_from_settings(self, sandbox, settings):
        settings.AWS_MAX_ATTEMPTS = 7
        settings.AWS_CONNECT_TIMEOUT = 2.5
        settings.AWS_READ_TIMEOUT = 12.0

        config = aws.client("kms").meta.config

        assert config.retries == {"mode": "standard", "total_max_attempts": 7}
        assert config.connect_timeout == 2.5
        assert config.read_timeout == 12.0

    def test_it_retries_throttling_up_to_max_attempts(self, environments, sandbox, settings):
        settings.AWS_MAX_ATTEMPTS = 2
        dev = _env(environments, "dev")
        ddb = aws.client("dynamodb", dev)

        sandbox.inject(
            service="dynamodb", operation="ListTables", code="ThrottlingException", count=1
        )
        assert "TableNames" in ddb.list_tables()  # the one throttled call was retried

        sandbox.inject(
            service="dynamodb", operation="ListTables", code="ThrottlingException", count=2
        )
        with pytest.raises(ClientError) as caught:
            ddb.list_tables()
        assert caught.value.response["Error"]["Code"] == "ThrottlingException"
        assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 1

    def test_it_signs_sandbox_calls_with_dummy_credentials(self, sandbox, monkeypatch):
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREALKEYFROMENV00")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "real-secret-from-env")
        aws.reset_clients()

        signer = aws.client("sts")._request_signer

        assert signer._credentials.get_frozen_credentials().access_key == "testing"


class AssumeRoleTests:
    def test_it_lands_calls_in_each_environments_account(self, environments):
        for env in environments:
            identity = aws.client("sts", env).get_caller_identity()

            assert identity["Account"] == env.account_id
            assert identity["Arn"] == (
                f"arn:aws:sts::{env.account_id}:assumed-role/onramp-deployer/onramp-{env.name}"
            )

    def test_resources_made_in_one_environment_are_not_in_another(self, environments):
        dev, staging = _env(environments, "dev"), _env(environments, "staging")
        name = _unique_table()
        dev_ddb = aws.client("dynamodb", dev)
        arn = dev_ddb.create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )["TableDescription"]["TableArn"]
        try:
            assert f":{dev.account_id}:table/{name}" in arn
            assert name in dev_ddb.list_tables()["TableNames"]
            assert name not in aws.client("dynamodb", staging).list_tables()["TableNames"]
        finally:
            dev_ddb.delete_table(TableName=name)


def _keys_tagged(kms, alias: str) -> list[str]:
    found = []
    for page in kms.get_paginator("list_keys").paginate():
        for key in page["Keys"]:
            tags = kms.list_resource_tags(KeyId=key["KeyId"]).get("Tags", [])
            if {"TagKey": aws.KMS_ALIAS_TAG, "TagValue": alias} in tags:
                state = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"]
                if state != "PendingDeletion":
                    found.append(key["KeyId"])
    return found


class _Crash(Exception):
    """The process dying between CreateKey and CreateAlias."""


def _crash(key_id: str) -> None:
    raise _Crash(key_id)


class EnsureKmsKeyTests:
    def test_it_creates_a_key_once_and_then_leaves_it(self, environments):
        kms = aws.client("kms", _env(environments, "dev"))
        alias = f"alias/test-{uuid.uuid4().hex[:10]}"

        key_id, action = aws.ensure_kms_key(kms, alias=alias, description="t", tags={"a": "b"})
        again_id, again = aws.ensure_kms_key(kms, alias=alias, description="t")

        assert (action, again) == ("created", "unchanged")
        assert again_id == key_id
        assert kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"] == key_id
        assert _keys_tagged(kms, alias) == [key_id]

    def test_it_adopts_the_key_left_by_a_crash_before_create_alias(self, environments):
        kms = aws.client("kms", _env(environments, "dev"))
        alias = f"alias/test-{uuid.uuid4().hex[:10]}"

        with pytest.raises(_Crash) as crashed:
            aws.ensure_kms_key(kms, alias=alias, description="t", on_created=_crash)
        orphan = str(crashed.value)
        with pytest.raises(kms.exceptions.NotFoundException):
            kms.describe_key(KeyId=alias)

        key_id, action = aws.ensure_kms_key(kms, alias=alias, description="t")

        assert (key_id, action) == (orphan, "updated")
        assert kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"] == orphan
        assert _keys_tagged(kms, alias) == [orphan]

    def test_it_never_reuses_a_key_pending_deletion(self, environments):
        kms = aws.client("kms", _env(environments, "dev"))
        alias = f"alias/test-{uuid.uuid4().hex[:10]}"
        with pytest.raises(_Crash) as crashed:
            aws.ensure_kms_key(kms, alias=alias, description="t", on_created=_crash)
        kms.schedule_key_deletion(KeyId=str(crashed.value), PendingWindowInDays=7)

        key_id, action = aws.ensure_kms_key(kms, alias=alias, description="t")

        assert action == "created"
        assert key_id != str(crashed.value)
        assert _keys_tagged(kms, alias) == [key_id]

    def test_it_calls_on_created_right_after_create_key(self, environments):
        kms = aws.client("kms", _env(environments, "dev"))
        alias = f"alias/test-{uuid.uuid4().hex[:10]}"
        seen: list[tuple[str, bool]] = []

        def on_created(key_id: str) -> None:
            try:
                kms.describe_key(KeyId=alias)
                seen.append((key_id, True))
            except kms.exceptions.NotFoundException:
                seen.append((key_id, False))

        key_id, _ = aws.ensure_kms_key(kms, alias=alias, description="t", on_created=on_created)

        assert seen == [(key_id, False)]  # the key existed, the alias did not yet
