from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.auth.forms import UserCreationForm

from diagnosis.models import LABEL_CHOICES


class UploadForm(forms.Form):
    # A plain FileField: the type is decided by the content (ecgdx.page.preprocessing.decode_image), not here.
    image = forms.FileField(
        label="ECG picture",
        error_messages={"required": "Choose a JPEG or PNG picture of an ECG page to upload.",
                        "empty": "The file is empty (0 bytes); it is not an image."},
        widget=forms.ClearableFileInput(attrs={"accept": "image/jpeg,image/png,.jpg,.jpeg,.png"}),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        limit = settings.ECGDX_MAX_UPLOAD_BYTES
        self.fields["image"].widget.attrs["data-max-bytes"] = str(limit)
        self.fields["image"].help_text = f"JPEG or PNG, up to {limit / 1_000_000:.0f} MB."


class HistoryFilterForm(forms.Form):
    date_from = forms.DateField(label="From", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(label="To", required=False, widget=forms.DateInput(attrs={"type": "date"}))
    label = forms.ChoiceField(label="Result", required=False, choices=[("", "All results"), *LABEL_CHOICES])

    def clean(self):
        data = super().clean()
        if data.get("date_from") and data.get("date_to") and data["date_from"] > data["date_to"]:
            raise forms.ValidationError("The 'From' date must not be after the 'To' date.")
        return data


class SignUpForm(UserCreationForm):
    class Meta(UserCreationForm.Meta):
        fields = ("username",)
