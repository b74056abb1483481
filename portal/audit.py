"""The append-only, hash-chained audit trail.

Every run start, step transition and every action a person takes writes exactly one
`AuditEvent` through `audit_record`. Each event carries the hash of the one before it,
so `manage.py audit_verify` can tell a changed, inserted or deleted row.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from django.db import DEFAULT_DB_ALIAS, connection, connections, models, transaction
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
    _batch.events, _batch.writes = [], []
    try:
        yield
        events, writes = _batch.events, _batch.writes
        _batch.events = _batch.writes = None
        if events:
            _append(events, writes)
        else:
            _execute(writes)
    finally:
        _batch.events = _batch.writes = None


def audit_batch_write(sql: str, params: list[Any]) -> None:
    """Have the batch's append execute this UPDATE too: in the same statement on
    PostgreSQL (one round trip less for the run engine's step updates), just before it on
    SQLite. Outside a batch it is executed at once."""
    writes = getattr(_batch, "writes", None)
    if writes is None:
        _execute([(sql, params)])
    else:
        writes.append((sql, params))


def _execute(writes: list[tuple[str, list[Any]]]) -> None:
    with connection.cursor() as cursor:
        for sql, params in writes:
            cursor.execute(sql, params)


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


# The chain head as this thread last left it. Only a guess, checked by the database: an
# append first tries to move the head from this (seq, hash), and only when another process
# moved it since does it lock the head and read it, which costs one more round trip.
_seen = threading.local()


def _append(events: list[AuditEvent], writes: list[tuple[str, list[Any]]] | None = None) -> None:
    """Chain and insert events, moving the chain head in the same transaction."""
    # No savepoint: when the caller has a transaction the events commit or roll back with
    # it, which is the point; when it has none, this block is the transaction.
    with transaction.atomic(savepoint=False):
        writes = list(writes or [])
        guess = getattr(_seen, "head", None)
        if guess is None or not _chain_and_insert(events, guess, writes, expected=True):
            head = _lock_head()
            if head is None:
                AuditChainHead.objects.get_or_create(pk=1)
                head = _lock_head()
            _chain_and_insert(events, head or (0, GENESIS_HASH), writes, expected=False)
        _seen.head = (events[-1].seq, events[-1].hash)


# An append runs twice for every step the run engine executes, so its statements are
# written out rather than built by the query compiler, which costs about ten times what
# they do. Values go through each field's get_db_prep_save, so they are stored exactly as
# the ORM would store them. AuditEvent's own manager refuses bulk inserts so that nothing
# else can add events outside the chain; this is the chain.


def _lock_head() -> tuple[int, str] | None:
    """Lock the chain head row: (last_seq, last_hash), or None before the first event."""
    with connection.cursor() as cursor:
        cursor.execute(_sql(connection.vendor).lock_head)
        row = cursor.fetchone()
    return (row[0], row[1]) if row else None


def _chain_and_insert(
    events: list[AuditEvent],
    head: tuple[int, str],
    writes: list[tuple[str, list[Any]]],
    *,
    expected: bool,
) -> bool:
    """Chain the events onto `head`, insert them, move the head past them, and execute the
    batch's other writes (emptying `writes`).

    With expected=True the head is only a guess: no event is inserted unless the head row
    still holds it, and False says so. Otherwise the caller holds the head's lock.
    """
    last_seq, last_hash = head
    for event in events:
        event.seq = last_seq + 1
        event.prev_hash = last_hash
        event.hash = hash_of(event)
        last_seq, last_hash = event.seq, event.hash
    sql = _sql(connection.vendor)
    move = sql.move_head_from if expected else sql.move_head
    move_params: list[Any] = [last_seq, last_hash, *(head if expected else ())]
    values = [
        [field.get_db_prep_save(field.pre_save(event, True), connection) for field in sql.fields]
        for event in events
    ]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # One statement: each insert reads the moved head, so a head that was not there
            # to move inserts nothing. Data-modifying WITH clauses each run exactly once,
            # whether or not anything reads them.
            ctes = [f"w{i} AS ({write})" for i, (write, _) in enumerate(writes)]
            ctes.append(f"head AS ({move} RETURNING id)")
            ctes += [
                f"e{i} AS ({sql.insert} {sql.select_row} FROM head RETURNING id, seq)"
                for i in range(len(events))
            ]
            union = " UNION ALL ".join(f"SELECT id, seq FROM e{i}" for i in range(len(events)))  # noqa: S608 - no values
            params = [p for _, write_params in writes for p in write_params]
            params += move_params + [v for row in values for v in row]
            cursor.execute(f"WITH {', '.join(ctes)} {union}", params)
            rows = cursor.fetchall()
        else:
            for write, write_params in writes:
                cursor.execute(write, write_params)
            cursor.execute(move, move_params)
            rows = []
            if cursor.rowcount == 1:
                listed = ", ".join([sql.values_row] * len(events))
                cursor.execute(
                    f"{sql.insert} VALUES {listed} RETURNING id, seq",
                    [v for row in values for v in row],
                )
                rows = cursor.fetchall()
        writes.clear()  # executed, whatever became of the events
    if not rows:
        return False
    ids = {seq: pk for pk, seq in rows}
    for event in events:
        event.pk = ids[event.seq]
        event._state.adding = False
        event._state.db = connection.alias
    return True


class _Statements(NamedTuple):
    fields: list[models.Field]
    lock_head: str
    move_head: str
    move_head_from: str
    insert: str  # INSERT INTO ... (columns), to complete with VALUES or SELECT
    values_row: str  # (%s, ...), one event's values
    select_row: str  # SELECT %s, ..., one event's values


def _column(model: type[models.Model], name: str) -> str:
    """The database column of one of `model`'s concrete fields."""
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field)  # not a reverse relation or generic foreign key
    return field.column


@functools.cache
def _sql(vendor: str) -> _Statements:
    """The append's statements, made once (the vendor picks the quoting and locking)."""
    quote = connection.ops.quote_name
    head = quote(AuditChainHead._meta.db_table)
    seq, hash_ = (quote(_column(AuditChainHead, n)) for n in ("last_seq", "last_hash"))
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    move = f"UPDATE {head} SET {seq} = %s, {hash_} = %s WHERE id = 1"  # noqa: S608 - names from model metadata
    fields = [field for field in AuditEvent._meta.concrete_fields if not field.primary_key]
    columns = ", ".join(quote(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    return _Statements(
        fields=fields,
        lock_head=f"SELECT {seq}, {hash_} FROM {head} WHERE id = 1{lock}",  # noqa: S608 - names from model metadata
        move_head=move,
        move_head_from=f"{move} AND {seq} = %s AND {hash_} = %s",
        insert=f"INSERT INTO {quote(AuditEvent._meta.db_table)} ({columns})",
        values_row=f"({placeholders})",
        select_row=f"SELECT {placeholders}",
    )


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
