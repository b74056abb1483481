"""Make the audit table append-only in the database itself.

PostgreSQL: one plpgsql function raised by a BEFORE UPDATE OR DELETE row trigger and a
BEFORE TRUNCATE statement trigger. SQLite: BEFORE UPDATE and BEFORE DELETE triggers that
RAISE(ABORT). Other backends rely on the ORM guards in portal/models.py alone.

SQLite drops a table's triggers when a migration rebuilds the table (most ALTERs do), so a
later migration that alters portal_auditevent must create these triggers again;
tests/portal/test_audit.py fails if they are missing. `manage.py flush` (and so the test
suite between transactional tests) lifts them for the wipe: see portal.audit.
"""

from django.db import migrations

PG_FUNCTION = "portal_auditevent_refuse_change"
PG_ROW_TRIGGER = "portal_auditevent_append_only"
PG_TRUNCATE_TRIGGER = "portal_auditevent_no_truncate"
SQLITE_UPDATE_TRIGGER = "portal_auditevent_no_update"
SQLITE_DELETE_TRIGGER = "portal_auditevent_no_delete"


def _table(apps, schema_editor):
    model = apps.get_model("portal", "AuditEvent")
    return schema_editor.quote_name(model._meta.db_table)


def create_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    table = _table(apps, schema_editor)
    if vendor == "postgresql":
        schema_editor.execute(
            f"""
            CREATE OR REPLACE FUNCTION {PG_FUNCTION}() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'The audit trail is append-only: % on % is refused',
                    TG_OP, TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
                RETURN NULL;
            END;
            $$
            """,
            params=None,  # the body holds RAISE's own % placeholders
        )
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {PG_ROW_TRIGGER} ON {table}")
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {PG_TRUNCATE_TRIGGER} ON {table}")
        schema_editor.execute(
            f"CREATE TRIGGER {PG_ROW_TRIGGER} BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {PG_FUNCTION}()"
        )
        schema_editor.execute(
            f"CREATE TRIGGER {PG_TRUNCATE_TRIGGER} BEFORE TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {PG_FUNCTION}()"
        )
    elif vendor == "sqlite":
        for name, operation in (
            (SQLITE_UPDATE_TRIGGER, "UPDATE"),
            (SQLITE_DELETE_TRIGGER, "DELETE"),
        ):
            schema_editor.execute(
                f"CREATE TRIGGER IF NOT EXISTS {name} BEFORE {operation} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, 'The audit trail is append-only: "
                f"{operation} on portal_auditevent is refused'); END"
            )


def drop_triggers(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    table = _table(apps, schema_editor)
    if vendor == "postgresql":
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {PG_TRUNCATE_TRIGGER} ON {table}")
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {PG_ROW_TRIGGER} ON {table}")
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {PG_FUNCTION}()")
    elif vendor == "sqlite":
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {SQLITE_UPDATE_TRIGGER}")
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {SQLITE_DELETE_TRIGGER}")


class Migration(migrations.Migration):
    dependencies = [("portal", "0002_role_groups")]

    operations = [migrations.RunPython(create_triggers, drop_triggers)]
