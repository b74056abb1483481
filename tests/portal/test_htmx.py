"""portal.htmx through the views that use it: a polled fragment answers 200 while its run
is going and 286 (htmx: stop polling) once it has finished; a page load is never told to
stop; an htmx request gets the fragment, any other request the page."""

from __future__ import annotations

import pytest
from django.urls import reverse

import tests.runs.worker_steps  # noqa: F401 - registers the test run kinds
from onboarding import services
from portal.runs import dispatch
from portal.runs.api import run_start
from tests.onboarding.test_pages import empty_aws  # noqa: F401 - fixture
from tests.onboarding.test_requests import (
    environment_rows_fixture,  # noqa: F401 - fixture
    make_request,
)

HTMX = {"HX-Request": "true"}


@pytest.fixture
def erin(personas):
    return personas["erin"]


class RenderPolledTests:
    def test_the_runs_fragment_answers_200_while_a_run_is_active_and_286_once_done(
        self, client, erin
    ):
        run = run_start(kind="test.sequence", actor=erin, params={"steps": 1})
        client.force_login(erin)
        going = client.get(reverse("home"), headers=HTMX)
        assert going.status_code == 200
        assert 'hx-trigger="every 2s"' in going.content.decode()

        dispatch.advance(run.pk)
        done = client.get(reverse("home"), headers=HTMX)
        assert done.status_code == 286
        body = done.content.decode()
        assert "<html" not in body and f'data-run-id="{run.pk}"' in body  # still swapped in
        assert 'hx-trigger="every 2s"' not in body

    def test_a_page_load_is_never_told_to_stop_polling(self, client, erin):
        run = run_start(kind="test.sequence", actor=erin, params={"steps": 1})
        dispatch.advance(run.pk)
        client.force_login(erin)
        page = client.get(reverse("home"))
        assert page.status_code == 200
        assert "<html" in page.content.decode()

    @pytest.mark.usefixtures("empty_aws")
    def test_a_fragment_at_its_own_url_polls_until_its_run_ends(
        self, client, personas, environment_rows
    ):
        request = make_request(personas["rita"])
        url = reverse("onboarding:plan-diff", args=[request.number])
        client.force_login(personas["sam"])
        assert client.get(url, headers=HTMX).status_code == 286  # nothing to follow

        run = services.plan_compare_start(request=request, actor=personas["sam"], environment="dev")
        going = client.get(url, headers=HTMX)
        assert going.status_code == 200
        assert 'hx-trigger="every 1s"' in going.content.decode()

        dispatch.advance(run.pk)
        done = client.get(url, headers=HTMX)
        assert done.status_code == 286
        body = done.content.decode()
        assert 'data-environment="dev" data-step-status="succeeded"' in body
        assert 'hx-trigger="every 1s"' not in body


class RenderPageTests:
    def test_htmx_gets_the_fragment_and_a_browser_the_page(self, client, personas):
        client.force_login(personas["rita"])
        url = reverse("onboarding:request-list")
        fragment = client.get(url, headers=HTMX)
        assert fragment.status_code == 200
        assert "<html" not in fragment.content.decode()
        assert "<html" in client.get(url).content.decode()
