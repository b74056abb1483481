from typing import Any

from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Onramp portal"

    def ready(self) -> None:
        # import here: signal handlers are connected once the app registry is ready
        from django.contrib.auth import signals

        signals.user_logged_in.connect(_logged_in, dispatch_uid="onramp-audit-login")
        signals.user_logged_out.connect(_logged_out, dispatch_uid="onramp-audit-logout")
        signals.user_login_failed.connect(_login_failed, dispatch_uid="onramp-audit-login-failed")


# Signing in and out are actions a person takes: each writes one audit event.
def _logged_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    # import here: the audit trail's models load only once the app registry is ready
    from portal.audit import audit_record

    audit_record(action="auth.login", actor=user, obj=user)


def _logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    # import here: the audit trail's models load only once the app registry is ready
    from portal.audit import audit_record

    if user is not None:
        audit_record(action="auth.logout", actor=user, obj=user)


def _login_failed(
    sender: Any, credentials: dict[str, Any], request: Any = None, **kwargs: Any
) -> None:
    # import here: the audit trail's models load only once the app registry is ready
    from portal.audit import audit_record

    # Only the username tried; the password Django already masks is never stored.
    username = str(credentials.get("username", ""))[:150]
    audit_record(
        action="auth.login_failed", actor_label=username or "anonymous", data={"username": username}
    )
