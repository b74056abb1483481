"""Tell people something needs them: e-mail through Django's mail backend, and a Slack
message when settings.SLACK_WEBHOOK_URL is set.

Notifications are best effort: a failure is logged and never raised, so a broken mail
server cannot undo a decision that was already recorded. Callers send them once the
transaction commits (`transaction.on_commit`). The webhook URL is a secret and is never
logged; neither are message bodies.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage, get_connection

logger = logging.getLogger(__name__)

SLACK_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Notification:
    subject: str
    body: str
    url: str = ""

    def text(self) -> str:
        return f"{self.body}\n\n{self.url}" if self.url else self.body


def absolute_url(path: str) -> str:
    """A link for an e-mail or Slack message: PORTAL_BASE_URL plus a reversed path."""
    return settings.PORTAL_BASE_URL.rstrip("/") + path


def notify(*, users: Iterable[Any], notification: Notification, slack: bool = True) -> int:
    """E-mail each distinct active user who has an address (one message each, so nobody
    sees the others' addresses) and post to Slack when configured. Returns the number of
    e-mails handed to the mail backend."""
    recipients = sorted(
        {u.email for u in users if getattr(u, "is_active", False) and getattr(u, "email", "")}
    )
    sent = send_emails(recipients=recipients, notification=notification)
    if slack:
        post_slack(notification)
    return sent


def send_emails(*, recipients: Iterable[str], notification: Notification) -> int:
    messages = [
        EmailMessage(
            subject=notification.subject,
            body=notification.text(),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[address],
        )
        for address in recipients
    ]
    if not messages:
        return 0
    try:
        return get_connection(fail_silently=False).send_messages(messages) or 0
    except Exception as exc:
        logger.warning(
            "notify: e-mail %r to %d recipient(s) failed: %s",
            notification.subject,
            len(messages),
            type(exc).__name__,
        )
        return 0


def post_slack(notification: Notification) -> bool:
    """POST the notification to the Slack incoming webhook, if one is configured."""
    webhook = settings.SLACK_WEBHOOK_URL
    if not webhook:
        return False
    if not webhook.startswith("https://"):
        logger.warning("notify: SLACK_WEBHOOK_URL is not an https:// URL; not posting")
        return False
    text = f"*{notification.subject}*\n{notification.body}"
    if notification.url:
        text += f"\n<{notification.url}>"
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked to be https above
        webhook,
        data=json.dumps({"text": text}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=SLACK_TIMEOUT_SECONDS) as response:  # noqa: S310
            ok = 200 <= response.status < 300
    except Exception as exc:
        # The exception text can contain the URL, which is a secret: log its type only.
        logger.warning("notify: Slack post %r failed: %s", notification.subject, type(exc).__name__)
        return False
    if not ok:
        logger.warning("notify: Slack answered %s to %r", response.status, notification.subject)
    return ok
