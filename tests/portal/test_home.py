"""The home dashboard: recent runs with status and progress, filterable by kind and status."""

from __future__ import annotations

import pytest
from django.urls import reverse

import tests.runs.worker_steps  # noqa: F401 - registers the test run kinds
from portal.runs import dispatch
from portal.runs.services import run_start


@pytest.fixture
def erin(personas):
    return personas["erin"]


class HomeTests:
    def test_it_lists_recent_runs_with_status_and_progress(self, client, erin):
        done = run_start(kind="test.sequence", actor=erin, params={"steps": 2})
        dispatch.advance(done.pk)
        waiting = run_start(kind="test.sequence", actor=erin, params={"steps": 4})
        client.force_login(erin)
        page = client.get(reverse("home")).content.decode()
        assert f'data-run-id="{done.pk}"' in page and f'data-run-id="{waiting.pk}"' in page
        assert "2/2 steps" in page and "0/4 steps" in page
        assert "Succeeded" in page and "Pending" in page

    def test_it_filters_by_kind_and_status(self, client, erin):
        done = run_start(kind="test.sequence", actor=erin, params={"steps": 1})
        dispatch.advance(done.pk)
        other = run_start(kind="test.kms", actor=erin, params={})
        client.force_login(erin)
        page = client.get(reverse("home"), {"status": "succeeded"}).content.decode()
        assert f'data-run-id="{done.pk}"' in page and f'data-run-id="{other.pk}"' not in page
        page = client.get(reverse("home"), {"kind": "test.kms"}).content.decode()
        assert f'data-run-id="{other.pk}"' in page and f'data-run-id="{done.pk}"' not in page
        empty = client.get(reverse("home"), {"kind": "test.kms", "status": "failed"})
        assert "No runs match these filters." in empty.content.decode()

    def test_the_runs_fragment_polls_only_while_a_run_is_active(self, client, erin):
        run = run_start(kind="test.sequence", actor=erin, params={"steps": 1})
        client.force_login(erin)
        fragment = client.get(reverse("home"), HTTP_HX_REQUEST="true").content.decode()
        assert "<html" not in fragment and 'hx-trigger="every 2s"' in fragment
        dispatch.advance(run.pk)
        fragment = client.get(reverse("home"), HTTP_HX_REQUEST="true").content.decode()
        assert 'hx-trigger="every 2s"' not in fragment

    def test_it_shows_an_empty_state(self, client, erin):
        client.force_login(erin)
        assert "No runs yet." in client.get(reverse("home")).content.decode()

    def test_its_query_count_does_not_grow_with_runs(
        self, client, erin, django_assert_max_num_queries
    ):
        for _ in range(3):
            run_start(kind="test.sequence", actor=erin, params={"steps": 2})
        client.force_login(erin)
        with django_assert_max_num_queries(12) as few:
            client.get(reverse("home"))
        for _ in range(15):
            run_start(kind="test.sequence", actor=erin, params={"steps": 2})
        with django_assert_max_num_queries(len(few.captured_queries)):
            client.get(reverse("home"))

    def test_only_engineers_and_admins_see_the_check_button(self, client, personas, erin):
        client.force_login(personas["rita"])
        assert "start-environment-check" not in client.get(reverse("home")).content.decode()
        client.force_login(erin)
        body = client.get(reverse("home")).content.decode()
        assert "start-environment-check" in body or "No environments are configured" in body
