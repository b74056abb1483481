from __future__ import annotations

from django.conf import settings
from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import models


class RunStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    WAITING = "waiting", "Waiting"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


TERMINAL_RUN_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED)
ACTIVE_RUN_STATUSES = (RunStatus.PENDING, RunStatus.RUNNING, RunStatus.WAITING)


class StepStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    WAITING = "waiting", "Waiting"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    SKIPPED = "skipped", "Skipped"
    CANCELLED = "cancelled", "Cancelled"


DONE_STEP_STATUSES = (StepStatus.SUCCEEDED, StepStatus.SKIPPED)


class Run(models.Model):
    """A long operation made of ordered steps. The database is its source of truth."""

    kind = models.CharField(max_length=64, db_index=True)
    title = models.CharField(max_length=255)
    status = models.CharField(
        max_length=16, choices=RunStatus.choices, default=RunStatus.PENDING, db_index=True
    )
    subject_type = models.ForeignKey(
        ContentType, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    subject_id = models.CharField(max_length=64, blank=True)
    subject = GenericForeignKey("subject_type", "subject_id")
    params = models.JSONField(default=dict, blank=True)
    # The step keys, frozen when the run is created.
    plan = models.JSONField(default=list)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Lease: the worker that holds it may execute steps until lease_expires_at; it renews
    # the lease with heartbeats. A run whose lease expired is free for another worker.
    lease_owner = models.CharField(max_length=128, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # When a waiting run is due again (a time, or None while it waits for a person).
    wake_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_enqueued_at = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["subject_type", "subject_id", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.title} (#{self.pk})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_RUN_STATUSES


class Step(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField()
    key = models.CharField(max_length=96)
    title = models.CharField(max_length=255)
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=16, choices=StepStatus.choices, default=StepStatus.PENDING, db_index=True
    )
    # Executions that did work; the ticks of a wait are counted apart and are not attempts.
    attempts = models.PositiveIntegerField(default=0)
    ticks = models.PositiveIntegerField(default=0)
    # Attempts lost to transient errors since the step last ran clean (bounded retries).
    transient_failures = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    # A waiting step fails once this passes (set by its first Wait with a deadline).
    deadline_at = models.DateTimeField(null=True, blank=True)
    # The decision this step stops at, while it waits for one (outcomes.Decide.spec()).
    decision_spec = models.JSONField(default=dict, blank=True)
    output = models.JSONField(default=dict, blank=True)
    # [{"at": iso, "action": "read|created|updated|unchanged|deleted|info|warning", "message": str}]
    log = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    wait_reason = models.CharField(max_length=255, blank=True)
    skip_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["run", "position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "position"], name="runs_step_unique_position")
        ]

    def __str__(self) -> str:
        return f"{self.position + 1}. {self.title}"

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


class Decision(models.Model):
    """The choice made at a step's decision (promote, roll back, confirm…): by a person,
    with their reason, or by the engine when the time limit passed and a default applied.
    At most one per step (the constraint decides a race); written once, never changed."""

    step = models.OneToOneField(Step, on_delete=models.CASCADE, related_name="decision")
    choice = models.CharField(max_length=64)
    chosen_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    reason = models.TextField(blank=True)
    by_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(by_default=True) | models.Q(chosen_by__isnull=False),
                name="runs_decision_has_chooser",
            )
        ]

    def __str__(self) -> str:
        return f"{self.step}: {self.choice}"

    @property
    def chooser_name(self) -> str:
        return self.chosen_by.get_username() if self.chosen_by else "the time limit"
