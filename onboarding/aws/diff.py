"""How a plan differs from what AWS has: pure, no AWS calls.

`diff_plan(plan, live)` says, for every (section, field) the plan defines, "create"
(nothing there yet), "update" (there, but different) or "unchanged"; `live` is what
`onboarding.aws.live.read_live` read. The set of (section, field) pairs depends only on the
plan, so a ticket, a provisioning step and the drift check all show the same rows.
Provisioning works per section: `changed_fields(plan, live, section)` is what applying
that section would change.

Values are compared after normalising what AWS is free to reorder or restate: policies as
parsed JSON with statements, actions, resources and condition values as sets; event patterns
with their value lists as sets; tags as dicts; alarm dimensions by name; lifecycle rules by
id. A KMS key named in the bucket encryption by key id or key ARN matches the plan's alias
when the alias points at that key. Attributes AWS or the pipeline add and the plan does not
name (extra config-item attributes, other dashboard widgets, alarm state) are not compared.
The tag `portal.aws.ensure_kms_key` puts on a key it makes (onramp:alias) is the portal's
own bookkeeping, not a difference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from onboarding.plan import SECTIONS, canonical_json
from portal.aws import KMS_ALIAS_TAG

CREATE, UPDATE, UNCHANGED = "create", "update", "unchanged"


@dataclass
class PlanChange:
    section: str
    field: str
    expected: Any
    actual: Any
    action: str  # "create" | "update" | "unchanged"


# The fields compared per section (identity fields such as names and ARNs are how the
# resource is found, so they are not compared again). config_item compares every attribute
# of the planned item, the alarm every put_metric_alarm parameter.
_BUCKET_FIELDS = (
    "region",
    "versioning",
    "encryption",
    "public_access_block",
    "ownership",
    "policy",
    "notifications",
    "lifecycle",
    "tags",
)
_DEDICATED_KEY_FIELDS = (
    "description",
    "key_spec",
    "key_usage",
    "rotation_enabled",
    "key_policy",
    "tags",
)


def section_fields(plan: dict[str, Any], section: str) -> tuple[str, ...]:
    """The fields of `section` the diff compares, in display order."""
    if section == "bucket":
        return _BUCKET_FIELDS
    if section == "kms":
        return ("key_state", *(_DEDICATED_KEY_FIELDS if plan["kms"]["dedicated"] else ()))
    if section == "rule":
        return ("event_pattern", "state", "description", "tags")
    if section == "target":
        return ("Arn", "RoleArn")
    if section == "schema_object":
        return ("content_type", "metadata")
    if section == "config_item":
        return tuple(k for k in plan["config_item"]["item"] if k not in plan["config_item"]["key"])
    if section == "alarm":
        return tuple(plan["alarm"])
    if section == "dashboard_widget":
        return ("widget",)
    raise KeyError(section)


# --- diffing -----------------------------------------------------------------------------


def diff_plan(plan: dict[str, Any], live: dict[str, Any]) -> list[PlanChange]:
    """Every field the plan sets, with what AWS has and what applying the plan would do."""
    return [change for section in SECTIONS for change in diff_section(plan, live, section)]


def diff_section(plan: dict[str, Any], live: dict[str, Any], section: str) -> list[PlanChange]:
    planned, current = _planned_values(plan, section), _live_values(plan, live, section)
    changes = []
    for field in section_fields(plan, section):
        expected = planned.get(field)
        actual = None if current is None else current.get(field)
        if actual is None:
            action = CREATE
        elif normalise(section, field, expected) == normalise(section, field, actual):
            action = UNCHANGED
        else:
            action = UPDATE
        changes.append(PlanChange(section, field, expected, actual, action))
    return changes


def section_actions(changes: list[PlanChange]) -> dict[str, str]:
    """One action per section: create when nothing exists, unchanged when nothing differs,
    update otherwise."""
    by_section: dict[str, set[str]] = {}
    for change in changes:
        by_section.setdefault(change.section, set()).add(change.action)
    return {
        section: actions.pop() if len(actions) == 1 else UPDATE
        for section, actions in by_section.items()
    }


def pending(changes: list[PlanChange]) -> list[PlanChange]:
    """The changes applying the plan would make."""
    return [change for change in changes if change.action != UNCHANGED]


def _planned_values(plan: dict[str, Any], section: str) -> dict[str, Any]:
    if section == "config_item":
        return plan["config_item"]["item"]
    return plan[section]


def _live_values(plan: dict[str, Any], live: dict[str, Any], section: str) -> Any:
    current = live.get(section)
    if current is None:
        return None
    if section == "config_item":
        return current["item"]
    if section == "bucket":
        return {**current, "encryption": _encryption_as_planned(plan, live, current)}
    return current


def _encryption_as_planned(
    plan: dict[str, Any], live: dict[str, Any], bucket: dict[str, Any]
) -> dict[str, Any] | None:
    """Bucket encryption may name the planned key by alias, alias ARN, key id or key ARN."""
    encryption = bucket.get("encryption")
    if not encryption:
        return encryption
    kms = live.get("kms") or {}
    same_key = {
        plan["kms"]["alias"],
        plan["kms"]["alias_arn"],
        kms.get("key_id"),
        kms.get("key_arn"),
    }
    if encryption.get("KMSMasterKeyID") in same_key - {None}:
        return {**encryption, "KMSMasterKeyID": plan["bucket"]["encryption"]["KMSMasterKeyID"]}
    return encryption


# --- normalising -------------------------------------------------------------------------


def normalise(section: str, field: str, value: Any) -> Any:
    """A value in the form the diff compares (see the module docstring)."""
    if value is None:
        return None
    if field in ("policy", "key_policy"):
        return normalise_policy(value)
    if field in ("tags", "Tags"):  # AWS-reserved aws:* tags are not ours to set or remove
        return {k: v for k, v in tags_dict(value).items() if not k.startswith("aws:")}
    if field == "event_pattern":
        return _unordered(value)
    if field == "lifecycle":
        return _normalise_lifecycle(value)
    if field == "Dimensions":
        return sorted((d["Name"], d["Value"]) for d in value)
    if field == "Threshold":
        return float(value)
    if field in ("AlarmActions", "OKActions", "InsufficientDataActions"):
        return sorted(value)
    if section == "config_item" and isinstance(value, list | set | tuple):
        return sorted(value, key=canonical_json)
    if field == "metadata":
        return {str(k).lower(): v for k, v in value.items()}
    return value


def normalise_policy(policy: dict[str, Any] | str) -> dict[str, Any]:
    """An IAM/S3/KMS policy with everything order-insensitive made comparable."""
    parsed: dict[str, Any] = json.loads(policy) if isinstance(policy, str) else policy
    statements = parsed.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    return {
        **{key: value for key, value in parsed.items() if key != "Statement"},
        "Statement": sorted((_normalise_statement(s) for s in statements), key=canonical_json),
    }


def tags_dict(tags: Any) -> dict[str, str]:
    """Tags as {key: value} from a dict, [{Key, Value}] or KMS's [{TagKey, TagValue}]."""
    if isinstance(tags, dict):
        return {str(k): str(v) for k, v in tags.items()}
    return {
        str(tag.get("Key", tag.get("TagKey"))): str(tag.get("Value", tag.get("TagValue", "")))
        for tag in tags or []
    }


