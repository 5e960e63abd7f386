"""Forms of the server-rendered pages, with clear messages for bad input."""
from django import forms
from django.contrib.auth import get_user_model

from .constants import NOTEBOOK_NAME_MAX
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
