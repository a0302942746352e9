"""One row per stored analysis. Results are kept even after the retention job deletes the pictures."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from diagnosis.storage import private_storage
from ecgdx.labels import CLASS_KEYS, DISPLAY_NAMES

LABEL_CHOICES = [(key, DISPLAY_NAMES[key]) for key in CLASS_KEYS]
IMAGE_KINDS = ("original", "model-input", "heatmap")


def _no_upload_to(instance, filename):  # names are chosen by diagnosis.storage.random_name
    return filename


class Analysis(models.Model):
    """The model's answer for one uploaded ECG picture, owned by the user who uploaded it.

    upload_sha256 is the SHA-256 of the file exactly as uploaded (the stored copy differs from it
    when the printed header and footer were blanked, see ``header_blanked``).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="analyses")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    label = models.CharField(max_length=32, choices=LABEL_CHOICES, db_index=True)
    probabilities = models.JSONField(help_text="class key -> calibrated probability")
    model_version = models.CharField(max_length=200)
    gate_ok = models.BooleanField(default=True)
    gate_score = models.FloatField()
    gate_reasons = models.JSONField(default=list, blank=True)
    timings_ms = models.JSONField(default=dict, blank=True)
    processing_ms = models.FloatField(help_text="wall time of the whole upload, milliseconds")
    lead_importance = models.JSONField(
        default=list, blank=True, help_text="[{name, importance}] occlusion drop of P(label), largest first"
    )
    explanation_method = models.CharField(max_length=32, blank=True)
    explanation_note = models.TextField(blank=True)
    preprocess = models.JSONField(default=dict, blank=True, help_text="crop box, page size, template")

    upload_sha256 = models.CharField(max_length=64, db_index=True)
    upload_bytes = models.PositiveBigIntegerField()
    upload_type = models.CharField(max_length=8)
    header_blanked = models.BooleanField(default=False)
    original_image = models.FileField(
        storage=private_storage, upload_to=_no_upload_to, max_length=255, blank=True
    )
    model_input_image = models.FileField(
        storage=private_storage, upload_to=_no_upload_to, max_length=255, blank=True
    )
    heatmap_image = models.FileField(
        storage=private_storage, upload_to=_no_upload_to, max_length=255, blank=True
    )
    images_deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "analyses"
        indexes = [models.Index(fields=["owner", "-created_at"], name="analysis_owner_created")]

    def __str__(self) -> str:
        return f"{self.get_label_display()} ({self.created_at:%Y-%m-%d %H:%M})"

    @property
    def display_name(self) -> str:
        return DISPLAY_NAMES.get(self.label, self.label)

    @property
    def probability(self) -> float:
        """Probability of the predicted class."""
        return float(self.probabilities.get(self.label, 0.0))

    def probability_rows(self) -> list[dict]:
        """All four classes in the contract's order, for bars and tables."""
        return [
            {"key": key, "name": DISPLAY_NAMES[key], "value": float(self.probabilities.get(key, 0.0)),
             "percent": 100.0 * float(self.probabilities.get(key, 0.0)), "predicted": key == self.label}
            for key in CLASS_KEYS
        ]

    def lead_rows(self) -> list[dict]:
        """Lead importances with a bar width relative to the largest positive one."""
        rows = [dict(r) for r in self.lead_importance or []]
        peak = max([r.get("importance", 0.0) for r in rows] + [0.0])
        for r in rows:
            value = float(r.get("importance", 0.0))
            r["points"] = 100.0 * value
            r["bar"] = 100.0 * max(value, 0.0) / peak if peak > 0 else 0.0
        return rows

    def image_field(self, kind: str):
        return {
            "original": self.original_image,
            "model-input": self.model_input_image,
            "heatmap": self.heatmap_image,
        }[kind]

    @property
    def has_images(self) -> bool:
        return bool(self.original_image or self.model_input_image or self.heatmap_image)
