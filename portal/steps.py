"""The environment check: can Onramp reach each environment, and is the pipeline there?

Read-only steps, one set per environment in rollout order. Each logs what it read and
returns it as output; a missing resource is a permanent failure that says what is missing
and where. AWS errors (AccessDenied, throttling) propagate to the engine, which classifies
them.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from portal.aws import error_code
from portal.models import Environment
from portal.runs.api import Done, PermanentStepError, StepContext, TransientStepError
from portal.runs.api import step as register_step


def _where(env: Environment) -> str:
    return f"in {env.name} (account {env.account_id}, {env.region})"


def _missing(what: str, env: Environment) -> PermanentStepError:
    return PermanentStepError(f"{what} does not exist {_where(env)}.")


def _not_active(what: str, status: str, env: Environment) -> PermanentStepError:
    return PermanentStepError(f"{what} is {status}, not ACTIVE, {_where(env)}.")


@register_step("environment.credentials", title="Credentials")
def check_credentials(ctx: StepContext) -> Done:
    env = ctx.environment()
    identity = ctx.aws("sts").get_caller_identity()
    account, arn = identity["Account"], identity["Arn"]
    ctx.log("read", f"Signed in as {arn} in account {account}.")
    if account != env.account_id:
        raise PermanentStepError(
            f"The credentials for {env.name} reach account {account}, but {env.name} is "
            f"configured for account {env.account_id}: check its role ARN and account id."
        )
    return Done({"account": account, "arn": arn, "role_arn": env.role_arn})


@register_step("environment.state_machine", title="State machine")
def check_state_machine(ctx: StepContext) -> Done:
    env = ctx.environment()
    sfn = ctx.aws("stepfunctions")
    try:
        machine = sfn.describe_state_machine(stateMachineArn=env.state_machine_arn)
    except sfn.exceptions.StateMachineDoesNotExist:
        raise _missing(f"State machine {env.resource(env.state_machine_name)}", env) from None
    status = machine.get("status", "")
    ctx.log("read", f"State machine {machine['name']} is {status}.")
    if status != "ACTIVE":
        raise _not_active(f"State machine {machine['name']}", status, env)
    return Done(
        {
            "name": machine["name"],
            "arn": machine["stateMachineArn"],
            "status": status,
            "type": machine.get("type", ""),
        }
    )


@register_step("environment.lambda_functions", title="Lambda functions")
def check_lambda_functions(ctx: StepContext) -> Done:
    env = ctx.environment()
    if not env.lambda_functions:
        raise PermanentStepError(f"{env.name} lists no Lambda functions; an admin should add them.")
    lam = ctx.aws("lambda")
    alias = env.lambda_alias
    versions: dict[str, str] = {}
    functions: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for name in env.lambda_functions:
        try:
            config = lam.get_function(FunctionName=name)["Configuration"]
        except lam.exceptions.ResourceNotFoundException:
            problems.append(f"Lambda function {name} does not exist")
            continue
        try:
            found = lam.get_alias(FunctionName=name, Name=alias)
        except lam.exceptions.ResourceNotFoundException:
            problems.append(f"Lambda function {name} has no alias {alias!r}")
            continue
        weights = (found.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
        versions[name] = found["FunctionVersion"]
        functions[name] = {
            "version": found["FunctionVersion"],
            "runtime": config.get("Runtime", ""),
            "canary": {v: float(w) for v, w in weights.items()},
        }
        canary = ", ".join(f"{v} at {float(w):.0%}" for v, w in weights.items())
        ctx.log(
            "read",
            f"{name}: alias {alias} → version {found['FunctionVersion']}"
            + (f" (canary {canary})" if canary else ""),
        )
    if problems:
        raise PermanentStepError(f"{'; '.join(problems)} {_where(env)}.")
    return Done({"alias": alias, "versions": versions, "functions": functions})


@register_step("environment.metadata_table", title="Metadata table")
def check_metadata_table(ctx: StepContext) -> Done:
    env = ctx.environment()
    ddb = ctx.aws("dynamodb")
    name = env.resource(env.metadata_table_name)
    try:
        table = ddb.describe_table(TableName=name)["Table"]
    except ddb.exceptions.ResourceNotFoundException:
        raise _missing(f"DynamoDB table {name}", env) from None
    status = table.get("TableStatus", "")
    ctx.log("read", f"Table {name} is {status} with about {table.get('ItemCount', 0)} items.")
    if status in ("CREATING", "UPDATING"):
        raise TransientStepError(f"Table {name} is {status}; checking again shortly.")
    if status != "ACTIVE":
        raise _not_active(f"DynamoDB table {name}", status, env)
    billing = (table.get("BillingModeSummary") or {}).get("BillingMode", "PROVISIONED")
    return Done(
        {
            "table": name,
            "status": status,
            "billing_mode": billing,
            "item_count": table.get("ItemCount", 0),
            "key_schema": {k["AttributeName"]: k["KeyType"] for k in table["KeySchema"]},
        }
    )


@register_step("environment.processed_bucket", title="Processed bucket")
def check_processed_bucket(ctx: StepContext) -> Done:
    env = ctx.environment()
    s3 = ctx.aws("s3")
    name = env.resource(env.processed_bucket_name)
    try:
        s3.head_bucket(Bucket=name)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchBucket"):
            raise _missing(f"S3 bucket {name}", env) from None
        if error_code(exc) in ("403", "AccessDenied"):
            raise PermanentStepError(
                f"S3 bucket {name} exists but Onramp may not read it {_where(env)} "
                "(or it belongs to another account)."
            ) from None
        raise
    versioning = s3.get_bucket_versioning(Bucket=name).get("Status") or "Disabled"
    ctx.log("read", f"Bucket {name} exists; versioning is {versioning}.")
    if versioning != "Enabled":
        ctx.log("warning", f"Versioning is {versioning} on {name}; the runbook expects Enabled.")
    return Done({"bucket": name, "versioning": versioning})


# Each environment's checks, in the order they run, with the label its steps show.
CHECKS = (
    (check_credentials, "credentials"),
    (check_state_machine, "state machine"),
    (check_lambda_functions, "Lambda functions"),
    (check_metadata_table, "metadata table"),
    (check_processed_bucket, "processed bucket"),
)
