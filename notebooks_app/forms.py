"""Forms of the server-rendered pages, with clear messages for bad input."""
import json

from django import forms
from django.contrib.auth import get_user_model

from . import schedules
from .constants import NOTEBOOK_NAME_MAX
from .models import SCOPES, TOKEN_MAX_DAYS, TOKEN_NAME_MAX, ApiToken, NotebookSchedule
from .permissions import MEMBER_ROLES


class NotebookForm(forms.Form):
    name = forms.CharField(
        max_length=NOTEBOOK_NAME_MAX,
        strip=True,
        error_messages={"required": "Give the notebook a name."},
        widget=forms.TextInput(attrs={"placeholder": "New notebook name", "autocomplete": "off"}),
    )


class ShareForm(forms.Form):
    username = forms.CharField(max_length=150, strip=True, error_messages={"required": "Enter a username."})
    role = forms.ChoiceField(choices=MEMBER_ROLES)

    def clean_username(self):
        username = self.cleaned_data["username"]
        try:
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise forms.ValidationError(f"There is no user called “{username}”.") from None
        self.cleaned_data["user"] = user
        return username


class ImportForm(forms.Form):
    """A notebook file to import; its fields' ids differ from NotebookForm's on the same page."""

    file = forms.FileField(error_messages={"required": "Choose a .ipynb or .py notebook file to import."})
    name = forms.CharField(max_length=NOTEBOOK_NAME_MAX, required=False, strip=True, widget=forms.TextInput(attrs={"placeholder": "Name (default: the file's)", "autocomplete": "off"}))

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("auto_id", "id_import_%s")
        super().__init__(*args, **kwargs)


class ApiTokenForm(forms.Form):
    """A new personal API token (docs/api.md): a name unique among its owner's live tokens, its
    scopes, and optionally the days it lasts."""

    name = forms.CharField(max_length=TOKEN_NAME_MAX, strip=True, error_messages={"required": "Give the token a name, e.g. what will use it."}, widget=forms.TextInput(attrs={"placeholder": "e.g. nightly report", "autocomplete": "off"}))
    scopes = forms.MultipleChoiceField(choices=SCOPES, widget=forms.CheckboxSelectMultiple, error_messages={"required": "Choose at least one scope."})
    expires_in_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=TOKEN_MAX_DAYS,
        label="Expires after (days)",
        error_messages={"min_value": "A token lasts at least 1 day.", "max_value": f"A token lasts at most {TOKEN_MAX_DAYS} days; leave it empty for no expiry.", "invalid": "Give a whole number of days, or leave it empty."},
        widget=forms.NumberInput(attrs={"placeholder": "never"}),
    )

    def __init__(self, *args, owner, **kwargs):
        super().__init__(*args, **kwargs)
        self.owner = owner

    def clean_name(self):
        name = self.cleaned_data["name"]
        if ApiToken.objects.filter(owner=self.owner, name=name, revoked_at__isnull=True).exists():
            raise forms.ValidationError(f"You already have a token called “{name}”; revoke it or choose another name.")
        return name


# --- a schedule (docs/api.md#schedules) -----------------------------------------------------------

PARAMETER_PREFIX = "param_"  # a named input's field on ScheduleForm: param_<input name>
TEXT_KINDS = frozenset({"text", "date", "dropdown"})  # inputs whose field's text is their value; the others' is JSON


def parameter_value(kind, text):
    """What a parameter field's text stands for: the text itself for a text, date or dropdown
    input, else its JSON (30, true, [0, 2]), or the text when it is no JSON (the check then says
    what would fit)."""
    if kind in TEXT_KINDS:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def parameter_text(kind, value):
    """The field text of a parameter's value (parameter_value's inverse)."""
    return value if kind in TEXT_KINDS and isinstance(value, str) else json.dumps(value)


