"""The plan as the ticket shows it: ordered sections of label/value rows, with the JSON
document an approver must read (policies, patterns, parameters) pretty-printed.
Presentation only; the plan itself is computed by `onboarding.plan`."""

from __future__ import annotations

import json
from typing import Any

from onboarding.plan import canonical_json, plan_digest


def pretty_json(value: Any) -> str:
    """Indented, in the order the plan builds it (Sid, Effect, Principal, ... reads best)."""
    return json.dumps(value, indent=2, ensure_ascii=False)


def render_plan(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The plan as ordered sections for the ticket: a title, label/value rows, and the JSON
    document an approver must read (policies, patterns, parameters) pretty-printed."""
    spec, env = plan["spec"], plan["environment"]
    bucket, kms, rule, target = plan["bucket"], plan["kms"], plan["rule"], plan["target"]
    schema, config, alarm = plan["schema_object"], plan["config_item"], plan["alarm"]
    widget = plan["dashboard_widget"]
    encryption = bucket["encryption"]
    lifecycle = bucket["lifecycle"]["Rules"][0]
    transitions = ", ".join(
        f"{t['StorageClass']} after {t['Days']} days" for t in lifecycle.get("Transitions", [])
    )
    return [
        _section(
            "Summary",
            [
                ("Source", plan["source"]),
                ("Environment", env["name"]),
                ("Account", env["account_id"]),
                ("Region", env["region"]),
                ("Owner team", spec["owner_team"]),
                ("Format", spec["format"]),
                ("Schema version", spec["schema_version"]),
                ("Sensitivity", ", ".join(spec["sensitivity"]) or "none declared"),
                ("Retention", f"{spec['retention_days']} days"),
                ("Latency SLA", spec["latency_sla"]),
                ("Producer role", spec["producer_role_arn"]),
                ("Plan digest (sha256)", plan_digest(plan)),
            ],
        ),
        _section(
            "S3 bucket",
            [
                ("Name", bucket["name"]),
                ("Region", bucket["region"]),
                ("Versioning", bucket["versioning"]),
                (
                    "Default encryption",
                    f"{encryption['SSEAlgorithm']} with {encryption['KMSMasterKeyID']}, "
                    f"bucket key {'on' if encryption['BucketKeyEnabled'] else 'off'}",
                ),
                (
                    "Block Public Access",
                    ", ".join(k for k, on in bucket["public_access_block"].items() if on),
                ),
                ("Object ownership", bucket["ownership"]),
                ("Producer may write under", bucket["producer_prefix"]),
                ("Event notifications", "EventBridge"),
            ],
            json_value=bucket["policy"],
        ),
        _section(
            "Lifecycle",
            [
                ("Current versions expire after", f"{lifecycle['Expiration']['Days']} days"),
                ("Transitions", transitions or "none (retention too short)"),
                (
                    "Previous versions expire after",
                    f"{lifecycle['NoncurrentVersionExpiration']['NoncurrentDays']} days",
                ),
                (
                    "Incomplete multipart uploads aborted after",
                    f"{lifecycle['AbortIncompleteMultipartUpload']['DaysAfterInitiation']} days",
                ),
            ],
            json_value=bucket["lifecycle"],
        ),
        _section(
            "KMS key",
            [
                ("Alias", kms["alias"]),
                ("Dedicated key", kms["dedicated"]),
                ("Why", kms["reason"]),
                *([("Automatic rotation", kms["rotation_enabled"])] if kms["dedicated"] else []),
            ],
            json_value=kms.get("key_policy"),
        ),
        _section(
            "EventBridge rule",
            [
                ("Name", rule["name"]),
                ("Event bus", rule["event_bus"]),
                ("State", rule["state"]),
                ("Description", rule["description"]),
            ],
            json_value=rule["event_pattern"],
        ),
        _section(
            "Step Functions target",
            [
                ("Rule", target["rule"]),
                ("Target id", target["Id"]),
                ("State machine", target["Arn"]),
                ("Role EventBridge assumes", target["RoleArn"]),
            ],
        ),
        _section(
            "Schema registration",
            [
                ("Location", schema["uri"]),
                ("Version", schema["version"]),
                ("Content type", schema["content_type"]),
            ],
        ),
        _section(
            "Pipeline configuration item",
            [("Table", config["table"]), *config["key"].items()],
            json_value=config["item"],
        ),
        _section(
            "Validation errors alarm",
            [(key, value) for key, value in alarm.items() if key != "Tags"],
            json_value=alarm,
        ),
        _section(
            "Dashboard widget",
            [
                ("Dashboard", widget["dashboard_name"]),
                ("Title", widget["widget"]["properties"]["title"]),
            ],
            json_value=widget["widget"],
        ),
        _section("Tags", sorted(plan["tags"].items())),
    ]


def _section(title: str, items: list[tuple[str, Any]], *, json_value: Any = None) -> dict[str, Any]:
    return {
        "title": title,
        "items": [(label, _display(value)) for label, value in items],
        "json": None if json_value is None else pretty_json(json_value),
    }


def _display(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return canonical_json(value)
