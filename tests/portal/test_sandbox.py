"""portal/sandbox: seeding, fault injection, the Cost Explorer stand-in, the commands."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from datetime import date, timedelta
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from django.core.management import CommandError, call_command
from django.db import connection

from portal import aws
from portal.models import Environment
from portal.sandbox import costs, faults
from portal.sandbox.seed import DEFAULT_FUNCTIONS, SECRET_NAME, seed
from portal.sandbox.server import start_sandbox_server

ROOT = Path(__file__).resolve().parents[2]


def _database_url() -> str:
    """The test database, for a manage.py subprocess."""
    d = connection.settings_dict
    if d["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{d['NAME']}"
    auth = d.get("USER") or ""
    if d.get("PASSWORD"):
        auth += f":{d['PASSWORD']}"
    return f"postgres://{auth}@{d.get('HOST') or '127.0.0.1'}:{d.get('PORT') or 5432}/{d['NAME']}"


def _fresh_environment() -> Environment:
    """An environment in an account nothing has touched yet in this sandbox."""
    account = "9" + "".join(random.choices("0123456789", k=11))
    return Environment.objects.create(
        name=f"qa{account[-4:]}",
        order=9,
        account_id=account,
        role_arn=f"arn:aws:iam::{account}:role/onramp-deployer",
        lambda_functions=list(DEFAULT_FUNCTIONS),
    )


def _inventory(env: Environment) -> dict[str, object]:
    """Everything the seed makes in `env`, counted, read straight from the sandbox."""
    lam = aws.client("lambda", env)
    kms = aws.client("kms", env)
    alias = env.resource(env.kms_key_alias)
    tagged = []
    for key in kms.list_keys()["Keys"]:
        tags = kms.list_resource_tags(KeyId=key["KeyId"])["Tags"]
        if {"TagKey": aws.KMS_ALIAS_TAG, "TagValue": alias} in tags:
            tagged.append(key["KeyId"])
    return {
        "functions": sorted(f["FunctionName"] for f in lam.list_functions()["Functions"]),
        "versions": {
            name: sorted(
                v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]
            )
            for name in env.lambda_functions
        },
        "aliases": {
            name: [
                (a["Name"], a["FunctionVersion"])
                for a in lam.list_aliases(FunctionName=name)["Aliases"]
            ]
            for name in env.lambda_functions
        },
        "state_machines": sorted(
            m["name"]
            for m in aws.client("stepfunctions", env).list_state_machines()["stateMachines"]
        ),
        "tables": aws.client("dynamodb", env).list_tables()["TableNames"],
        "buckets": sorted(b["Name"] for b in aws.client("s3", env).list_buckets()["Buckets"]),
        "kms_keys_for_alias": tagged,
        "secrets": [
            s["Name"] for s in aws.client("secretsmanager", env).list_secrets()["SecretList"]
        ],
        "dashboards": [
            d["DashboardName"]
            for d in aws.client("cloudwatch", env).list_dashboards()["DashboardEntries"]
        ],
        "roles": sorted(r["RoleName"] for r in aws.client("iam", env).list_roles()["Roles"]),
    }


class SeedTests:
    def test_it_creates_the_whole_pipeline_in_a_new_environment(self, db, sandbox):
        env = _fresh_environment()

        actions = seed([env])

        assert {a.action for a in actions} == {"created"}
        inventory = _inventory(env)
        assert inventory["functions"] == sorted(DEFAULT_FUNCTIONS)
        for name in DEFAULT_FUNCTIONS:
            assert inventory["versions"][name] == ["$LATEST", "1", "2"]
            assert inventory["aliases"][name] == [("production", "2")]
        assert inventory["state_machines"] == [f"etl-workflow-{env.name}"]
        assert inventory["tables"] == [f"etl-metadata-{env.name}"]
        assert inventory["buckets"] == [f"etl-schemas-{env.name}", f"processed-data-{env.name}"]
        assert len(inventory["kms_keys_for_alias"]) == 1
        assert inventory["secrets"] == [SECRET_NAME]
        assert inventory["dashboards"] == [f"etl-pipeline-{env.name}"]
        assert inventory["roles"] == sorted(
            [
                f"etl-events-to-sfn-{env.name}",
                f"etl-lambda-exec-{env.name}",
                f"etl-sfn-exec-{env.name}",
            ]
        )

    def test_it_creates_nothing_the_second_time(self, db, sandbox):
        env = _fresh_environment()
        seed([env])
        before = _inventory(env)

        actions = seed([env])

        assert {a.action for a in actions} == {"unchanged"}
        assert _inventory(env) == before

    def test_it_puts_the_pipeline_the_way_the_runbooks_describe_it(self, environments):
        for env in environments:
            lam = aws.client("lambda", env)
            function = lam.get_function(FunctionName="transform-handler")["Configuration"]
            assert function["Runtime"] == "python3.12"
            assert f":{env.account_id}:function:" in function["FunctionArn"]

            machine = aws.client("stepfunctions", env).describe_state_machine(
                stateMachineArn=env.state_machine_arn
            )
            definition = json.loads(machine["definition"])
            assert machine["status"] == "ACTIVE"
            assert list(definition["States"]) == list(DEFAULT_FUNCTIONS)
            assert definition["States"]["ingest-handler"]["Resource"].endswith(
                ":function:ingest-handler:production"
            )

            table = aws.client("dynamodb", env).describe_table(
                TableName=f"etl-metadata-{env.name}"
            )["Table"]
            assert {k["AttributeName"]: k["KeyType"] for k in table["KeySchema"]} == {
                "pk": "HASH",
                "sk": "RANGE",
            }
            assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"

            s3 = aws.client("s3", env)
            for bucket in (f"processed-data-{env.name}", f"etl-schemas-{env.name}"):
                assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"

            key = aws.client("kms", env).describe_key(KeyId=f"alias/etl-{env.name}")
            assert key["KeyMetadata"]["KeyState"] == "Enabled"
            assert key["KeyMetadata"]["Arn"].split(":")[4] == env.account_id

            dashboard = aws.client("cloudwatch", env).get_dashboard(
                DashboardName=f"etl-pipeline-{env.name}"
            )
            assert len(json.loads(dashboard["DashboardBody"])["widgets"]) >= 2

            role = aws.client("iam", env).get_role(RoleName=f"etl-events-to-sfn-{env.name}")
            assert role["Role"]["Arn"] == env.events_role_arn

    def test_it_repairs_what_was_deleted(self, environments):
        staging = next(env for env in environments if env.name == "staging")
        lam = aws.client("lambda", staging)
        lam.delete_alias(FunctionName="output-handler", Name="production")

        actions = seed([staging])

        changed = [str(a) for a in actions if a.action != "unchanged"]
        assert changed == [
            "staging: Lambda function output-handler (versions 1-2, alias production) updated"
        ]
        assert (
            lam.get_alias(FunctionName="output-handler", Name="production")["FunctionVersion"]
            == "2"
        )


# (service, operation, a call that performs it)
FAULT_CALLS = {
    "sts": ("GetCallerIdentity", lambda env: aws.client("sts", env).get_caller_identity()),
    "lambda": (
        "GetFunction",
        lambda env: aws.client("lambda", env).get_function(FunctionName="ingest-handler"),
    ),
    "s3": (
        "GetBucketVersioning",
        lambda env: aws.client("s3", env).get_bucket_versioning(Bucket="processed-data-dev"),
    ),
    "dynamodb": (
        "DescribeTable",
        lambda env: aws.client("dynamodb", env).describe_table(TableName="etl-metadata-dev"),
    ),
    "stepfunctions": (
        "DescribeStateMachine",
        lambda env: aws.client("stepfunctions", env).describe_state_machine(
            stateMachineArn=env.state_machine_arn
        ),
    ),
    "kms": ("DescribeKey", lambda env: aws.client("kms", env).describe_key(KeyId="alias/etl-dev")),
    "secretsmanager": (
        "DescribeSecret",
        lambda env: aws.client("secretsmanager", env).describe_secret(SecretId=SECRET_NAME),
    ),
    "iam": ("GetRole", lambda env: aws.client("iam", env).get_role(RoleName="etl-sfn-exec-dev")),
    "cloudwatch": (
        "GetDashboard",
        lambda env: aws.client("cloudwatch", env).get_dashboard(DashboardName="etl-pipeline-dev"),
    ),
    "events": ("ListRules", lambda env: aws.client("events", env).list_rules()),
    "logs": ("DescribeLogGroups", lambda env: aws.client("logs", env).describe_log_groups()),
}


@pytest.fixture
def dev(environments):
    env = next(env for env in environments if env.name == "dev")
    aws.client("sts", env).get_caller_identity()  # assume the role before faults go in
    return env


class FaultInjectionTests:
    @pytest.mark.parametrize("service", sorted(FAULT_CALLS))
    def test_it_fails_the_call_with_the_code_and_message(self, dev, sandbox, service):
        operation, call = FAULT_CALLS[service]
        sandbox.inject(
            service=service,
            operation=operation,
            code="AccessDeniedException",
            message=f"No {operation} for you <today> & tomorrow",
            status=403,
        )

        with pytest.raises(ClientError) as caught:
            call(dev)

        error = caught.value.response["Error"]
        assert caught.value.operation_name == operation
        assert error["Code"] == "AccessDeniedException"
        assert error["Message"] == f"No {operation} for you <today> & tomorrow"
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        call(dev)  # count 1: the next call is served

    def test_the_count_goes_down_with_each_call(self, dev, sandbox):
        operation, call = FAULT_CALLS["dynamodb"]
        sandbox.inject(service="dynamodb", operation=operation, code="ValidationException", count=2)

        with pytest.raises(ClientError):
            call(dev)
        assert [f["remaining"] for f in sandbox.faults()] == [1]
        with pytest.raises(ClientError):
            call(dev)
        assert sandbox.faults() == []
        assert call(dev)["Table"]["TableStatus"] == "ACTIVE"

    def test_it_fails_until_cleared_with_count_minus_one(self, dev, sandbox):
        operation, call = FAULT_CALLS["stepfunctions"]
        # The signing name works too.
        sandbox.inject(service="states", operation=operation, code="ValidationException", count=-1)
        for _ in range(3):
            with pytest.raises(ClientError):
                call(dev)

        assert sandbox.clear() == 1

        assert call(dev)["status"] == "ACTIVE"

    def test_it_leaves_other_operations_alone(self, dev, sandbox):
        sandbox.inject(service="dynamodb", operation="DescribeTable", code="Boom", count=-1)

        assert "etl-metadata-dev" in aws.client("dynamodb", dev).list_tables()["TableNames"]
        with pytest.raises(ClientError):
            aws.client("dynamodb", dev).describe_table(TableName="etl-metadata-dev")

    def test_a_5xx_fault_is_retried_by_the_client(self, dev, sandbox, settings):
        settings.AWS_MAX_ATTEMPTS = 3
        sandbox.inject(
            service="lambda", operation="GetFunction", code="ServiceException", status=500, count=2
        )

        result = aws.client("lambda", dev).get_function(FunctionName="ingest-handler")

        assert result["ResponseMetadata"]["RetryAttempts"] == 2

    def test_it_refuses_a_fault_without_a_code(self, sandbox):
        with pytest.raises(urllib.error.HTTPError) as caught:
            faults.inject(sandbox.url, service="sts", operation="GetCallerIdentity", code="")
        assert caught.value.code == 400


def _first_of_month(day: date, back: int) -> date:
    index = day.year * 12 + day.month - 1 - back
    return date(index // 12, index % 12 + 1, 1)


class CostExplorerTests:
    @pytest.fixture
    def ce(self, sandbox):
        return aws.client("ce")

    def _thirteen_months(self, ce, group_by):
        today = date.today()
        return ce.get_cost_and_usage(
            TimePeriod={
                "Start": _first_of_month(today, 13).isoformat(),
                "End": _first_of_month(today, 0).isoformat(),
            },
            Granularity="MONTHLY",
            Metrics=["UnblendedCost"],
            GroupBy=group_by,
        )

    def test_it_answers_thirteen_months_by_service(self, ce):
        result = self._thirteen_months(ce, [{"Type": "DIMENSION", "Key": "SERVICE"}])

        months = result["ResultsByTime"]
        assert len(months) == 13
        assert months[0]["TimePeriod"]["Start"] == _first_of_month(date.today(), 13).isoformat()
        assert months[-1]["TimePeriod"]["End"] == _first_of_month(date.today(), 0).isoformat()
        assert result["GroupDefinitions"] == [{"Type": "DIMENSION", "Key": "SERVICE"}]
        for month in months:
            assert {g["Keys"][0] for g in month["Groups"]} == set(costs.SERVICES)
            for group in month["Groups"]:
                assert group["Metrics"]["UnblendedCost"]["Unit"] == "USD"
                assert float(group["Metrics"]["UnblendedCost"]["Amount"]) > 0
            assert month["Estimated"] is False
        again = self._thirteen_months(ce, [{"Type": "DIMENSION", "Key": "SERVICE"}])
        assert again["ResultsByTime"] == months  # deterministic

    def test_it_groups_by_tag_and_service(self, ce):
        result = self._thirteen_months(
            ce, [{"Type": "DIMENSION", "Key": "SERVICE"}, {"Type": "TAG", "Key": "Function"}]
        )

        last = result["ResultsByTime"][-1]["Groups"]
        lambda_keys = {g["Keys"][1] for g in last if g["Keys"][0] == "AWS Lambda"}
        assert lambda_keys == {f"Function${name}" for name in DEFAULT_FUNCTIONS}
        assert ["Amazon DynamoDB", "Function$"] in [g["Keys"] for g in last]

    def test_prod_costs_the_most_and_the_totals_add_up(self, ce):
        by_env = self._thirteen_months(ce, [{"Type": "TAG", "Key": "Environment"}])
        total = self._thirteen_months(ce, [])

        for month, whole in zip(by_env["ResultsByTime"], total["ResultsByTime"], strict=True):
            amounts = {
                g["Keys"][0]: float(g["Metrics"]["UnblendedCost"]["Amount"])
                for g in month["Groups"]
            }
            assert (
                amounts["Environment$prod"]
                > amounts["Environment$staging"]
                > amounts["Environment$dev"]
            )
            assert sum(amounts.values()) == pytest.approx(
                float(whole["Total"]["UnblendedCost"]["Amount"])
            )

    def test_last_month_has_a_driver_to_find(self, ce):
        today = date.today()
        result = ce.get_cost_and_usage(
            TimePeriod={
                "Start": _first_of_month(today, 2).isoformat(),
                "End": _first_of_month(today, 0).isoformat(),
            },
            Granularity="MONTHLY",
            Metrics=["UnblendedCost"],
            GroupBy=[{"Type": "TAG", "Key": "Function"}],
            Filter={"Tags": {"Key": "Environment", "Values": ["prod"]}},
        )
        before, last = (
            {g["Keys"][0]: float(g["Metrics"]["UnblendedCost"]["Amount"]) for g in m["Groups"]}
            for m in result["ResultsByTime"]
        )
        growth = last["Function$transform-handler"] / before["Function$transform-handler"]
        assert growth > 1.5
        assert last["Function$ingest-handler"] / before["Function$ingest-handler"] < 1.2

    def test_it_answers_daily(self, ce):
        start = date.today() - timedelta(days=10)
        result = ce.get_cost_and_usage(
            TimePeriod={"Start": start.isoformat(), "End": (start + timedelta(days=7)).isoformat()},
            Granularity="DAILY",
            Metrics=["UnblendedCost"],
        )

        days = result["ResultsByTime"]
        assert [d["TimePeriod"]["Start"] for d in days] == [
            (start + timedelta(days=i)).isoformat() for i in range(7)
        ]
        assert all(float(d["Total"]["UnblendedCost"]["Amount"]) > 0 for d in days)

    def test_it_refuses_more_than_two_groups(self, ce):
        with pytest.raises(ClientError) as caught:
            self._thirteen_months(
                ce,
                [
                    {"Type": "DIMENSION", "Key": "SERVICE"},
                    {"Type": "TAG", "Key": "Function"},
                    {"Type": "TAG", "Key": "Source"},
                ],
            )
        assert caught.value.response["Error"]["Code"] == "ValidationException"


class ServerTests:
    def test_it_starts_on_a_free_port_and_stops(self):
        server = start_sandbox_server("127.0.0.1", 0)
        health = f"{server.url}/_sandbox/health"
        with urllib.request.urlopen(health, timeout=5) as response:  # noqa: S310 - loopback
            assert json.loads(response.read()) == {"status": "ok"}

        server.stop()

        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(health, timeout=2)  # noqa: S310 - loopback

    @pytest.mark.django_db(transaction=True)
    def test_the_command_seeds_serves_and_exits_cleanly_on_sigterm(self):
        Environment.objects.create(
            name="dev",
            account_id="111111111111",
            role_arn="arn:aws:iam::111111111111:role/onramp-deployer",
            lambda_functions=["ingest-handler"],
        )
        env = {**os.environ, "DATABASE_URL": _database_url(), "ONRAMP_SANDBOX": "true"}
        env.pop("AWS_ENDPOINT_URL", None)
        process = subprocess.Popen(
            [sys.executable, "manage.py", "sandbox", "--port", "0"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: list[str] = []
        ready = threading.Event()

        def read() -> None:
            for line in process.stdout:
                lines.append(line)
                if line.startswith("sandbox ready on "):
                    ready.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert ready.wait(120), "".join(lines)
            url = next(line for line in lines if line.startswith("sandbox ready on ")).split()[-1]
            # The function lives in the dev account, so go through its role.
            sts = boto3.client(
                "sts",
                endpoint_url=url,
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
            creds = sts.assume_role(
                RoleArn="arn:aws:iam::111111111111:role/onramp-deployer",
                RoleSessionName="command-test",
            )["Credentials"]
            lam = boto3.client(
                "lambda",
                endpoint_url=url,
                region_name="us-east-1",
                aws_access_key_id=creds["AccessKeyId"],
                aws_secret_access_key=creds["SecretAccessKey"],
                aws_session_token=creds["SessionToken"],
            )
            assert (
                lam.get_alias(FunctionName="ingest-handler", Name="production")["FunctionVersion"]
                == "2"
            )

            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0
            reader.join(5)
            assert "sandbox stopped" in "".join(lines)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)


class SeedEnvironmentsTests:
    def test_it_creates_dev_staging_and_prod_with_sandbox_accounts(self, db, settings):
        settings.SANDBOX = True

        call_command("seed_environments", stdout=io.StringIO())

        rows = list(
            Environment.objects.values_list(
                "name", "order", "account_id", "role_arn", "is_production"
            )
        )
        assert rows == [
            ("dev", 0, "111111111111", "arn:aws:iam::111111111111:role/onramp-deployer", False),
            ("staging", 1, "222222222222", "arn:aws:iam::222222222222:role/onramp-deployer", False),
            ("prod", 2, "333333333333", "arn:aws:iam::333333333333:role/onramp-deployer", True),
        ]
        assert Environment.objects.get(name="dev").lambda_functions == list(DEFAULT_FUNCTIONS)

    def test_it_keeps_admin_edits_unless_reset(self, db, settings):
        settings.SANDBOX = True
        call_command("seed_environments", stdout=io.StringIO())
        Environment.objects.filter(name="staging").update(
            region="eu-west-1", lambda_alias="live", lambda_functions=["only-one"]
        )

        out = io.StringIO()
        call_command("seed_environments", stdout=out)
        staging = Environment.objects.get(name="staging")
        assert (staging.region, staging.lambda_alias, staging.lambda_functions) == (
            "eu-west-1",
            "live",
            ["only-one"],
        )
        assert "staging: unchanged" in out.getvalue()

        call_command("seed_environments", "--reset", stdout=io.StringIO())
        staging.refresh_from_db()
        assert (staging.region, staging.lambda_alias, staging.lambda_functions) == (
            settings.AWS_REGION,
            "production",
            list(DEFAULT_FUNCTIONS),
        )
        assert Environment.objects.count() == 3

    def test_outside_the_sandbox_it_reads_the_environment_variables(
        self, db, settings, monkeypatch
    ):
        settings.SANDBOX = False
        settings.ONRAMP_ENVIRONMENTS = ["dev"]
        monkeypatch.setenv("ONRAMP_ENV_DEV_ACCOUNT_ID", "123456789012")
        monkeypatch.setenv("ONRAMP_ENV_DEV_ROLE_ARN", "arn:aws:iam::123456789012:role/onramp")
        monkeypatch.setenv("ONRAMP_ENV_DEV_REGION", "eu-west-2")

        call_command("seed_environments", stdout=io.StringIO())

        dev = Environment.objects.get()
        assert (dev.account_id, dev.role_arn, dev.region) == (
            "123456789012",
            "arn:aws:iam::123456789012:role/onramp",
            "eu-west-2",
        )

    def test_outside_the_sandbox_it_names_what_is_missing(self, db, settings, monkeypatch):
        settings.SANDBOX = False
        settings.ONRAMP_ENVIRONMENTS = ["dev", "prod"]
        monkeypatch.setenv("ONRAMP_ENV_DEV_ACCOUNT_ID", "123456789012")
        monkeypatch.setenv("ONRAMP_ENV_DEV_ROLE_ARN", "")
        monkeypatch.setenv("ONRAMP_ENV_DEV_REGION", "eu-west-2")
        for suffix in ("ACCOUNT_ID", "ROLE_ARN", "REGION"):
            monkeypatch.delenv(f"ONRAMP_ENV_PROD_{suffix}", raising=False)

        with pytest.raises(CommandError) as caught:
            call_command("seed_environments", stdout=io.StringIO())

        assert "ONRAMP_ENV_PROD_ACCOUNT_ID" in str(caught.value)
        assert "ONRAMP_ENV_PROD_REGION" in str(caught.value)
        assert not Environment.objects.exists()

    def test_it_refuses_an_invalid_account_id(self, db, settings, monkeypatch):
        settings.SANDBOX = False
        settings.ONRAMP_ENVIRONMENTS = ["dev"]
        monkeypatch.setenv("ONRAMP_ENV_DEV_ACCOUNT_ID", "12345")
        monkeypatch.setenv("ONRAMP_ENV_DEV_ROLE_ARN", "")
        monkeypatch.setenv("ONRAMP_ENV_DEV_REGION", "eu-west-2")

        with pytest.raises(CommandError, match="account_id"):
            call_command("seed_environments", stdout=io.StringIO())