def parameter_field(named):
    """The field of one named input (kernel.parameters.NamedInput); blank stands for its current value."""
    current = parameter_text(named.kind, named.value)
    attrs = {"placeholder": f"current: {current}", "autocomplete": "off"}
    if named.kind in ("slider", "number"):
        limits = {"min": named.props.get("start"), "max": named.props.get("stop"), "step": named.props.get("step") or "any"}
        widget = forms.NumberInput(attrs={**attrs, **{name: value for name, value in limits.items() if value is not None}})
    elif named.kind == "dropdown":
        widget = forms.Select(choices=[("", f"current: {current}"), *((option, option) for option in named.props.get("options", []))])
    elif named.kind == "checkbox":
        widget = forms.Select(choices=[("", f"current: {'checked' if named.value else 'unchecked'}"), ("true", "checked"), ("false", "unchecked")])
    elif named.kind == "date":
        widget = forms.DateInput(attrs={**attrs, "type": "date"})
    elif named.kind == "table":
        widget = forms.TextInput(attrs={**attrs, "placeholder": f"row numbers, e.g. [0, 2]; current: {current}"})
    else:
        widget = forms.TextInput(attrs=attrs)
    label = f"{named.name} ({named.label}, {named.kind})" if named.label and named.label != named.name else f"{named.name} ({named.kind})"
    return forms.CharField(required=False, strip=named.kind not in TEXT_KINDS, label=label, widget=widget)


class HttpsUrlField(forms.URLField):
    """A URL; one typed without a scheme gets https:// (Django 6's default, chosen now)."""

    def __init__(self, **kwargs):
        super().__init__(assume_scheme="https", **kwargs)


class ScheduleForm(forms.ModelForm):
    """A schedule on the notebook's Schedules page: the model's fields, and one field per named
    input of the notebook (`param_<name>`), blank for the input's current value. Its cron, time
    zone and parameter rules are the API's own: schedules.problems()."""

    class Meta:
        model = NotebookSchedule
        fields = ["name", "cron", "timezone", "enabled", "webhook_url"]
        field_classes = {"webhook_url": HttpsUrlField}
        labels = {"cron": "Cron expression", "timezone": "Time zone", "webhook_url": "Webhook URL (optional)"}
        help_texts = {
            "cron": "minute hour day month weekday, e.g. 0 9 * * 1-5 (09:00 on weekdays)",
            "timezone": "the clock the cron expression reads, e.g. Europe/Paris",
            "webhook_url": "told of a failed run by a signed POST",
        }
        error_messages = {
            "name": {"required": "Give the schedule a name."},
            "cron": {"required": "Give a cron expression, e.g. 0 9 * * 1-5."},
            "timezone": {"required": "Give a time zone, e.g. Europe/Paris or UTC."},
        }
        widgets = {
            "name": forms.TextInput(attrs={"placeholder": "e.g. nightly report", "autocomplete": "off"}),
            "cron": forms.TextInput(attrs={"placeholder": "0 9 * * 1-5", "autocomplete": "off", "spellcheck": "false"}),
            "timezone": forms.TextInput(attrs={"list": "timezones", "autocomplete": "off", "spellcheck": "false"}),
            "webhook_url": forms.URLInput(attrs={"placeholder": "https://…", "autocomplete": "off"}),
        }

    def __init__(self, *args, notebook, inputs, **kwargs):
        """`inputs`: the notebook's named inputs (notebook.named_inputs())."""
        super().__init__(*args, **kwargs)
        self.notebook = notebook
        self.inputs = inputs
        for name, named in inputs.items():
            field = self.fields[PARAMETER_PREFIX + name] = parameter_field(named)
            if name in self.instance.parameters:
                field.initial = parameter_text(named.kind, self.instance.parameters[name])

    def parameter_fields(self):
        return [self[PARAMETER_PREFIX + name] for name in self.inputs]

    def clean(self):
        cleaned = super().clean()
        cleaned["parameters"] = {
            name: parameter_value(named.kind, cleaned[PARAMETER_PREFIX + name]) for name, named in self.inputs.items() if cleaned.get(PARAMETER_PREFIX + name)
        }
        checked = {field: cleaned[field] for field in ("cron", "timezone", "parameters") if field in cleaned}
        for problem, message in schedules.problems(self.notebook, checked).items():
            self.add_error(self.field_of(problem), f"{message}.")
        return cleaned

    @staticmethod
    def field_of(problem):
        """The form field a schedules.problems() key is told next to (None: the form's own)."""
        if problem.startswith("parameters."):
            return PARAMETER_PREFIX + problem.removeprefix("parameters.")
        return None if problem == "parameters" else problem

    def schedule_fields(self):
        """What schedules.save_schedule sets: the valid form's fields and parameters."""
        return {name: self.cleaned_data[name] for name in [*self.Meta.fields, "parameters"]}
