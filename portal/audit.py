"""The append-only, hash-chained audit trail.

Every run start, step transition and every action a person takes writes exactly one
`AuditEvent` through `audit_record`. Each event carries the hash of the one before it,
so `manage.py audit_verify` can tell a changed, inserted or deleted row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from django.db import DEFAULT_DB_ALIAS, connections, models, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from portal.models import AuditChainHead, AuditEvent

GENESIS_HASH = "0" * 64
SYSTEM_ACTOR = "system"
# The database triggers migration 0003 puts on the audit table (PostgreSQL).
PG_TRIGGERS = ("portal_auditevent_append_only", "portal_auditevent_no_truncate")


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


_batch = threading.local()


@contextmanager
def audit_batch() -> Iterator[None]:
    """Within this block (inside one transaction) events are appended together when it
    ends: one lock of the chain head for all of them instead of one each. The run engine
    uses it to record a step's end and the next step's start in a single transaction."""
    if getattr(_batch, "events", None) is not None:
        yield  # already batching
        return
    _batch.events = []
    try:
        yield
        events, _batch.events = _batch.events, None
        if events:
            _append(events)
    finally:
        _batch.events = None


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
    event = AuditEvent(
        created_at=timezone.now(),
        actor=user,
        actor_label=label[:150],
        action=action,
        object_type=object_type,
        object_id=object_id,
        object_label=object_label,
        data=payload,
    )
    pending = getattr(_batch, "events", None)
    if pending is not None:
        pending.append(event)
    else:
        _append([event])
    return event


def _append(events: list[AuditEvent]) -> None:
    """Chain and insert events under one lock of the chain head."""
    # No savepoint: when the caller has a transaction the events commit or roll back with
    # it, which is the point; when it has none, this block is the transaction.
    with transaction.atomic(savepoint=False):
        head = AuditChainHead.objects.select_for_update().filter(pk=1).first()
        if head is None:
            AuditChainHead.objects.get_or_create(pk=1)
            head = AuditChainHead.objects.select_for_update().get(pk=1)
        for event in events:
            event.seq = head.last_seq + 1
            event.prev_hash = head.last_hash
            event.hash = hash_of(event)
            head.last_seq = event.seq
            head.last_hash = event.hash
        # One INSERT for the lot. AuditEvent's own manager refuses bulk_create so nothing
        # else can add events outside the chain; this is the chain.
        models.QuerySet(model=AuditEvent).bulk_create(events)
        head.save(update_fields=["last_seq", "last_hash"])


def audit_event_filter(
    *,
    object_type: str = "",
    object_id: str = "",
    actor: str = "",
    action: str = "",
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
) -> QuerySet[AuditEvent]:
    """Events matching every given filter, newest first. Dates are whole days, inclusive.

    `action` matches exactly or as a dotted prefix ("run" finds "run.started").
    """
    events = AuditEvent.objects.order_by("-seq")
    if object_type:
        events = events.filter(object_type=object_type)
    if object_id:
        events = events.filter(object_id=object_id)
    if actor:
        events = events.filter(actor_label=actor)
    if action:
        events = events.filter(Q(action=action) | Q(action__startswith=f"{action}."))
    if date_from:
        events = events.filter(created_at__gte=_start_of_day(date_from))
    if date_to:
        events = events.filter(created_at__lt=_start_of_day(date_to + dt.timedelta(days=1)))
    return events


def _start_of_day(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


class _Head(NamedTuple):
    seq: int
    hash: str
    exists: bool


def _read_head() -> _Head:
    head = AuditChainHead.objects.filter(pk=1).values_list("last_seq", "last_hash").first()
    if head is None:
        return _Head(0, GENESIS_HASH, exists=False)
    return _Head(head[0], head[1], exists=True)


def audit_verify(*, chunk_size: int = 2000) -> list[str]:
    """Walk the whole chain in seq order and describe every sign of tampering.

    An empty list means every event hashes to its stored hash, links to the one before
    it, seq runs 1, 2, 3... without gaps, and the chain head names the newest event.
    Streams the table, so its memory use does not grow with the number of events.
    """
    problems: list[str] = []
    # Read the head before and after the walk: events appended while we walk are genuine.
    head_before = _read_head()
    last_seq, last_hash = 0, GENESIS_HASH
    events = AuditEvent.objects.order_by("seq").iterator(chunk_size=chunk_size)
    for event in events:
        if hash_of(event) != event.hash:
            problems.append(f"event seq {event.seq} was changed")
        if event.seq <= last_seq:
            problems.append(f"event seq {event.seq} is not a valid position (inserted)")
        elif event.seq > last_seq + 1:
            if last_seq == 0:
                problems.append(f"events missing before seq {event.seq} (deleted)")
            else:
                problems.append(f"events missing between seq {last_seq} and {event.seq} (deleted)")
        elif event.prev_hash != last_hash:
            if last_seq == 0:
                problems.append(f"event seq {event.seq} does not start the chain (inserted)")
            else:
                problems.append(
                    f"event seq {event.seq} does not follow seq {last_seq} (inserted or re-ordered)"
                )
        last_seq, last_hash = event.seq, event.hash
    head_after = _read_head()
    if last_seq and not head_after.exists:
        problems.append("the audit chain head is missing (deleted)")
    elif last_seq < head_before.seq:
        problems.append(f"the newest events after seq {last_seq} were deleted")
    elif last_seq > head_after.seq:
        problems.append(
            f"events after seq {head_after.seq} are not in the chain head "
            f"(inserted, newest is seq {last_seq})"
        )
    elif any(head.seq == last_seq and head.hash != last_hash for head in (head_before, head_after)):
        problems.append(f"event seq {last_seq} does not match the chain head (changed or replaced)")
    return problems


@contextmanager
def audit_triggers_lifted(*, using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """Lift the database triggers that keep the audit table append-only, then restore them.

    Only for wiping a whole database: `manage.py flush`, which the test suite runs between
    transactional tests. Needs the rights to alter the table, as dropping them would.
    """
    connection = connections[using]
    table = AuditEvent._meta.db_table
    quoted = connection.ops.quote_name(table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # ALTER TABLE refuses to run while deferred FK checks are queued in this transaction.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass(%s) "
                "AND tgname = ANY(%s) AND tgenabled <> 'D'",
                [quoted, list(PG_TRIGGERS)],
            )
            lifted = [name for (name,) in cursor.fetchall()]
            for name in lifted:
                cursor.execute(f"ALTER TABLE {quoted} DISABLE TRIGGER {name}")
        elif connection.vendor == "sqlite":
            cursor.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s",
                [table],
            )
            lifted = cursor.fetchall()
            for name, _sql in lifted:
                cursor.execute(f"DROP TRIGGER {connection.ops.quote_name(name)}")
        else:
            lifted = []
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            for item in lifted:
                if connection.vendor == "postgresql":
                    cursor.execute(f"ALTER TABLE {quoted} ENABLE TRIGGER {item}")
                else:
                    cursor.execute(item[1])
