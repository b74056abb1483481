"""The append-only, hash-chained audit trail: ORM and database guards, verification, pages."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from portal.audit import audit_record, audit_verify, event_hash
from portal.models import AuditAppendOnlyError, AuditChainHead, AuditEvent
from portal.runs.models import Run
from tests.personas import PASSWORD

TABLE = "portal_auditevent"


def _record(count: int, *, action: str = "thing.done", actor: User | None = None) -> list:
    return [audit_record(action=action, actor=actor, data={"n": n}) for n in range(count)]


def _sql(statement: str, params: list | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


@contextmanager
def _triggers_off() -> Iterator[None]:
    """Switch the append-only triggers off the way someone with database rights would."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute(
                "ALTER TABLE portal_auditevent DISABLE TRIGGER portal_auditevent_append_only"
            )
            restore = ["ALTER TABLE portal_auditevent ENABLE TRIGGER portal_auditevent_append_only"]
        else:
            cursor.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = %s",
                [TABLE],
            )
            triggers = cursor.fetchall()
            assert len(triggers) == 2, triggers
            for name, _sql_text in triggers:
                cursor.execute(f"DROP TRIGGER {name}")
            restore = [sql_text for _name, sql_text in triggers]
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            for statement in restore:
                cursor.execute(statement)


def _login(client: Client, user: User) -> Client:
    assert client.login(username=user.username, password=PASSWORD)
    return client


def _refused_by_database(statement: str, params: list | None = None) -> bool:
    try:
        with transaction.atomic():
            if connection.vendor == "postgresql":
                # Otherwise TRUNCATE fails first on the FK checks queued by the test's inserts.
                _sql("SET CONSTRAINTS ALL IMMEDIATE")
            _sql(statement, params)
    except DatabaseError as exc:
        return "append-only" in str(exc)
    return False


@pytest.mark.django_db
class AuditRecordTests:
    def test_it_chains_each_event_to_the_one_before(self) -> None:
        first, second = _record(2)
        assert (first.seq, second.seq) == (1, 2)
        assert second.prev_hash == first.hash
        head = AuditChainHead.objects.get(pk=1)
        assert (head.last_seq, head.last_hash) == (2, second.hash)


@pytest.mark.django_db
class AuditOrmGuardTests:
    def test_it_refuses_queryset_update(self) -> None:
        _record(2)
        with pytest.raises(AuditAppendOnlyError, match="append-only"):
            AuditEvent.objects.filter(seq=1).update(action="forged")
        assert AuditEvent.objects.get(seq=1).action == "thing.done"

    def test_it_refuses_queryset_delete(self) -> None:
        _record(2)
        with pytest.raises(AuditAppendOnlyError):
            AuditEvent.objects.all().delete()
        assert AuditEvent.objects.count() == 2

    def test_it_refuses_bulk_update(self) -> None:
        events = _record(2)
        for event in events:
            event.action = "forged"
        with pytest.raises(AuditAppendOnlyError):
            AuditEvent.objects.bulk_update(events, ["action"])
        assert set(AuditEvent.objects.values_list("action", flat=True)) == {"thing.done"}

    def test_it_refuses_saving_an_existing_event(self) -> None:
        (event,) = _record(1)
        stored = AuditEvent.objects.get(pk=event.pk)
        stored.action = "forged"
        with pytest.raises(AuditAppendOnlyError):
            stored.save()
        with pytest.raises(AuditAppendOnlyError):
            event.save(update_fields=["action"])
        assert AuditEvent.objects.get(pk=event.pk).action == "thing.done"

    def test_it_refuses_deleting_an_event(self) -> None:
        (event,) = _record(1)
        with pytest.raises(AuditAppendOnlyError):
            event.delete()
        assert AuditEvent.objects.filter(pk=event.pk).exists()