def _normalise_statement(statement: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in statement.items():
        if key in ("Action", "NotAction", "Resource", "NotResource"):
            out[key] = sorted(set(_as_list(value)))
        elif key in ("Principal", "NotPrincipal") and isinstance(value, dict):
            out[key] = {kind: sorted(set(_as_list(ids))) for kind, ids in value.items()}
        elif key == "Condition":
            out[key] = {
                operator: {
                    name: sorted({_condition_value(v) for v in _as_list(values)})
                    for name, values in pairs.items()
                }
                for operator, pairs in value.items()
            }
        else:
            out[key] = value
    return out


def _condition_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _normalise_lifecycle(value: dict[str, Any]) -> list[dict[str, Any]]:
    rules = []
    for rule in value.get("Rules", []):
        rule = dict(rule)
        if rule.get("Filter") in ({}, {"Prefix": ""}):
            rule.pop("Filter")
        if rule.get("Prefix") == "":
            rule.pop("Prefix")
        for key in ("Transitions", "NoncurrentVersionTransitions"):
            if rule.get(key):
                rule[key] = sorted(rule[key], key=canonical_json)
            else:
                rule.pop(key, None)
        rules.append(rule)
    return sorted(rules, key=lambda rule: str(rule.get("ID", "")))


def _unordered(value: Any) -> Any:
    """JSON with every list treated as a set (EventBridge pattern value lists are ORs)."""
    if isinstance(value, dict):
        return {key: _unordered(item) for key, item in value.items()}
    if isinstance(value, list):
        return sorted((_unordered(item) for item in value), key=canonical_json)
    return value


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple | set) else [value]


# --- what applying the plan would change -------------------------------------------------


def differs(change: PlanChange) -> bool:
    """Whether applying the plan would change this field. The tag `ensure_kms_key` puts on
    a key it makes (onramp:alias) is the portal's own bookkeeping, not drift."""
    if change.action == UNCHANGED:
        return False
    if change.section == "kms" and change.field == "tags" and change.actual is not None:
        actual = {k: v for k, v in tags_dict(change.actual).items() if k != KMS_ALIAS_TAG}
        return normalise("kms", "tags", actual) != normalise("kms", "tags", change.expected)
    return True


def changed_fields(plan: dict[str, Any], live: dict[str, Any], section: str) -> dict[str, Any]:
    """{field: change} for the fields of `section` that differ from the plan."""
    return {c.field: c for c in diff_section(plan, live, section) if differs(c)}
