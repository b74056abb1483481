"""The append-only, hash-chained audit trail.

Every run start, step transition and every action a person takes writes exactly one
`AuditEvent` through `audit_record`. Each event carries the hash of the one before it,
so `manage.py audit_verify` can tell a changed, inserted or deleted row.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.db import models, transaction
from django.utils import timezone

from portal.models import AuditChainHead, AuditEvent

GENESIS_HASH = "0" * 64
SYSTEM_ACTOR = "system"


def event_hash(
    *,
    seq: int,
    created_at: str,
    actor_id: int | None,
    actor_label: str,
    action: str,
    object_type: str,
    object_id: str,
    object_label: str,
    data: Any,
    prev_hash: str,
) -> str:
    """The hash of one event's content and its predecessor's hash (canonical JSON)."""
    body = json.dumps(
        [
            seq,
            created_at,
            actor_id,
            actor_label,
            action,
            object_type,
            object_id,
            object_label,
            data,
            prev_hash,
        ],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def hash_of(event: AuditEvent) -> str:
    return event_hash(
        seq=event.seq,
        created_at=event.created_at.isoformat(),
        actor_id=event.actor_id,
        actor_label=event.actor_label,
        action=event.action,
        object_type=event.object_type,
        object_id=event.object_id,
        object_label=event.object_label,
        data=event.data,
        prev_hash=event.prev_hash,
    )


def describe(obj: models.Model | None) -> tuple[str, str, str]:
    """(object_type, object_id, object_label) for a model instance."""
    if obj is None:
        return "", "", ""
    return obj._meta.label_lower, str(obj.pk), str(obj)[:255]


def audit_record(
    *,
    action: str,
    actor: Any = None,
    obj: models.Model | None = None,
    data: dict[str, Any] | None = None,
    actor_label: str | None = None,
) -> AuditEvent:
    """Append one event. Runs inside the caller's transaction when there is one."""
    object_type, object_id, object_label = describe(obj)
    user = actor if getattr(actor, "is_authenticated", False) else None
    label = actor_label or (user.get_username() if user else SYSTEM_ACTOR)
    # Round-trip through JSON so the stored value and the hashed value are the same.
    payload = json.loads(json.dumps(data or {}, default=str))
    with transaction.atomic():
        head, _ = AuditChainHead.objects.select_for_update().get_or_create(pk=1)
        event = AuditEvent(
            seq=head.last_seq + 1,
            created_at=timezone.now(),
            actor=user,
            actor_label=label[:150],
            action=action,
            object_type=object_type,
            object_id=object_id,
            object_label=object_label,
            data=payload,
            prev_hash=head.last_hash,
        )
        event.hash = hash_of(event)
        event.save(force_insert=True)
        head.last_seq = event.seq
        head.last_hash = event.hash
        head.save(update_fields=["last_seq", "last_hash"])
    return event