@pytest.mark.django_db
class AuditDatabaseTriggerTests:
    def test_it_refuses_a_raw_update(self) -> None:
        _record(1)
        assert _refused_by_database("UPDATE portal_auditevent SET action = %s", ["forged"])
        assert AuditEvent.objects.get().action == "thing.done"

    def test_it_refuses_a_raw_delete(self) -> None:
        _record(1)
        assert _refused_by_database("DELETE FROM portal_auditevent")
        assert AuditEvent.objects.count() == 1

    @pytest.mark.skipif(connection.vendor != "postgresql", reason="TRUNCATE is PostgreSQL's")
    def test_it_refuses_truncate(self) -> None:
        _record(1)
        assert _refused_by_database("TRUNCATE portal_auditevent")
        assert AuditEvent.objects.count() == 1

    def test_it_is_back_after_a_tamper_helper_restores_it(self) -> None:
        _record(1)
        with _triggers_off():
            _sql("UPDATE portal_auditevent SET action = %s", ["forged"])
        assert _refused_by_database("UPDATE portal_auditevent SET action = %s", ["again"])


@pytest.mark.django_db(transaction=True)
class AuditFlushTests:
    def test_it_lets_manage_py_flush_wipe_the_trail_and_keeps_the_guard(self) -> None:
        _record(3)
        call_command("flush", interactive=False, verbosity=0)
        assert AuditEvent.objects.count() == 0
        _record(1)
        assert _refused_by_database("DELETE FROM portal_auditevent")


@pytest.mark.django_db(transaction=True)
class AuditConcurrencyTests:
    def test_writers_appending_at_once_keep_one_unbroken_chain(self) -> None:
        """Each writer remembers the head it wrote last and appends without locking when
        nobody wrote since; interleaved writers must still produce one chain."""
        writers, each = 4, 40
        start = threading.Barrier(writers)
        failures: list[BaseException] = []

        def write(n: int) -> None:
            try:
                start.wait(timeout=10)
                for i in range(each):
                    if i % 3 == 0:
                        with transaction.atomic():  # several events in one transaction
                            _record(2, action=f"writer{n}.batch")
                    else:
                        audit_record(action=f"writer{n}.one", data={"i": i})
            except BaseException as exc:  # reported below
                failures.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)

        assert failures == []
        per_writer = sum(2 if i % 3 == 0 else 1 for i in range(each))
        assert AuditEvent.objects.count() == writers * per_writer
        assert audit_verify() == []
        prev = list(AuditEvent.objects.order_by("seq").values_list("prev_hash", flat=True))
        assert len(set(prev)) == len(prev)  # no two events claim the same predecessor


@pytest.mark.django_db
class AuditVerifyTests:
    def test_it_reports_nothing_on_a_clean_chain(self) -> None:
        _record(5)
        assert audit_verify() == []
        out = io.StringIO()
        call_command("audit_verify", stdout=out)
        assert out.getvalue().strip() == "audit trail OK: 5 events"

    def test_it_reports_nothing_on_an_empty_trail(self) -> None:
        assert audit_verify() == []

    def test_it_reports_a_changed_row(self) -> None:
        _record(5)
        with _triggers_off():
            _sql("UPDATE portal_auditevent SET data = %s WHERE seq = 3", [json.dumps({"n": 99})])
        assert audit_verify() == ["event seq 3 was changed"]

    def test_it_reports_a_row_deleted_in_the_middle(self) -> None:
        _record(7)
        with _triggers_off():
            _sql("DELETE FROM portal_auditevent WHERE seq IN (5, 6)")
        assert audit_verify() == ["events missing between seq 4 and 7 (deleted)"]

    def test_it_reports_the_newest_rows_deleted(self) -> None:
        _record(5)
        with _triggers_off():
            _sql("DELETE FROM portal_auditevent WHERE seq >= 4")
        assert audit_verify() == ["the newest events after seq 3 were deleted"]

    def test_it_reports_a_row_inserted_in_the_middle(self) -> None:
        events = _record(4)
        with _triggers_off():
            # Make room after seq 2, then slip in a well-formed event linked to seq 2.
            _sql("UPDATE portal_auditevent SET seq = -seq WHERE seq > 2")
            _sql("UPDATE portal_auditevent SET seq = 1 - seq WHERE seq < 0")
            _insert_forged(seq=3, prev_hash=events[1].hash)
        problems = audit_verify()
        assert "event seq 4 does not follow seq 3 (inserted or re-ordered)" in problems
        assert "event seq 3 was changed" not in problems  # the forgery hashes correctly

    def test_it_reports_a_row_appended_behind_the_heads_back(self) -> None:
        events = _record(3)
        _insert_forged(seq=4, prev_hash=events[-1].hash)
        assert audit_verify() == [
            "events after seq 3 are not in the chain head (inserted, newest is seq 4)"
        ]

    def test_the_command_exits_non_zero_and_prints_each_problem(self) -> None:
        _record(3)
        with _triggers_off():
            _sql("UPDATE portal_auditevent SET actor_label = %s WHERE seq = 2", ["mallory"])
        out = io.StringIO()
        with pytest.raises(CommandError, match="1 problem"):
            call_command("audit_verify", stdout=out)
        assert out.getvalue().splitlines() == ["event seq 2 was changed"]


