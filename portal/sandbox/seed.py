"""Create the existing ETL pipeline in each environment of the sandbox, idempotently.

Everything goes through `portal.aws.client(service, env)`, the production code path, so
with the environments' role ARNs each environment's resources land in its own sandbox
account. Each resource is read first and only created when it is missing; running
`seed` twice creates nothing the second time.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import uuid
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from portal import aws

if TYPE_CHECKING:
    from portal.models import Environment

logger = logging.getLogger(__name__)

DEFAULT_FUNCTIONS = ("ingest-handler", "validate-handler", "transform-handler", "output-handler")
SANDBOX_ACCOUNTS = {"dev": "111111111111", "staging": "222222222222", "prod": "333333333333"}
SANDBOX_ROLE_NAME = "onramp-deployer"
SECRET_NAME = "etl/external-api-token"  # noqa: S105 - the name, not the value
LAMBDA_RUNTIME = "python3.12"
PUBLISHED_VERSIONS = 2


@dataclass(frozen=True)
class SeedAction:
    environment: str
    resource: str
    action: str  # created | updated | unchanged

    def __str__(self) -> str:
        return f"{self.environment}: {self.resource} {self.action}"


def sandbox_account(name: str, position: int = 0) -> str:
    """The sandbox account of an environment: 111…, 222…, 333… for dev, staging, prod."""
    if name in SANDBOX_ACCOUNTS:
        return SANDBOX_ACCOUNTS[name]
    return str(4 + position % 6) * 12


def sandbox_role_arn(account_id: str) -> str:
    return f"arn:aws:iam::{account_id}:role/{SANDBOX_ROLE_NAME}"


def seed(environments: Iterable[Environment]) -> list[SeedAction]:
    """Create whatever is missing of the pipeline in each environment; what was done."""
    actions: list[SeedAction] = []
    for env in environments:
        actions += _Seeder(env).run()
    return actions


def handler_zip(function: str, version: int) -> bytes:
    """A tiny, byte-for-byte reproducible deployment package."""
    source = (
        f'"""{function} v{version} (sandbox)."""\n\n\n'
        "def handler(event, context):\n"
        f'    return {{"function": "{function}", "version": {version}, "event": event}}\n'
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo("handler.py", date_time=(2024, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        archive.writestr(info, source)
    return buffer.getvalue()


def _trust(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": f"{service}.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
    )


class _Seeder:
    def __init__(self, env: Environment) -> None:
        self.env = env
        self.actions: list[SeedAction] = []
        self.account_id = ""

    def run(self) -> list[SeedAction]:
        self.account_id = aws.client("sts", self.env).get_caller_identity()["Account"]
        lambda_role = self.role(
            f"etl-lambda-exec-{self.env.name}",
            "lambda",
            {"logs:*": "*", "dynamodb:*": "*", "s3:*": "*", "kms:Decrypt": "*"},
        )
        sfn_role = self.role(
            f"etl-sfn-exec-{self.env.name}", "states", {"lambda:InvokeFunction": "*"}
        )
        self.table()
        for template in (self.env.processed_bucket_name, self.env.schema_bucket_name):
            self.bucket(self.env.resource(template))
        key_id = self.kms_key()
        self.secret(key_id)
        alias_arns = [self.function(name, lambda_role) for name in self.functions]
        state_machine_arn = self.state_machine(sfn_role, alias_arns)
        self.role(
            self.env.resource(self.env.events_role_name),
            "events",
            {"states:StartExecution": state_machine_arn},
        )
        self.dashboard()
        return self.actions

    @property
    def functions(self) -> list[str]:
        return list(self.env.lambda_functions or DEFAULT_FUNCTIONS)

    def done(self, resource: str, action: str) -> None:
        self.actions.append(SeedAction(self.env.name, resource, action))
        logger.debug("sandbox seed %s: %s %s", self.env.name, resource, action)

    def tags(self) -> dict[str, str]:
        return {"Environment": self.env.name, "Pipeline": "etl", "ManagedBy": "onramp-sandbox"}

    # --- IAM ------------------------------------------------------------------------------

    def role(self, name: str, service: str, allow: dict[str, str]) -> str:
        iam = aws.client("iam", self.env)
        try:
            arn = iam.get_role(RoleName=name)["Role"]["Arn"]
            self.done(f"IAM role {name}", "unchanged")
            return str(arn)
        except ClientError as exc:
            if aws.error_code(exc) != "NoSuchEntity":
                raise
        arn = iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=_trust(service),
            Description=f"ETL pipeline ({self.env.name}): {service}",
            Tags=[{"Key": k, "Value": v} for k, v in self.tags().items()],
        )["Role"]["Arn"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": action, "Resource": resource}
                for action, resource in allow.items()
            ],
        }
        iam.put_role_policy(RoleName=name, PolicyName="pipeline", PolicyDocument=json.dumps(policy))
        self.done(f"IAM role {name}", "created")
        return str(arn)

    # --- Storage ----------------------------------------------------------------------------

    def table(self) -> None:
        ddb = aws.client("dynamodb", self.env)
        name = self.env.resource(self.env.metadata_table_name)
        try:
            ddb.describe_table(TableName=name)
            self.done(f"DynamoDB table {name}", "unchanged")
            return
        except ddb.exceptions.ResourceNotFoundException:
            pass
        ddb.create_table(
            TableName=name,
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
            Tags=[{"Key": k, "Value": v} for k, v in self.tags().items()],
        )
        self.done(f"DynamoDB table {name}", "created")

    def bucket(self, name: str) -> None:
        s3 = aws.client("s3", self.env)
        try:
            s3.head_bucket(Bucket=name)
            action = "unchanged"
        except ClientError as exc:
            if aws.error_code(exc) not in ("404", "NoSuchBucket"):
                raise
            kwargs: dict[str, Any] = {"Bucket": name}
            region = s3.meta.region_name
            if region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
            s3.create_bucket(**kwargs)
            s3.put_bucket_tagging(
                Bucket=name,
                Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in self.tags().items()]},
            )
            action = "created"
        if s3.get_bucket_versioning(Bucket=name).get("Status") != "Enabled":
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
            action = "updated" if action == "unchanged" else action
        self.done(f"S3 bucket {name}", action)

    # --- Keys and secrets -------------------------------------------------------------------

    def kms_key(self) -> str:
        alias = self.env.resource(self.env.kms_key_alias)
        key_id, action = aws.ensure_kms_key(
            aws.client("kms", self.env),
            alias=alias,
            description=f"ETL pipeline data key ({self.env.name})",
            tags=self.tags(),
        )
        self.done(f"KMS key {alias}", action)
        return key_id

    def secret(self, key_id: str) -> None:
        sm = aws.client("secretsmanager", self.env)
        try:
            sm.describe_secret(SecretId=SECRET_NAME)
            self.done(f"secret {SECRET_NAME}", "unchanged")
            return
        except sm.exceptions.ResourceNotFoundException:
            pass
        sm.create_secret(
            Name=SECRET_NAME,
            Description="Token the output handler sends to the external API.",
            KmsKeyId=key_id,
            # The same token on a retry makes CreateSecret idempotent.
            ClientRequestToken=str(uuid.uuid5(uuid.NAMESPACE_URL, f"onramp:{self.account_id}")),
            SecretString=secrets.token_urlsafe(32),
            Tags=[{"Key": k, "Value": v} for k, v in self.tags().items()],
        )
        self.done(f"secret {SECRET_NAME}", "created")

    # --- Compute ----------------------------------------------------------------------------

    def function(self, name: str, role_arn: str) -> str:
        """The function with PUBLISHED_VERSIONS versions and its alias; the alias ARN."""
        lam = aws.client("lambda", self.env)
        action = "unchanged"
        try:
            lam.get_function(FunctionName=name)
        except lam.exceptions.ResourceNotFoundException:
            lam.create_function(
                FunctionName=name,
                Runtime=LAMBDA_RUNTIME,
                Role=role_arn,
                Handler="handler.handler",
                Code={"ZipFile": handler_zip(name, 1)},
                Description=f"ETL pipeline {name} ({self.env.name})",
                Timeout=60,
                MemorySize=256,
                Tags={**self.tags(), "Function": name},
                Publish=True,
            )
            action = "created"
        versions = self._published_versions(lam, name)
        while len(versions) < PUBLISHED_VERSIONS:
            code = handler_zip(name, len(versions) + 1)
            if versions:
                updated = lam.update_function_code(FunctionName=name, ZipFile=code)
                sha = updated["CodeSha256"]
            else:
                sha = lam.get_function(FunctionName=name)["Configuration"]["CodeSha256"]
            lam.publish_version(FunctionName=name, CodeSha256=sha)
            versions = self._published_versions(lam, name)
            action = "updated" if action == "unchanged" else action
        alias = self.env.lambda_alias
        try:
            alias_arn = lam.get_alias(FunctionName=name, Name=alias)["AliasArn"]
        except lam.exceptions.ResourceNotFoundException:
            alias_arn = lam.create_alias(
                FunctionName=name,
                Name=alias,
                FunctionVersion=str(max(versions)),
                Description="What the pipeline runs.",
            )["AliasArn"]
            action = "updated" if action == "unchanged" else action
        self.done(f"Lambda function {name} (versions 1-{max(versions)}, alias {alias})", action)
        return str(alias_arn)

    @staticmethod
    def _published_versions(lam: Any, name: str) -> list[int]:
        versions: list[int] = []
        for page in lam.get_paginator("list_versions_by_function").paginate(FunctionName=name):
            versions += [int(v["Version"]) for v in page["Versions"] if v["Version"].isdigit()]
        return sorted(versions)

    def state_machine(self, role_arn: str, alias_arns: list[str]) -> str:
        sfn = aws.client("stepfunctions", self.env)
        name = self.env.resource(self.env.state_machine_name)
        for page in sfn.get_paginator("list_state_machines").paginate():
            for machine in page["stateMachines"]:
                if machine["name"] == name:
                    self.done(f"state machine {name}", "unchanged")
                    return str(machine["stateMachineArn"])
        arn = sfn.create_state_machine(
            name=name,
            definition=json.dumps(_definition(self.functions, alias_arns)),
            roleArn=role_arn,
            type="STANDARD",
            tags=[{"key": k, "value": v} for k, v in self.tags().items()],
        )["stateMachineArn"]
        self.done(f"state machine {name}", "created")
        return str(arn)

    def dashboard(self) -> None:
        cw = aws.client("cloudwatch", self.env)
        name = self.env.resource(self.env.dashboard_name)
        try:
            cw.get_dashboard(DashboardName=name)
            self.done(f"dashboard {name}", "unchanged")
            return
        except ClientError as exc:
            if aws.error_code(exc) not in ("ResourceNotFound", "ResourceNotFoundException"):
                raise
        body = _dashboard_body(self.env, self.functions, region=cw.meta.region_name)
        cw.put_dashboard(DashboardName=name, DashboardBody=json.dumps(body))
        self.done(f"dashboard {name}", "created")


def _definition(functions: list[str], alias_arns: list[str]) -> dict[str, Any]:
    """Ingest → validate → transform → output, each a Task on the function's alias."""
    states: dict[str, Any] = {}
    for i, (name, arn) in enumerate(zip(functions, alias_arns, strict=True)):
        state: dict[str, Any] = {
            "Type": "Task",
            "Resource": arn,
            "Retry": [
                {
                    "ErrorEquals": ["Lambda.TooManyRequestsException", "States.Timeout"],
                    "IntervalSeconds": 2,
                    "MaxAttempts": 3,
                    "BackoffRate": 2.0,
                }
            ],
        }
        if i + 1 < len(functions):
            state["Next"] = functions[i + 1]
        else:
            state["End"] = True
        states[name] = state
    return {
        "Comment": "ETL pipeline: S3 object → ingest → validate → transform → output",
        "StartAt": functions[0],
        "States": states,
    }


def _dashboard_body(env: Environment, functions: list[str], *, region: str) -> dict[str, Any]:
    return {
        "widgets": [
            {
                "type": "metric",
                "x": 0,
                "y": 0,
                "width": 12,
                "height": 6,
                "properties": {
                    "title": "Lambda errors",
                    "region": region,
                    "stat": "Sum",
                    "period": 300,
                    "metrics": [
                        ["AWS/Lambda", "Errors", "FunctionName", name] for name in functions
                    ],
                },
            },
            {
                "type": "metric",
                "x": 12,
                "y": 0,
                "width": 12,
                "height": 6,
                "properties": {
                    "title": "Executions",
                    "region": region,
                    "stat": "Sum",
                    "period": 300,
                    "metrics": [
                        ["AWS/States", metric, "StateMachineArn", env.state_machine_arn]
                        for metric in ("ExecutionsSucceeded", "ExecutionsFailed")
                    ],
                },
            },
        ]
    }
