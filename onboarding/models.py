"""Onboarding a new S3 data source (runbook 1): the request, its samples, revisions and
approvals. Rules live in services.py; these models hold data and the invariants the
database can enforce."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from portal.roles import Role

SOURCE_NAME_RE = r"^[a-z0-9][a-z0-9-]{1,38}[a-z0-9]$"
PRODUCER_ROLE_ARN_RE = (
    r"^arn:aws:iam::[0-9]{12}:role/([A-Za-z0-9+=,.@_-]+/)*[A-Za-z0-9+=,.@_-]{1,64}$"
)
TITLE_PREFIX = "[DATA-ONBOARD] Add source: "
KEY_PREFIX = "DATA-"
MAX_RETENTION_DAYS = 36_500


class RequestStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    SUBMITTED = "submitted", "Waiting for approval"
    CHANGES_REQUESTED = "changes_requested", "Changes requested"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"


# A request can be changed as a draft or after an approver asked for changes.
EDITABLE_STATUSES = (RequestStatus.DRAFT, RequestStatus.CHANGES_REQUESTED)


class DataFormat(models.TextChoices):
    # The values are onboarding.validation.SampleFormat's.
    JSON = "json", "JSON"
    NDJSON = "ndjson", "NDJSON"
    CSV = "csv", "CSV"
    PARQUET = "parquet", "Parquet"
    AVRO = "avro", "Avro"


class Frequency(models.TextChoices):
    CONTINUOUS = "continuous", "Continuous (streaming)"
    HOURLY = "hourly", "Hourly"
    DAILY = "daily", "Daily"
    WEEKLY = "weekly", "Weekly"
    MONTHLY = "monthly", "Monthly"


class LatencySla(models.TextChoices):
    REALTIME = "realtime", "Real-time (p95 < 10 s)"
    HOURLY = "hourly", "Hourly batch (p95 < 30 s)"
    DAILY = "daily", "Daily batch"


class Sensitivity(models.TextChoices):
    NONE = "none", "None"
    PII = "pii", "PII"
    PHI = "phi", "PHI"
    FINANCIAL = "financial", "Financial"


class ApprovalRole(models.TextChoices):
    SECURITY = "security", "Security (IAM, encryption)"
    GOVERNANCE = "governance", "Governance (schema, retention, PII)"


# The portal role (Django group) that gives each approval.
APPROVER_ROLE = {
    ApprovalRole.SECURITY: Role.SECURITY_APPROVER,
    ApprovalRole.GOVERNANCE: Role.GOVERNANCE_APPROVER,
}


class Decision(models.TextChoices):
    APPROVED = "approved", "Approved"
    CHANGES_REQUESTED = "changes_requested", "Changes requested"
    REJECTED = "rejected", "Rejected"


class OnboardingRequest(models.Model):
    """The ticket `[DATA-ONBOARD] Add source: <name>`, keyed DATA-<number>.

    A draft saves with anything missing; services.request_submit checks the runbook's
    prerequisites and the validation of the current revision.
    """

    number = models.PositiveIntegerField(unique=True, editable=False)
    status = models.CharField(
        max_length=32, choices=RequestStatus.choices, default=RequestStatus.DRAFT, db_index=True
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="onboarding_requests"
    )
    revision = models.PositiveIntegerField(default=1, help_text="The current revision number.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    # --- The spec -------------------------------------------------------------------------
    source_name = models.CharField(
        max_length=40,
        blank=True,
        validators=[
            RegexValidator(
                SOURCE_NAME_RE,
                "3 to 40 characters: lowercase letters, digits and dashes, "
                "not starting or ending with a dash.",
            )
        ],
        help_text="Used in resource names, e.g. raw-data-<name>-dev.",
    )
    description = models.TextField(blank=True)
    owner_team = models.CharField(max_length=100, blank=True, db_index=True)
    data_format = models.CharField(max_length=16, choices=DataFormat.choices, blank=True)
    schema_text = models.TextField(blank=True, help_text="A JSON Schema document.")
    schema_version = models.PositiveIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(10_000)]
    )
    files_per_day = models.PositiveIntegerField(null=True, blank=True)
    average_file_size_kb = models.PositiveIntegerField(
        null=True, blank=True, help_text="Average file size in KiB."
    )
    frequency = models.CharField(max_length=16, choices=Frequency.choices, blank=True)
    latency_sla = models.CharField(max_length=16, choices=LatencySla.choices, blank=True)
    # Several sensitivities may apply; "none" is an explicit statement, not a blank.
    sensitivity_none = models.BooleanField(default=False)
    sensitivity_pii = models.BooleanField(default=False)
    sensitivity_phi = models.BooleanField(default=False)
    sensitivity_financial = models.BooleanField(default=False)
    retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_RETENTION_DAYS)],
    )
    retention_legal_basis = models.CharField(
        max_length=200, blank=True, help_text="e.g. GDPR Art. 6(1)(b), SOX, contract."
    )
    business_justification = models.TextField(blank=True)
    downstream_consumers = models.TextField(blank=True)
    producer_role_arn = models.CharField(
        max_length=2048,
        blank=True,
        validators=[
            RegexValidator(
                PRODUCER_ROLE_ARN_RE,
                "Enter an IAM role ARN: arn:aws:iam::<12 digits>:role/<path/name>.",
            )
        ],
    )

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["source_name"],
                condition=~Q(source_name=""),
                name="onboarding_request_unique_source_name",
                violation_error_message="Another request already uses this source name.",
            ),
            models.CheckConstraint(
                condition=Q(source_name="") | Q(source_name__regex=SOURCE_NAME_RE),
                name="onboarding_request_source_name_format",
            ),
            models.CheckConstraint(
                condition=Q(producer_role_arn="")
                | Q(producer_role_arn__regex=PRODUCER_ROLE_ARN_RE),
                name="onboarding_request_producer_role_arn_format",
            ),
            models.CheckConstraint(
                condition=Q(sensitivity_none=False)
                | Q(sensitivity_pii=False, sensitivity_phi=False, sensitivity_financial=False),
                name="onboarding_request_sensitivity_none_alone",
                violation_error_message="“None” cannot be combined with another sensitivity.",
            ),
            models.CheckConstraint(
                condition=Q(retention_days__isnull=True)
                | Q(retention_days__gte=1, retention_days__lte=MAX_RETENTION_DAYS),
                name="onboarding_request_retention_days_range",
            ),
            models.CheckConstraint(
                condition=Q(schema_version__gte=1),
                name="onboarding_request_schema_version_positive",
            ),
            models.CheckConstraint(
                condition=Q(revision__gte=1), name="onboarding_request_revision_positive"
            ),
            models.CheckConstraint(
                condition=Q(number__gte=1), name="onboarding_request_number_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.key} {self.title}"

    @property
    def key(self) -> str:
        return f"{KEY_PREFIX}{self.number}"

    @property
    def title(self) -> str:
        return f"{TITLE_PREFIX}{self.source_name or '(unnamed)'}"

    @property
    def sensitivity(self) -> list[str]:
        """The declared sensitivities, in the order of `Sensitivity`."""
        return [s.value for s in Sensitivity if getattr(self, f"sensitivity_{s.value}")]

    def get_sensitivity_display(self) -> str:
        labels = dict(Sensitivity.choices)
        return ", ".join(labels[s] for s in self.sensitivity) or "not stated"


def sample_storage_name(instance: Sample, filename: str) -> str:
    """A generated storage name; the uploaded name is never used to build it."""
    return f"onboarding/samples/{uuid.uuid4().hex}"


class Sample(models.Model):
    """A sample file, stored through Django's storage under a generated name.

    The format is detected from the content; the uploaded name is kept, cleaned, for
    display only. `report` is the last SampleReport.to_dict() for this file, valid while
    `report_fingerprint` matches the request's current schema, format and this content.
    """

    request = models.ForeignKey(OnboardingRequest, on_delete=models.CASCADE, related_name="samples")
    file = models.FileField(upload_to=sample_storage_name, max_length=255)
    original_name = models.CharField(max_length=255, help_text="Cleaned, for display only.")
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    detected_format = models.CharField(max_length=16, choices=DataFormat.choices, blank=True)
    expected_malformed = models.BooleanField(
        default=False, help_text="The schema must reject this file."
    )
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    uploaded_at = models.DateTimeField(auto_now_add=True)
    report = models.JSONField(null=True, blank=True)
    report_fingerprint = models.CharField(max_length=64, blank=True)
    report_revision = models.PositiveIntegerField(null=True, blank=True)
    validated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["request", "original_name", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["request", "sha256"],
                name="onboarding_sample_unique_content",
                violation_error_message="This file was already uploaded to this request.",
            ),
            models.CheckConstraint(
                condition=Q(size__gte=0), name="onboarding_sample_size_positive"
            ),
            models.CheckConstraint(
                condition=Q(sha256__regex=r"^[0-9a-f]{64}$"), name="onboarding_sample_sha256_hex"
            ),
        ]

    def __str__(self) -> str:
        return self.original_name


class RequestRevision(models.Model):
    """One state of the request. Any edit makes a new one and voids its approvals."""

    request = models.ForeignKey(
        OnboardingRequest, on_delete=models.CASCADE, related_name="revisions"
    )
    number = models.PositiveIntegerField()
    digest = models.CharField(max_length=64)
    edited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="Empty when the plan changed because an environment was edited.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    summary = models.TextField(help_text="What changed.")

    class Meta:
        ordering = ["request", "-number"]
        constraints = [
            models.UniqueConstraint(
                fields=["request", "number"], name="onboarding_revision_unique_number"
            )
        ]

    def __str__(self) -> str:
        return f"revision {self.number}"


class Approval(models.Model):
    """One approver's decision on one revision. Approvals of an older revision are voided
    (voided_at, void_reason) and stay as history."""

    request = models.ForeignKey(
        OnboardingRequest, on_delete=models.CASCADE, related_name="approvals"
    )
    role = models.CharField(max_length=16, choices=ApprovalRole.choices)
    decision = models.CharField(max_length=32, choices=Decision.choices)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    revision = models.PositiveIntegerField()
    digest = models.CharField(max_length=64)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    voided_at = models.DateTimeField(null=True, blank=True)
    void_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["request", "-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["request", "role"],
                condition=Q(decision="approved", voided_at__isnull=True),
                name="onboarding_approval_one_live_per_role",
            ),
            # One person holding both approver roles cannot give both approvals.
            models.UniqueConstraint(
                fields=["request", "decided_by"],
                condition=Q(decision="approved", voided_at__isnull=True),
                name="onboarding_approval_one_live_per_person",
            ),
            models.CheckConstraint(
                condition=Q(decision="approved") | ~Q(comment=""),
                name="onboarding_approval_reason_required",
            ),
            models.CheckConstraint(
                condition=Q(voided_at__isnull=True) | ~Q(void_reason=""),
                name="onboarding_approval_void_reason_required",
            ),
        ]

    def __str__(self) -> str:
        return (
            f"{self.get_role_display()}: {self.get_decision_display()} (revision {self.revision})"
        )

    @property
    def is_live(self) -> bool:
        return self.decision == Decision.APPROVED and self.voided_at is None


class HandoffItem(models.TextChoices):
    """The handoff items an engineer marks done (SOP-001 steps 8-10). "Monitored for 48 hours
    in prod" is not among them: it is computed from the prod smoke test, never clicked."""

    ONCALL_BRIEFED = "oncall_briefed", "On-call engineers briefed"
    CONSUMERS_NOTIFIED = "consumers_notified", "Downstream consumers notified"
    RUNBOOK_WRITTEN = "runbook_written", "Runbook entry written"
    REVIEW_HELD = "review_held", "30-day review held"


