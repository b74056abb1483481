"""Forms of the onboarding pages. They parse input; the rules are in services.py."""

from __future__ import annotations

from typing import Any

from django import forms
from django.forms import BoundField

from onboarding.models import OnboardingRequest, Sensitivity
from onboarding.services import SPEC_FIELDS


class RequestForm(forms.ModelForm):
    # The heading shown above the field that opens each part of the form.
    HEADINGS = {
        "source_name": "Source",
        "data_format": "Format and schema",
        "files_per_day": "Volume and latency",
        "sensitivity": "Sensitivity and retention",
        "business_justification": "Purpose",
        "producer_role_arn": "Producer",
    }

    sensitivity = forms.MultipleChoiceField(
        choices=Sensitivity.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="Tick every kind that applies, or “None”.",
    )

    class Meta:
        model = OnboardingRequest
        fields = [name for name in SPEC_FIELDS if name != "sensitivity"]
        labels = {
            "data_format": "Format",
            "schema_text": "Schema (JSON Schema)",
            "average_file_size_kb": "Average file size (KiB)",
            "latency_sla": "Latency SLA",
            "retention_days": "Retention (days)",
            "producer_role_arn": "Producer IAM role ARN",
        }
        help_texts = {
            "data_format": "NDJSON is one JSON document per line; JSON is one document.",
        }
        widgets = {
            "description": forms.Textarea(attrs={"rows": 3}),
            "schema_text": forms.Textarea(
                attrs={"rows": 14, "class": "code", "spellcheck": "false"}
            ),
            "business_justification": forms.Textarea(attrs={"rows": 3}),
            "downstream_consumers": forms.Textarea(
                attrs={"rows": 3, "placeholder": "Teams, dashboards or jobs that read this data"}
            ),
            "producer_role_arn": forms.TextInput(
                attrs={"placeholder": "arn:aws:iam::123456789012:role/producer"}
            ),
            "source_name": forms.TextInput(attrs={"placeholder": "e.g. clickstream"}),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial.setdefault("sensitivity", self.instance.sensitivity)
        self.order_fields(list(SPEC_FIELDS))

    def spec_data(self) -> dict[str, Any]:
        return {name: self.cleaned_data.get(name) for name in SPEC_FIELDS}

    def rows(self) -> list[tuple[str, BoundField, bool]]:
        """Each field, in order, with the heading above it ("" for none) and whether it
        shows as a group of checkboxes."""
        return [
            (
                self.HEADINGS.get(field.name, ""),
                field,
                isinstance(field.field.widget, forms.CheckboxSelectMultiple),
            )
            for field in self
        ]


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files in one field; the service checks each (size, name, content)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        kwargs.setdefault("allow_empty_file", True)
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[Any]:
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(item, initial) for item in data]
        return [single(data, initial)] if data else []


class SampleUploadForm(forms.Form):
    # The form's metaclass takes declared fields off the class, so this does not shadow
    # BaseForm.files (the uploaded files); the stubs cannot know that.
    files = MultipleFileField(  # type: ignore[assignment]
        label="Sample files",
        help_text="JSON, NDJSON, CSV, Parquet or Avro; the format is read from the content.",
    )
