"""Forms of the server-rendered pages, with clear messages for bad input."""
from django import forms
from django.contrib.auth import get_user_model

from .constants import NOTEBOOK_NAME_MAX
from .models import SCOPES, TOKEN_MAX_DAYS, TOKEN_NAME_MAX, ApiToken
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