class HandoffMark(models.Model):
    """An engineer's record that one handoff item is done, with its evidence (who was
    briefed, the recipients, the runbook URL, the measured volume).

    Rows are kept: an undo sets undone_at/undone_by and its reason, and doing the item again
    adds a new row. At most one mark per item is in force (not undone)."""

    request = models.ForeignKey(
        OnboardingRequest, on_delete=models.CASCADE, related_name="handoff_marks"
    )
    item = models.CharField(max_length=32, choices=HandoffItem.choices)
    done_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    done_at = models.DateTimeField(auto_now_add=True)
    note = models.TextField(blank=True, help_text="What the engineer wrote as evidence.")
    evidence = models.JSONField(default=dict, blank=True)
    undone_at = models.DateTimeField(null=True, blank=True)
    undone_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    undo_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["request", "-done_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["request", "item"],
                condition=Q(undone_at__isnull=True),
                name="onboarding_handoff_one_in_force_per_item",
                violation_error_message="This handoff item is already marked done.",
            ),
            models.CheckConstraint(
                condition=Q(undone_at__isnull=True, undone_by__isnull=True)
                | (Q(undone_at__isnull=False, undone_by__isnull=False) & ~Q(undo_reason="")),
                name="onboarding_handoff_undo_complete",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_item_display()} ({'undone' if self.undone_at else 'done'})"


class ReviewReminder(models.Model):
    """The 30-day review reminder of one source: one row, so it is sent once."""

    request = models.OneToOneField(
        OnboardingRequest, on_delete=models.CASCADE, related_name="review_reminder"
    )
    due_at = models.DateTimeField(help_text="30 days after prod went live.")
    sent_at = models.DateTimeField(auto_now_add=True)
    recipients = models.JSONField(default=list, blank=True, help_text="E-mail addresses.")

    def __str__(self) -> str:
        return f"30-day review reminder, due {self.due_at:%Y-%m-%d}"