def _insert_forged(*, seq: int, prev_hash: str) -> None:
    created_at = timezone.now()
    fields = {
        "seq": seq,
        "actor_id": None,
        "actor_label": "mallory",
        "action": "thing.done",
        "object_type": "",
        "object_id": "",
        "object_label": "",
        "data": {"n": 42},
        "prev_hash": prev_hash,
    }
    digest = event_hash(created_at=created_at.isoformat(), **fields)
    _sql(
        "INSERT INTO portal_auditevent (seq, created_at, actor_id, actor_label, action, "
        "object_type, object_id, object_label, data, prev_hash, hash) "
        "VALUES (%s, %s, NULL, %s, %s, '', '', '', %s, %s, %s)",
        [
            seq,
            created_at,
            "mallory",
            "thing.done",
            json.dumps(fields["data"]),
            prev_hash,
            digest,
        ],
    )


@pytest.mark.django_db
class AuditListPageTests:
    url = reverse("audit:list")

    def test_it_shows_admins_the_events_matching_the_filters(self, client, personas) -> None:
        run = Run.objects.create(kind="environment.check", title="Check dev")
        audit_record(action="run.started", actor=personas["erin"], obj=run, data={"env": "dev"})
        audit_record(action="run.started", actor=personas["eddie"], obj=run)
        audit_record(action="request.submitted", actor=personas["erin"])
        response = _login(client, personas["ada"]).get(
            self.url, {"actor": "erin", "action": "run", "object_type": "runs.run"}
        )
        assert response.status_code == 200
        rows = response.context["rows"]
        assert [(r.event.actor_label, r.event.action) for r in rows] == [("erin", "run.started")]
        body = response.content.decode()
        assert reverse("runs:detail", args=[run.pk]) in body
        assert "env=dev" in body

    def test_it_filters_by_object_id_and_dates(self, client, personas) -> None:
        run = Run.objects.create(kind="environment.check", title="Check dev")
        audit_record(action="run.started", obj=run)
        audit_record(action="run.started")
        today = timezone.localdate()
        client = _login(client, personas["ada"])
        in_range = client.get(self.url, {"object_id": str(run.pk), "date_from": today})
        assert [r.event.object_id for r in in_range.context["rows"]] == [str(run.pk)]
        tomorrow = today + dt.timedelta(days=1)
        later = client.get(self.url, {"date_from": tomorrow})
        assert later.context["rows"] == []
        assert "No events match these filters" in later.content.decode()

    def test_it_shows_a_bad_date_beside_its_field(self, client, personas) -> None:
        audit_record(action="run.started")
        response = _login(client, personas["ada"]).get(
            self.url, {"date_from": "2026-02-10", "date_to": "2026-02-01"}
        )
        assert response.status_code == 200
        assert response.context["form"].errors == {
            "date_to": ["The end date is before the start date."]
        }
        assert 'id="id_date_to-errors"' in response.content.decode()
        assert response.context["rows"] == []

    def test_it_says_so_when_nothing_matches(self, client, personas) -> None:
        # Signing in is itself recorded, so the trail is never empty for its reader.
        response = _login(client, personas["ada"]).get(self.url, {"action": "never.happened"})
        assert "No events match these filters" in response.content.decode()

    def test_it_pages_fifty_at_a_time_and_keeps_the_filter(self, client, personas) -> None:
        _record(55, action="thing.done")
        _record(3, action="other.done")
        response = _login(client, personas["ada"]).get(self.url, {"action": "thing"})
        assert len(response.context["rows"]) == 50
        assert "?action=thing&amp;page=2" in response.content.decode()
        second = client.get(self.url, {"action": "thing", "page": 2})
        assert [r.event.seq for r in second.context["rows"]] == [5, 4, 3, 2, 1]

    @pytest.mark.parametrize("name", ["erin", "rita", "nobody"])
    def test_it_refuses_anyone_but_an_admin(self, client, personas, name) -> None:
        response = _login(client, personas[name]).get(self.url)
        assert response.status_code == 403

    def test_its_query_count_does_not_grow_with_the_rows(
        self, client, personas, django_assert_max_num_queries
    ) -> None:
        client = _login(client, personas["ada"])
        _record(2, actor=personas["erin"])
        with django_assert_max_num_queries(6):
            client.get(self.url)
        _record(60, actor=personas["erin"])
        with django_assert_max_num_queries(6):
            response = client.get(self.url)
        assert len(response.context["rows"]) == 50


