"""Who can see what: login everywhere, health without it, roles as groups, the banner."""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.apps import apps
from django.contrib.auth import authenticate
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.core.management import CommandError, call_command
from django.http import HttpRequest, HttpResponse
from django.test import Client, RequestFactory
from django.urls import NoReverseMatch, URLPattern, URLResolver, get_resolver, reverse
from django.urls.converters import IntConverter

from portal.management.commands.seed_demo_users import DEMO_USERS, sandbox_password
from portal.roles import Role, has_role, require_role, role_required
from tests.personas import PASSWORD

# The only pages an anonymous visitor may see. admin:login is the admin's own sign-in form.
PUBLIC = {"login", "healthz", "admin:login"}

pytestmark = pytest.mark.django_db


def named_patterns() -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, {kwarg: converter or None}) for every named URL pattern in the project."""

    def walk(patterns: list, namespace: str, params: dict[str, Any]) -> Iterator:
        for entry in patterns:
            found = dict(params)
            found.update(getattr(entry.pattern, "converters", {}) or {})
            for group in entry.pattern.regex.groupindex:
                found.setdefault(group, None)
            if isinstance(entry, URLResolver):
                inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
                yield from walk(entry.url_patterns, inner, found)
            elif isinstance(entry, URLPattern) and entry.name:
                yield f"{namespace}{entry.name}", found

    yield from walk(get_resolver().url_patterns, "", {})


def url_for(name: str, params: dict[str, Any]) -> str:
    """Reverse `name`, filling int arguments with 1 and others with the first value that fits."""
    labels = [config.label for config in apps.get_app_configs()]
    if not params:
        return reverse(name)
    candidates = [
        [1] if isinstance(converter, IntConverter) else ["1", *labels]
        for converter in params.values()
    ]
    for index in range(max(len(c) for c in candidates)):
        kwargs = {key: c[min(index, len(c) - 1)] for key, c in zip(params, candidates, strict=True)}
        try:
            return reverse(name, kwargs=kwargs)
        except NoReverseMatch:
            continue
    raise AssertionError(f"cannot build a URL for {name} with {list(params)}")


def login(client: Client, username: str, password: str = PASSWORD, **extra: str) -> HttpResponse:
    """Sign in through the real form, CSRF token and all."""
    page = client.get(reverse("login"))
    token = page.cookies["csrftoken"].value
    data = {"username": username, "password": password, "csrfmiddlewaretoken": token, **extra}
    return client.post(reverse("login"), data)


class LoginRequiredTests:
    def test_it_sends_anonymous_visitors_of_every_page_to_login(self, client: Client) -> None:
        patterns = dict(named_patterns())
        # Guard the walk itself: it must see the project's own pages and the admin.
        assert {"home", "healthz", "login", "logout", "runs:detail", "admin:index"} <= set(patterns)
        wrong = []
        for name, params in sorted(patterns.items()):
            if name in PUBLIC:
                continue
            url = url_for(name, params)
            response = client.get(url)
            target = urlsplit(response.get("Location", ""))
            allowed = {reverse("login")}
            if name.startswith("admin:"):
                allowed.add(reverse("admin:login"))  # the admin signs people in itself
            if response.status_code != 302 or target.path not in allowed:
                wrong.append(f"{name} {url}: {response.status_code} {target.geturl()!r}")
            elif f"next={url}" not in target.query:
                wrong.append(f"{name} {url}: redirect loses the page ({target.geturl()!r})")
        assert wrong == [], "pages open to anonymous visitors:\n" + "\n".join(wrong)

    def test_it_shows_the_login_page_without_login(self, client: Client) -> None:
        response = client.get(reverse("login"))
        assert response.status_code == 200
        assert b"Sign in to Onramp" in response.content

    def test_it_answers_healthz_with_json_without_login(self, client: Client) -> None:
        response = client.get(reverse("healthz"))
        assert response.status_code == 200
        assert response["Content-Type"] == "application/json"
        assert response.json()["status"] == "ok"


class SandboxBannerTests:
    BANNER = b'data-testid="sandbox-banner"'

    def test_it_shows_the_banner_in_the_sandbox(self, client: Client, settings, personas) -> None:
        settings.SANDBOX = True
        assert self.BANNER in client.get(reverse("login")).content
        client.force_login(personas["rita"])
        page = client.get(reverse("home"))
        assert page.status_code == 200
        assert self.BANNER in page.content and b"SANDBOX" in page.content

    def test_it_hides_the_banner_outside_the_sandbox(
        self, client: Client, settings, personas
    ) -> None:
        settings.SANDBOX = False
        assert self.BANNER not in client.get(reverse("login")).content
        client.force_login(personas["rita"])
        page = client.get(reverse("home"))
        assert page.status_code == 200
        assert self.BANNER not in page.content


def _view(request: HttpRequest) -> HttpResponse:
    return HttpResponse("done")


class RoleTests:
    def test_it_grants_roles_by_group_membership(self, personas) -> None:
        rita, rex = personas["rita"], personas["rex"]
        assert has_role(rita, Role.REQUESTER)
        assert not has_role(rita, Role.ENGINEER)
        assert has_role(rita, Role.ENGINEER, Role.REQUESTER)  # any one of them is enough
        assert has_role(rex, Role.REQUESTER) and has_role(rex, Role.SECURITY_APPROVER)
        assert not any(has_role(personas["nobody"], role) for role in Role)
        require_role(rita, Role.REQUESTER)
        with pytest.raises(PermissionDenied):
            require_role(rita, Role.ENGINEER, Role.ADMIN)

    def test_it_grants_nothing_to_inactive_or_anonymous_users(self, personas) -> None:
        erin = User.objects.get(pk=personas["erin"].pk)
        erin.is_active = False
        erin.save(update_fields=["is_active"])
        erin = User.objects.get(pk=erin.pk)
        assert not has_role(erin, Role.ENGINEER)
        with pytest.raises(PermissionDenied):
            require_role(erin, Role.ENGINEER)
        assert not has_role(AnonymousUser(), *Role)

    def test_it_makes_a_superuser_an_admin_and_nothing_else(self) -> None:
        root = User.objects.create_superuser("root", "root@example.com", "x" * 20)
        assert has_role(root, Role.ADMIN)
        for role in set(Role) - {Role.ADMIN}:
            assert not has_role(root, role), role
        with pytest.raises(PermissionDenied):
            require_role(root, Role.ENGINEER)

    def test_it_guards_views_with_role_required(self, personas) -> None:
        request = RequestFactory().get("/")
        request.user = personas["erin"]
        assert role_required(Role.ENGINEER, Role.ADMIN)(_view)(request).content == b"done"
        request.user = personas["rita"]
        with pytest.raises(PermissionDenied):
            role_required(Role.ENGINEER, Role.ADMIN)(_view)(request)

    def test_it_answers_403_to_a_signed_in_user_without_the_role(
        self, client: Client, personas
    ) -> None:
        client.force_login(personas["rita"])
        assert client.get(reverse("audit:list")).status_code == 403
        assert client.post(reverse("environment-check")).status_code == 403


class LoginFlowTests:
    def test_it_signs_in_with_the_form_and_lands_on_the_dashboard(self, personas) -> None:
        client = Client(enforce_csrf_checks=True)
        response = login(client, "rita")
        assert response.status_code == 302
        assert response["Location"] == reverse("home")
        home = client.get(reverse("home"))
        assert home.status_code == 200
        assert b"rita" in home.content
        # Signed in, the login page sends people on instead of showing the form again.
        assert client.get(reverse("login")).status_code == 302

    def test_it_returns_to_the_page_that_asked_for_login(self, personas) -> None:
        client = Client(enforce_csrf_checks=True)
        wanted = reverse("runs:detail", kwargs={"run_id": 1})
        assert client.get(wanted)["Location"] == f"{reverse('login')}?next={wanted}"
        response = login(client, "rita", next=wanted)
        assert response.status_code == 302
        assert response["Location"] == wanted

    def test_it_refuses_a_wrong_password(self, personas) -> None:
        client = Client(enforce_csrf_checks=True)
        response = login(client, "rita", password="not-the-password")
        assert response.status_code == 200
        assert b'role="alert"' in response.content
        assert client.get(reverse("home")).status_code == 302

    def test_it_refuses_a_login_without_csrf_token(self, personas) -> None:
        client = Client(enforce_csrf_checks=True)
        data = {"username": "rita", "password": PASSWORD}
        assert client.post(reverse("login"), data).status_code == 403
        assert client.get(reverse("home")).status_code == 302


class LogoutTests:
    def test_it_only_logs_out_on_post(self, personas) -> None:
        client = Client(enforce_csrf_checks=True)
        login(client, "rita")
        assert client.get(reverse("logout")).status_code == 405
        assert client.get(reverse("home")).status_code == 200  # still signed in

        token = client.cookies["csrftoken"].value
        response = client.post(reverse("logout"), {"csrfmiddlewaretoken": token})
        assert response.status_code == 302
        assert response["Location"] == reverse("login")
        assert client.get(reverse("home")).status_code == 302


def seed_demo_users(*args: str) -> str:
    out = StringIO()
    call_command("seed_demo_users", *args, stdout=out)
    return out.getvalue()


class DemoUserTests:
    def test_it_creates_one_user_per_role_once_and_prints_working_logins(self, settings) -> None:
        settings.SANDBOX = True
        printed = seed_demo_users()
        seed_demo_users()
        assert User.objects.count() == len(DEMO_USERS)
        for role in Role:
            assert User.objects.filter(groups__name=str(role)).exists(), role
        for demo in DEMO_USERS:
            password = sandbox_password(demo.username)
            assert demo.username in printed and password in printed
            user = authenticate(username=demo.username, password=password)
            assert user is not None, demo.username
            assert has_role(user, *demo.roles)
        admin = User.objects.get(username="admin")
        assert admin.is_superuser and admin.is_staff
        assert not User.objects.get(username="requester").is_staff

    def test_it_refuses_outside_the_sandbox_without_force(self, settings) -> None:
        settings.SANDBOX = False
        with pytest.raises(CommandError, match="--force"):
            seed_demo_users()
        assert not User.objects.exists()

    def test_it_uses_random_passwords_with_force_and_keeps_them(self, settings) -> None:
        settings.SANDBOX = False
        first = seed_demo_users("--force")
        for demo in DEMO_USERS:
            assert sandbox_password(demo.username) not in first
            assert (
                authenticate(username=demo.username, password=sandbox_password(demo.username))
                is None
            )
        printed = {line.split()[0]: line.split()[1] for line in first.splitlines()[2:]}
        for demo in DEMO_USERS:
            assert authenticate(username=demo.username, password=printed[demo.username])
        hashes = dict(User.objects.values_list("username", "password"))
        second = seed_demo_users("--force")
        assert "(unchanged)" in second
        assert dict(User.objects.values_list("username", "password")) == hashes
