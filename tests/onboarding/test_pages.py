"""The onboarding pages: board, my requests, waiting for me and the ticket — empty states,
filters, what each viewer sees, constant query counts, and the comparison with AWS."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from moto import mock_aws

from onboarding import services
from onboarding.models import OnboardingRequest, RequestStatus
from portal import aws
from portal.runs import dispatch
from portal.runs.models import Run, RunStatus
from tests.onboarding.test_requests import (
    add_samples,
    environment_rows_fixture,  # noqa: F401 - fixture
    make_request,
    media_fixture,  # noqa: F401 - fixture
    rita_fixture,  # noqa: F401 - fixture
    submitted_request,
    upload,
    valid_ndjson,
)


def page(client, user, name, *args, **params) -> str:
    client.force_login(user)
    response = client.get(reverse(f"onboarding:{name}", args=args), params)
    assert response.status_code == 200
    return response.content.decode()


def queries(fn) -> int:
    with CaptureQueriesContext(connection) as ctx:
        fn()
    return len(ctx)


class EmptyStateTests:
    def test_the_board_says_there_are_no_requests(self, client, personas):
        html = page(client, personas["rita"], "request-list")
        assert "No onboarding requests yet." in html
        assert 'data-testid="new-request"' in html

    def test_my_requests_invites_a_first_request(self, client, personas):
        assert "You have not asked for a data source yet." in page(
            client, personas["rita"], "request-mine"
        )

    def test_the_queue_says_nothing_waits(self, client, personas):
        assert "Nothing is waiting for you." in page(client, personas["sam"], "request-queue")

    def test_an_empty_draft_shows_what_is_missing(self, client, rita):
        request = services.request_create(actor=rita, data={})
        html = page(client, rita, "request-detail", request.number)
        assert "[DATA-ONBOARD] Add source: (unnamed)" in html
        assert "No sample files yet." in html
        assert "No schema yet." in html
        assert "No environments are configured" in html
        assert 'data-prerequisite="samples" data-done="false"' in html
        assert "Missing: 10 more sample file(s)" in html
        assert "created the request" in html

    def test_the_plan_waits_for_the_fields_it_needs(self, client, rita, environment_rows):
        request = services.request_create(actor=rita, data={"source_name": "orders"})
        html = page(client, rita, "request-detail", request.number)
        assert (
            html.count("The plan needs the source name, owner team, format and producer role.") == 3
        )
        assert "Not compared with AWS yet." in html

    def test_nav_links_follow_the_roles(self, client, personas):
        html = page(client, personas["rex"], "request-list")
        assert reverse("onboarding:request-mine") in html
        assert reverse("onboarding:request-queue") in html
        html = page(client, personas["erin"], "request-list")
        assert reverse("onboarding:request-mine") not in html
        assert reverse("onboarding:request-queue") not in html
        assert 'data-testid="new-request"' not in html


class BoardTests:
    @pytest.fixture
    def board(self, rita, personas):
        a = make_request(rita, source_name="orders", owner_team="shop", data_format="csv")
        b = make_request(
            rita, source_name="payments", owner_team="finance", sensitivity=["financial"]
        )
        c = make_request(personas["rex"], source_name="vitals", sensitivity=["phi"])
        OnboardingRequest.objects.filter(pk=c.pk).update(status=RequestStatus.SUBMITTED)
        return a, b, c

    def _keys(self, client, user, **params) -> list[str]:
        html = page(client, user, "request-list", **params)
        return sorted(k for k in ("DATA-1", "DATA-2", "DATA-3") if f'data-request="{k}"' in html)

    def test_it_groups_requests_by_status(self, client, rita, board):
        html = page(client, rita, "request-list")
        draft = html.index('data-status="draft"')
        submitted = html.index('data-status="submitted"')
        assert draft < html.index('data-request="DATA-1"') < submitted
        assert submitted < html.index('data-request="DATA-3"')

    @pytest.mark.parametrize(
        ("params", "keys"),
        [
            ({"status": "submitted"}, ["DATA-3"]),
            ({"data_format": "csv"}, ["DATA-1"]),
            ({"sensitivity": "financial"}, ["DATA-2"]),
            ({"owner_team": "finance"}, ["DATA-2"]),
            ({"q": "DATA-2"}, ["DATA-2"]),
            ({"q": "vital"}, ["DATA-3"]),
            ({"q": "Add source: orders"}, ["DATA-1"]),
            ({"q": "nothing-like-this"}, []),
        ],
    )
    def test_filters_and_search(self, client, rita, board, params, keys):
        assert self._keys(client, rita, **params) == keys

    def test_no_match_has_its_own_empty_state(self, client, rita, board):
        html = page(client, rita, "request-list", q="zzz")
        assert "No requests match these filters." in html

    def test_htmx_gets_only_the_board(self, client, rita, board):
        client.force_login(rita)
        response = client.get(
            reverse("onboarding:request-list"), {"status": "draft"}, headers={"HX-Request": "true"}
        )
        html = response.content.decode()
        assert html.lstrip().startswith('<div id="board"')
        assert "<html" not in html


class QueryCountTests:
    def _grow(self, rita, start: int, count: int, *, submit: bool = False) -> None:
        for i in range(start, start + count):
            request = make_request(rita, source_name=f"source-{i:03}")
            services.sample_upload(
                request=request, actor=rita, files=[upload("s.ndjson", valid_ndjson(i))]
            )
            if submit:
                OnboardingRequest.objects.filter(pk=request.pk).update(
                    status=RequestStatus.SUBMITTED
                )

    @pytest.mark.parametrize(
        ("name", "viewer", "submit"),
        [
            ("request-list", "rita", False),
            ("request-mine", "rita", False),
            ("request-queue", "sam", True),
        ],
    )
    def test_list_pages_run_constant_queries(
        self, client, personas, django_assert_max_num_queries, name, viewer, submit
    ):
        rita = personas["rita"]
        self._grow(rita, 0, 2, submit=submit)
        client.force_login(personas[viewer])
        url = reverse(f"onboarding:{name}")
        few = queries(lambda: client.get(url))
        self._grow(rita, 2, 12, submit=submit)
        with django_assert_max_num_queries(few):
            html = client.get(url).content.decode()
        assert html.count('data-request="DATA-') == 14


class TicketTests:
    def test_it_renders_the_plan_for_every_environment(self, client, rita, environment_rows):
        request = make_request(rita)
        html = page(client, rita, "request-detail", request.number)
        for env in ("dev", "staging", "prod"):
            assert f'data-environment="{env}"' in html
            assert f"raw-data-clickstream-{env}" in html
        assert "&quot;DenyInsecureTransport&quot;" in html  # the bucket policy, pretty-printed
        assert "EventBridge rule" in html

    def test_approvers_see_their_buttons_and_the_requester_does_not(
        self, client, rita, personas, environment_rows
    ):
        request = submitted_request(rita)
        assert 'data-testid="approve-' not in page(client, rita, "request-detail", request.number)
        sam = page(client, personas["sam"], "request-detail", request.number)
        assert 'data-testid="approve-security"' in sam
        assert 'data-testid="approve-governance"' not in sam
        assert 'data-testid="compare-plan"' in sam
        bo = page(client, personas["bo"], "request-detail", request.number)
        assert 'data-testid="approve-security"' in bo and 'data-testid="approve-governance"' in bo
        services.approval_grant(request=request, actor=personas["bo"], role="security")
        bo = page(client, personas["bo"], "request-detail", request.number)
        assert 'data-testid="approve-governance"' not in bo

    def test_a_decision_error_shows_beside_the_comment(
        self, client, rita, personas, environment_rows
    ):
        request = submitted_request(rita)
        client.force_login(personas["sam"])
        response = client.post(
            reverse("onboarding:approval-reject", args=[request.number]),
            {"role": "security", "comment": ""},
        )
        html = response.content.decode()
        assert response.status_code == 200
        assert 'data-testid="decision-error"' in html
        request.refresh_from_db()
        assert request.status == RequestStatus.SUBMITTED

    def test_submit_is_disabled_until_every_prerequisite_holds(self, client, rita):
        request = make_request(rita)
        add_samples(request, rita)
        html = page(client, rita, "request-detail", request.number)
        assert 'data-testid="submit-request" disabled' in html
        assert 'data-prerequisite="validation" data-done="false"' in html

    def test_the_history_is_newest_first(self, client, rita, environment_rows):
        request = submitted_request(rita)
        html = page(client, rita, "request-detail", request.number)
        assert html.index("submitted the request") < html.index("created the request")

    def test_an_unknown_request_is_404(self, client, rita):
        client.force_login(rita)
        assert client.get(reverse("onboarding:request-detail", args=[999])).status_code == 404


@pytest.fixture
def empty_aws(settings):
    """An empty AWS account per environment, in-process (moto), reached through
    portal.aws like the real thing. (The session-wide sandbox fixture would do too, but it
    leaves AWS_ENDPOINT_URL and a server process behind for the rest of the session.)"""
    settings.AWS_ENDPOINT_URL = ""
    aws.reset_clients()
    with mock_aws():
        yield
    aws.reset_clients()


class PlanCompareTests:
    def test_it_compares_the_plan_with_aws_and_shows_the_diff(
        self, client, rita, personas, environment_rows, empty_aws
    ):
        request = make_request(rita)
        client.force_login(personas["sam"])
        response = client.post(
            reverse("onboarding:plan-compare", args=[request.number]), {"environment": "dev"}
        )
        assert response.status_code == 302
        run = Run.objects.get(kind="onboarding.plan_diff")
        assert list(run.steps.values_list("params__environment", flat=True)) == ["dev"]
        dispatch.advance(run.pk)
        run.refresh_from_db()
        assert run.status == RunStatus.SUCCEEDED, run.error
        output = run.steps.get().output
        assert output["counts"].get("create", 0) > 0
        result = client.get(
            reverse("onboarding:plan-diff", args=[request.number]), headers={"HX-Request": "true"}
        )
        assert result.status_code == 286
        html = result.content.decode()
        assert 'data-environment="dev" data-step-status="succeeded"' in html
        assert 'data-change="bucket.' in html
        assert "create" in html

    def test_it_needs_a_plan(self, client, rita, personas, environment_rows):
        request = services.request_create(actor=rita, data={})
        client.force_login(personas["sam"])
        response = client.post(reverse("onboarding:plan-compare", args=[request.number]))
        assert response.status_code == 200
        assert 'data-testid="compare-error"' in response.content.decode()
        assert not Run.objects.exists()
