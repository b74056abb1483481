"""The few statements every step executes, written out rather than built by the query
compiler: on the development machine the ORM spends about half a millisecond building an
update or a select that SQLite then runs in a few tens of microseconds. Values still go
through each field's get_db_prep_save, so they are stored exactly as the ORM would.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import connection, models

from portal.audit import audit_batch_write
from portal.runs.models import Run, Step

_writes = threading.local()


def lock_run(run_id: int) -> tuple[str | None, bool]:
    """Lock the run row; (lease owner, cancel requested), or (None, False) if it is gone.

    On PostgreSQL the same statement makes this transaction commit without waiting for the
    WAL flush (set_config(..., true) is SET LOCAL). That is safe for the engine's own
    bookkeeping: a crash of the database server (a killed worker loses nothing) can forget
    the last moments of commits, whole and in order, never a later one without the earlier
    ones. The run then looks as it did a moment before: a step recorded as running or
    succeeded runs again once its lease expires, and steps are idempotent, so it converges.
    The audit events go with the rows they describe, so the chain stays intact. Whatever
    people do (start, approve, cancel) still commits durably, and as the log is written in
    order, that also makes durable every commit they could have seen before.
    """
    with connection.cursor() as cursor:
        cursor.execute(_lock_run_sql(connection.vendor), [run_id])
        row = cursor.fetchone()
    return (row[0], bool(row[1])) if row else (None, False)


@functools.cache
def _lock_run_sql(vendor: str) -> str:
    quote = connection.ops.quote_name
    meta = Run._meta
    owner, cancel = (quote(_concrete(Run, n).column) for n in ("lease_owner", "cancel_requested"))
    columns = f"{owner}, {cancel}"
    if vendor == "postgresql":
        columns += ", set_config('synchronous_commit', 'off', true)"
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    return f"SELECT {columns} FROM {quote(meta.db_table)} WHERE id = %s{lock}"  # noqa: S608 - names from model metadata


@contextmanager
def batched_writes() -> Iterator[None]:
    """Within this block changes to steps and runs are collected and stored when it ends,
    one UPDATE per table (the step that finished and the step that starts share one),
    executed with the transaction's audit events (portal.audit.audit_batch_write)."""
    _writes.pending = {}
    try:
        yield
        pending, _writes.pending = _writes.pending, None
        for model, rows in pending.items():
            audit_batch_write(*_update_sql(model, rows))
    finally:
        _writes.pending = None


def flush_writes() -> None:
    """Store the changes collected so far now (before a statement touching the same rows)."""
    pending = getattr(_writes, "pending", None)
    if pending:
        with connection.cursor() as cursor:
            for model, rows in pending.items():
                cursor.execute(*_update_sql(model, rows))
        pending.clear()


def save(obj: Run | Step, **values: Any) -> None:
    """Set the fields on the run or step and store the ones whose value changed."""
    changed = {name: value for name, value in values.items() if getattr(obj, name) != value}
    if not changed:
        return
    for name, value in changed.items():
        setattr(obj, name, value)
    pending = getattr(_writes, "pending", None)
    if pending is not None:
        pending.setdefault(type(obj), {}).setdefault(obj.pk, {}).update(changed)
    else:
        with connection.cursor() as cursor:
            cursor.execute(*_update_sql(type(obj), {obj.pk: changed}))


def _update_sql(
    model: type[models.Model], rows: dict[Any, dict[str, Any]]
) -> tuple[str, list[Any]]:
    """One UPDATE for some fields of some rows, {pk: {field name: value}}."""
    items = list(rows.items())
    sql, fields = _update_statement(
        connection.vendor, model, tuple(tuple(values) for _, values in items)
    )
    params: list[Any] = []
    for name, model_field, owners in fields:
        for i in owners:
            key, values = items[i]
            value = model_field.get_db_prep_save(values[name], connection)
            params += [value] if len(items) == 1 else [key, value]
    return sql, [*params, *rows]


def _concrete(model: type[models.Model], name: str) -> models.Field:
    """A field stored in the model's own table (runs and steps have no other kind here)."""
    field = model._meta.get_field(name)
    if not isinstance(field, models.Field) or not field.column:
        raise TypeError(f"{model.__name__}.{name} is not a column of its table")
    return field


@functools.lru_cache(maxsize=256)
def _update_statement(
    vendor: str, model: type[models.Model], shape: tuple[tuple[str, ...], ...]
) -> tuple[str, list[tuple[str, models.Field, list[int]]]]:
    """The UPDATE for rows that change these fields, made once per shape. With several
    rows each column is CASE pk WHEN 1 THEN ... WHEN 2 THEN ... ELSE column END, so a row
    that does not change it keeps its value."""
    quote = connection.ops.quote_name
    meta = model._meta
    pk = quote(meta.pk.column)
    names = list(dict.fromkeys(name for row in shape for name in row))
    assignments: list[str] = []
    fields: list[tuple[str, models.Field, list[int]]] = []
    for name in names:
        model_field = _concrete(model, name)
        column = quote(model_field.column)
        owners = [i for i, row in enumerate(shape) if name in row]
        if len(shape) == 1:
            assignments.append(f"{column} = %s")
        else:
            whens = " ".join(["WHEN %s THEN %s"] * len(owners))
            assignments.append(f"{column} = CASE {pk} {whens} ELSE {column} END")
        fields.append((name, model_field, owners))
    keys = ", ".join(["%s"] * len(shape))
    sql = f"UPDATE {quote(meta.db_table)} SET {', '.join(assignments)} WHERE {pk} IN ({keys})"  # noqa: S608 - names from model metadata
    return sql, fields
