"""The texts of the handoff (SOP-001 steps 8-10), as pure functions of the request and its
prod plan: the notice to downstream consumers, the draft runbook entry, and reading e-mail
addresses out of free text."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

# Addresses inside free text ("BI team <bi@example.com>; reco@example.com").
_EMAIL_IN_TEXT = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_SEPARATORS = re.compile(r"[\s,;]+")


def emails_in(text: str) -> list[str]:
    """The e-mail addresses found in `text`, first occurrence first, without repeats."""
    found: dict[str, str] = {}
    for address in _EMAIL_IN_TEXT.findall(text or ""):
        found.setdefault(address.lower(), address)
    return list(found.values())


def parse_recipients(text: str) -> tuple[list[str], list[str]]:
    """(valid addresses, entries that are not an address) from a list separated by commas,
    semicolons, spaces or new lines; repeats (any case) are dropped."""
    valid: dict[str, str] = {}
    invalid: list[str] = []
    for token in _SEPARATORS.split(text or ""):
        token = token.strip().strip("<>")
        if not token:
            continue
        try:
            validate_email(token)
        except ValidationError:
            invalid.append(token)
        else:
            valid.setdefault(token.lower(), token)
    return list(valid.values()), invalid


@dataclass(frozen=True)
class ConsumersNotice:
    recipients: list[str]
    subject: str
    message: str


def _sentence(text: str) -> str:
    """Free text on one line, without its closing full stop (the caller adds one)."""
    return " ".join((text or "").split()).rstrip(".")


def processed_location(environment: Any, source: str) -> str:
    return f"s3://{environment.resource(environment.processed_bucket_name)}/source={source}/"


def consumers_notice(request: Any, environment: Any, plan: dict[str, Any]) -> ConsumersNotice:
    """What the engineer sends the downstream consumers once prod is live (prefilled)."""
    schema = plan["schema_object"]
    partitioning = plan["config_item"]["item"]["output_partitioning"]
    lines = [
        "Hello,",
        "",
        f"The data source {request.source_name} ({request.key}) is live in "
        f"{environment.name}, and its processed data is available to you.",
        "",
        f"What: {_sentence(request.description) or request.source_name}.",
        f"Where: {processed_location(environment, request.source_name)} "
        f"(partitioned {partitioning})",
        f"Schema: version {schema['version']}, {schema['uri']}",
        f"Format delivered by the producer: {request.get_data_format_display() or 'not stated'}",
        f"Latency SLA: {request.get_latency_sla_display() or 'not stated'}",
        f"Retention: {request.retention_days or 'not stated'} days",
        f"Owner: {request.owner_team}",
        "",
        "Questions go to the owner team or the data engineering on-call; the ticket is linked "
        "below.",
    ]
    return ConsumersNotice(
        recipients=emails_in(request.downstream_consumers),
        subject=f"Data available: {request.source_name} ({request.key})",
        message="\n".join(lines),
    )


def runbook_draft(request: Any, environment: Any, plan: dict[str, Any]) -> str:
    """A draft runbook entry for the source's errors in `environment`, in Markdown."""
    name, env = request.source_name, environment.name
    bucket, alarm = plan["bucket"]["name"], plan["alarm"]
    table = plan["config_item"]["table"]
    dashboard = plan["dashboard_widget"]["dashboard_name"]
    widget = plan["dashboard_widget"]["widget"]["properties"]["title"]
    state_machine = environment.resource(environment.state_machine_name)
    arn = plan["target"]["Arn"]
    schema = plan["schema_object"]
    region = plan["environment"]["region"]
    requester = request.requested_by
    contact = requester.get_username() + (f" <{requester.email}>" if requester.email else "")
    key = "incoming/<file>"
    event = (
        '{"source":"aws.s3","detail-type":"Object Created",'
        f'"detail":{{"bucket":{{"name":"{bucket}"}},"object":{{"key":"{key}"}}}}}}'
    )
    return "\n".join(
        [
            f"## Source `{name}` ({request.key}) — {env}",
            "",
            f"Data from {request.owner_team}: {_sentence(request.description) or name}. "
            f"Format {request.get_data_format_display() or 'not stated'}, schema version "
            f"{request.schema_version}, latency SLA "
            f"{request.get_latency_sla_display() or 'not stated'}.",
            "",
            "### Where errors show",
            "",
            f"- **Alarm:** `{alarm['AlarmName']}` — {alarm['Namespace']} "
            f"`{alarm['MetricName']}` for Source={name}, more than {alarm['Threshold']:g} "
            f"in {alarm['Period'] // 60} minutes.",
            f"- **Dashboard:** `{dashboard}`, widget “{widget}” (files, error rate, p95 latency).",
            f"- **Metadata table:** `{table}`, items `pk = SOURCE#{name}`, "
            "`sk = FILE#<object key>` (status, error, output location).",
            f"- **State machine:** `{state_machine}` ({arn}), started by the EventBridge rule "
            f"`{plan['rule']['name']}` for objects under `incoming/` of `{bucket}`.",
            f"- **Schema:** `{schema['uri']}` (version {schema['version']}).",
            "",
            "### Find the failing files",
            "",
            "```bash",
            f"aws dynamodb query --region {region} --table-name {table} \\",
            "  --key-condition-expression 'pk = :pk AND begins_with(sk, :f)' \\",
            f'  --expression-attribute-values \'{{":pk":{{"S":"SOURCE#{name}"}},'
            '":f":{"S":"FILE#"}}\' \\',
            "  --query 'Items[?status.S!=`SUCCEEDED`]'",
            f"aws stepfunctions list-executions --region {region} \\",
            f"  --state-machine-arn {arn} --status-filter FAILED",
            "```",
            "",
            "A validation error means the producer sent records that break schema version "
            f"{request.schema_version}: fetch the file from `s3://{bucket}/incoming/`, check it "
            f"against the schema and tell {request.owner_team}. Do not change the schema "
            "without a new onboarding revision.",
            "",
            "### Re-drive a file",
            "",
            "Once the cause is fixed, copy the object onto itself: S3 sends a new “Object "
            "Created” event and the rule starts the workflow again (versioning keeps the old "
            "version).",
            "",
            "```bash",
            f"aws s3 cp s3://{bucket}/{key} s3://{bucket}/{key} \\",
            "  --metadata-directive REPLACE",
            "```",
            "",
            "Or start the state machine with the event by hand:",
            "",
            "```bash",
            f"aws stepfunctions start-execution --region {region} --state-machine-arn {arn} \\",
            f"  --input '{event}'",
            "```",
            "",
            f"Then check the metadata item `FILE#{key}` says SUCCEEDED and the output is under "
            f"`{processed_location(environment, name)}`.",
            "",
            "### Owners",
            "",
            f"- Source and data: {request.owner_team} (requested by {contact})",
            "- Pipeline: data engineering on-call",
            f"- Ticket: {request.key}",
            "",
        ]
    )
