from django import forms
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from clsite.schedules import WEEKDAYS
from modelhub.training import MISSING


class UploadForm(forms.Form):
    file = forms.FileField(label="CSV file", help_text="Comma, semicolon or tab separated, UTF-8, with the header row of the template.")


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False, max_length=2000,
                             help_text="Kept in the ledger.")


class RetrainForm(forms.Form):
    force = forms.BooleanField(required=False, label="Retrain even if no new data is staged")


class LiveAtForm(forms.Form):
    at = forms.CharField(label="Which version was live at", required=False,
                         widget=forms.TextInput(attrs={"placeholder": "2026-11-20 14:00", "type": "datetime-local"}))

    def clean_at(self):
        text = self.cleaned_data["at"].strip()
        if not text:
            return None
        try:
            when = parse_datetime(text.replace("T", " "))
        except ValueError:  # well-formed but no such moment: 2026-13-45 99:99
            when = None
        if when is None:
            raise forms.ValidationError("Enter a date and time like 2026-11-20 14:00.")
        return timezone.make_aware(when) if timezone.is_naive(when) else when


class PredictForm(forms.Form):
    """One field per feature of the schema: numbers for numeric columns, a choice for categories."""

    def __init__(self, *args, schema, typical: dict | None = None, flags=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.schema = schema
        typical = typical or {}
        for feature in schema.features:
            name = feature["name"]
            label = name.replace("_", " ").capitalize()
            self.initial.setdefault(name, typical.get(name))
            if name in flags:
                self.fields[name] = forms.ChoiceField(label=label, required=False,
                                                      choices=[("", MISSING), ("1", "1 (yes)"), ("0", "0 (no)")])
            elif feature["kind"] == "numeric":
                self.fields[name] = forms.FloatField(label=label, required=False,
                                                     widget=forms.NumberInput(attrs={"step": "any"}))
            else:
                choices = [("", MISSING)] + [(c, c) for c in feature.get("categories", [])]
                self.fields[name] = forms.ChoiceField(label=label, choices=choices, required=False)

    def row(self) -> dict:
        return {name: (value if value not in ("",) else None) for name, value in self.cleaned_data.items()}


class BatchPredictForm(forms.Form):
    file = forms.FileField(label="CSV of customers", help_text="The template's columns; the target column may be left out.")


class ScheduleForm(forms.Form):
    """The retraining schedule as people say it: daily at a time, weekly on a day, a cron expression, or off."""

    KINDS = [("daily", "Every day"), ("weekly", "Every week"), ("cron", "Cron expression"), ("off", "Off (on demand only)")]
    DAYS = list(WEEKDAYS)
    kind = forms.ChoiceField(choices=KINDS, widget=forms.RadioSelect, initial="daily")
    at = forms.CharField(label="At (HH:MM)", required=False, initial="02:00", max_length=5)
    day = forms.ChoiceField(choices=DAYS, required=False, initial="mon")
    cron = forms.CharField(label="Cron", required=False, max_length=100, help_text="minute hour day month weekday, e.g. 0 */6 * * *")

    def clean(self):
        """Leaves the cron expression to use in cleaned_data["expression"] (None: off)."""
        from clsite import schedules

        data = super().clean()
        kind = data.get("kind")
        try:
            if kind == "daily":
                data["expression"] = schedules.daily_cron(data.get("at") or "")
            elif kind == "weekly":
                data["expression"] = schedules.weekly_cron(data.get("day") or "", data.get("at") or "")
            elif kind == "cron":
                data["expression"] = schedules.valid_cron(data.get("cron") or "")
            else:
                data["expression"] = None
        except schedules.ScheduleError as exc:
            raise forms.ValidationError(str(exc)) from None
        return data
