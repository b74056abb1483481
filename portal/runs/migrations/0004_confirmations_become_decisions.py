"""Each second-person confirmation becomes the decision "confirm" of its gate step. Safe to
run again: a step that already has a decision is left alone."""

from django.db import migrations


def forwards(apps, schema_editor):
    Confirmation = apps.get_model("runs", "Confirmation")
    Decision = apps.get_model("runs", "Decision")
    Step = apps.get_model("runs", "Step")
    decided = set(Decision.objects.values_list("step_id", flat=True))
    for confirmation in Confirmation.objects.exclude(step_id__in=decided).iterator():
        Decision.objects.create(
            step_id=confirmation.step_id, choice="confirm", chosen_by_id=confirmation.confirmed_by_id
        )
        Decision.objects.filter(step_id=confirmation.step_id).update(
            created_at=confirmation.created_at
        )
    for step in Step.objects.filter(key="runs.confirm", decision_spec={}).iterator():
        what = (step.params or {}).get("what", "this run")
        step.decision_spec = {
            "prompt": f"Confirm {what}",
            "choices": [{"key": "confirm", "label": f"Confirm {what}", "style": "primary"}],
            "roles": [],
            "not_starter": True,
            "reason_required": False,
            "default": None,
            "decide_by": None,
            "action": "confirm",
        }
        step.save(update_fields=["decision_spec"])


def backwards(apps, schema_editor):
    Confirmation = apps.get_model("runs", "Confirmation")
    Decision = apps.get_model("runs", "Decision")
    for decision in Decision.objects.filter(step__key="runs.confirm", chosen_by__isnull=False):
        Confirmation.objects.get_or_create(
            step_id=decision.step_id, defaults={"confirmed_by_id": decision.chosen_by_id}
        )


class Migration(migrations.Migration):
    dependencies = [("runs", "0003_step_waits_decisions")]

    operations = [migrations.RunPython(forwards, backwards)]