@pytest.mark.django_db
class AuditExportTests:
    url = reverse("audit:export")

    def _export(self, client: Client, **filters: str) -> list[dict[str, str]]:
        response = client.post(self.url, filters)
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/csv")
        assert response["Content-Disposition"].startswith('attachment; filename="audit-')
        text = b"".join(response.streaming_content).decode()
        return list(csv.DictReader(io.StringIO(text)))

    def test_it_exports_the_filtered_events_with_their_hashes(self, client, personas) -> None:
        audit_record(action="run.started", actor=personas["erin"], data={"env": "dev"})
        audit_record(action="run.started", actor=personas["eddie"])
        mine = audit_record(action="run.finished", actor=personas["erin"])
        rows = self._export(_login(client, personas["ada"]), actor="erin")
        assert [row["action"] for row in rows] == ["run.finished", "run.started"]
        assert rows[0]["seq"] == str(mine.seq)
        assert rows[0]["hash"] == mine.hash
        assert rows[0]["prev_hash"] == mine.prev_hash
        assert json.loads(rows[1]["data"]) == {"env": "dev"}
        assert list(rows[0]) == [
            "seq",
            "created_at",
            "actor",
            "action",
            "object_type",
            "object_id",
            "object_label",
            "data",
            "prev_hash",
            "hash",
        ]

    def test_it_records_exactly_one_export_event_with_the_filters(self, client, personas) -> None:
        _record(3)
        self._export(_login(client, personas["ada"]), action="thing", date_from="2026-01-01")
        exports = list(AuditEvent.objects.filter(action="audit.exported"))
        assert len(exports) == 1
        assert exports[0].actor_label == "ada"
        assert exports[0].data == {"filters": {"action": "thing", "date_from": "2026-01-01"}}
        assert audit_verify() == []

    def test_it_defuses_spreadsheet_formulas(self, client, personas) -> None:
        audit_record(action="run.started", actor_label='=HYPERLINK("http://x")')
        rows = self._export(_login(client, personas["ada"]))
        (row,) = [r for r in rows if r["action"] == "run.started"]
        assert row["actor"].startswith("'=")

    def test_it_sends_bad_filters_back_to_the_page(self, client, personas) -> None:
        response = _login(client, personas["ada"]).post(self.url, {"date_from": "not a date"})
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("audit:list"))
        assert not AuditEvent.objects.filter(action="audit.exported").exists()

    def test_it_refuses_a_non_admin_and_records_nothing(self, client, personas) -> None:
        response = _login(client, personas["erin"]).post(self.url)
        assert response.status_code == 403
        assert not AuditEvent.objects.filter(action="audit.exported").exists()
