from __future__ import annotations

from typing import Any, NoReturn

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models


class Environment(models.Model):
    """An AWS environment the runbooks act on. Staged rollout walks them by `order`."""

    name = models.SlugField(max_length=32, unique=True, help_text="dev, staging or prod")
    order = models.PositiveSmallIntegerField(
        default=0, help_text="Position in the staged rollout (dev first)."
    )
    account_id = models.CharField(
        max_length=12,
        validators=[RegexValidator(r"^\d{12}$", "An AWS account id is 12 digits.")],
    )
    region = models.CharField(max_length=32, default="us-east-1")
    role_arn = models.CharField(
        max_length=2048,
        blank=True,
        validators=[
            RegexValidator(
                r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$",
                "Enter an IAM role ARN such as arn:aws:iam::123456789012:role/onramp.",
            )
        ],
        help_text="Role Onramp assumes in this environment; blank uses its own credentials.",
    )
    # Names of the existing pipeline's resources; {env} is replaced by the name.
    state_machine_name = models.CharField(max_length=80, default="etl-workflow-{env}")
    metadata_table_name = models.CharField(max_length=255, default="etl-metadata-{env}")
    processed_bucket_name = models.CharField(max_length=63, default="processed-data-{env}")
    raw_bucket_prefix = models.CharField(
        max_length=40,
        default="raw-data-",
        help_text="Raw buckets are named <prefix><source>-<env>.",
    )
    schema_bucket_name = models.CharField(
        max_length=63,
        default="etl-schemas-{env}",
        help_text="Bucket the validate Lambda reads schemas from (schemas/<source>/v<n>.json).",
    )
    events_role_name = models.CharField(
        max_length=64,
        default="etl-events-to-sfn-{env}",
        help_text="IAM role EventBridge assumes to start the state machine.",
    )
    lambda_functions = models.JSONField(
        default=list,
        help_text="The pipeline's Lambda functions; each has a `production` alias.",
    )
    lambda_alias = models.CharField(max_length=64, default="production")
    dashboard_name = models.CharField(max_length=255, default="etl-pipeline-{env}")
    kms_key_alias = models.CharField(max_length=256, default="alias/etl-{env}")
    is_production = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["order", "name"]

    def __str__(self) -> str:
        return self.name

    def resource(self, template: str) -> str:
        return template.format(env=self.name)

    @property
    def events_role_arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:role/{self.resource(self.events_role_name)}"

    @property
    def state_machine_arn(self) -> str:
        name = self.resource(self.state_machine_name)
        return f"arn:aws:states:{self.region}:{self.account_id}:stateMachine:{name}"


class AuditAppendOnlyError(Exception):
    """Raised when code tries to change or delete an audit event."""


def _refuse(what: str) -> NoReturn:
    raise AuditAppendOnlyError(
        f"The audit trail is append-only: {what} is refused. "
        "Record a new event with portal.audit.audit_record instead."
    )


class AuditEventQuerySet(models.QuerySet):
    """Reads as usual; every bulk write that could rewrite history raises."""

    def update(self, **kwargs: Any) -> NoReturn:
        _refuse("updating audit events")

    def _update(self, values: Any) -> NoReturn:
        _refuse("updating audit events")

    def delete(self) -> NoReturn:
        _refuse("deleting audit events")

    def _raw_delete(self, using: Any) -> NoReturn:
        _refuse("deleting audit events")

    def bulk_update(self, objs: Any, fields: Any, batch_size: int | None = None) -> NoReturn:
        _refuse("updating audit events")

    def bulk_create(self, objs: Any, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse("bulk-creating audit events outside the hash chain")


class AuditEvent(models.Model):
    """One thing that happened. Append-only and hash-chained: see portal/audit.py.

    The ORM refuses updates and deletes (here), and so does the database (triggers in
    migration 0003). Create events only through `portal.audit.audit_record`.
    """

    seq = models.BigIntegerField(unique=True, help_text="Position in the chain, from 1")
    created_at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT
    )
    actor_label = models.CharField(max_length=150, help_text="username, or the system part")
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64, blank=True, db_index=True)
    object_id = models.CharField(max_length=64, blank=True, db_index=True)
    object_label = models.CharField(max_length=255, blank=True)
    data = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-seq"]
        indexes = [models.Index(fields=["object_type", "object_id", "id"])]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action}"

    def save(self, **kwargs: Any) -> None:
        """Insert a new event; saving one that is already stored is refused."""
        if not self._state.adding or kwargs.get("force_update") or kwargs.get("update_fields"):
            _refuse("changing an audit event")
        kwargs["force_insert"] = True
        super().save(**kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse("deleting an audit event")


class AuditChainHeadQuerySet(models.QuerySet):
    def delete(self) -> NoReturn:
        _refuse("deleting the audit chain head")


class AuditChainHead(models.Model):
    """The newest event's id and hash: a single row every append locks and moves forward.

    It serialises appends across processes (SELECT ... FOR UPDATE) and lets audit_verify
    notice when the newest events were deleted, which the chain alone cannot show.
    """

    last_seq = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default="0" * 64)

    objects = AuditChainHeadQuerySet.as_manager()

    def __str__(self) -> str:
        return f"audit head #{self.last_seq}"

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse("deleting the audit chain head")
