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
STATUS_CHOICES = [("queued", "queued"), ("running", "running"), ("done", "done"), ("failed", "failed")]
FINISHED = ("done", "failed")


def _no_upload_to(instance, filename):  # names are chosen by diagnosis.storage.random_name
    return filename


class Analysis(models.Model):
    """One uploaded ECG picture and, once its task has run, the model's answer, owned by the uploader.

    An upload is stored ``queued``; the analysis task (diagnosis.tasks) makes it ``running`` and then
    ``done`` (verdict, explanation, digitisation, report) or ``failed`` (with a code and a reason for
    people). Result fields are empty until ``done``.

    upload_sha256 is the SHA-256 of the file exactly as uploaded (the stored copy differs from it
    when the printed header and footer were blanked, see ``header_blanked``).
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="analyses")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    status = models.CharField(max_length=8, choices=STATUS_CHOICES, default="queued", db_index=True)
    stage = models.CharField(max_length=64, blank=True, help_text="what the running analysis is doing")
    progress = models.PositiveSmallIntegerField(default=0, help_text="percent of the analysis done")
    failure_code = models.CharField(max_length=32, blank=True)
    failure_reason = models.TextField(blank=True)
    failure_status = models.PositiveSmallIntegerField(null=True, blank=True, help_text="HTTP status of the failure")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="times a worker started this analysis")
    enqueued_at = models.DateTimeField(null=True, blank=True, help_text="last time its task was sent")
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    label = models.CharField(max_length=32, choices=LABEL_CHOICES, db_index=True, blank=True)
    probabilities = models.JSONField(default=dict, blank=True, help_text="class key -> calibrated probability")
    model_version = models.CharField(max_length=200, blank=True)
    gate_ok = models.BooleanField(default=True)
    gate_score = models.FloatField(default=0.0)
    gate_reasons = models.JSONField(default=list, blank=True)
    timings_ms = models.JSONField(default=dict, blank=True)
    processing_ms = models.FloatField(default=0.0, help_text="wall time of the analysis task, milliseconds")
    lead_importance = models.JSONField(
        default=list, blank=True, help_text="[{name, importance}] occlusion drop of P(label), largest first"
    )
    explanation_method = models.CharField(max_length=32, blank=True)
    explanation_note = models.TextField(blank=True)
    explanation_probability = models.FloatField(
        null=True, blank=True, help_text="probability of the explained class on the input the explanation read "
        "(equal to the verdict's when it was made from the stored model input)")
    preprocess = models.JSONField(default=dict, blank=True, help_text="crop box, page size, template")
    picture_probabilities = models.JSONField(
        default=dict, blank=True, help_text="class key -> probability from the picture alone, when the verdict also "
        "weighed the measured ST segments (empty otherwise: probabilities are then the picture's)")
    st_elevation_weighed = models.BooleanField(
        null=True, blank=True, help_text="the ST-elevation finding of the digitised leads that the verdict weighed "
        "(True: criteria met, False: not met); null when the picture alone decided")

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
    report_pdf = models.FileField(storage=private_storage, upload_to=_no_upload_to, max_length=255, blank=True)
    images_deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "analyses"
        indexes = [models.Index(fields=["owner", "-created_at"], name="analysis_owner_created")]

    def __str__(self) -> str:
        what = self.get_label_display() if self.status == "done" else self.status
        return f"{what} ({self.created_at:%Y-%m-%d %H:%M})"

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def done(self) -> bool:
        return self.status == "done"

    @property
    def display_name(self) -> str:
        if self.status != "done":
            return {"queued": "Waiting", "running": "Analysing", "failed": "Not analysed"}.get(self.status, self.status)
        return DISPLAY_NAMES.get(self.label, self.label)

    @property
    def probability(self) -> float:
        """Probability of the predicted class."""
        return float(self.probabilities.get(self.label, 0.0))

    @property
    def decided_from(self) -> str:
        """What the verdict read, in words ('' until done)."""
        if self.status != "done" or not self.label:
            return ""
        if self.st_elevation_weighed is None:
            return "the picture"
        met = "met" if self.st_elevation_weighed else "not met"
        return f"the picture and the measured ST segments (ST-elevation criteria {met} in the digitised leads)"

    @property
    def picture_verdict(self) -> dict | None:
        """{"name", "percent", "same"} of what the picture alone would have answered, when the verdict
        also weighed the measured ST segments; None otherwise."""
        if self.status != "done" or not self.label or self.st_elevation_weighed is None or not self.picture_probabilities:
            return None
        key = max(self.picture_probabilities, key=self.picture_probabilities.get)
        return {"name": DISPLAY_NAMES.get(key, key), "percent": 100.0 * float(self.picture_probabilities[key]),
                "same": key == self.label}

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


class Digitization(models.Model):
    """The 12 leads read back from an analysis's stored picture (``ecgdx.signals.digitize``) and their
    measurements (``ecgdx.signals.measure``). Made on the first view of the result, then kept like the result
    (the retention job deletes pictures, not this).

    samples: zlib-compressed little-endian int16 microvolts, shape (13, n): the 12 leads in
    ``ecgdx.labels.LEADS`` order, then the lead-II rhythm strip; -32768 = not printed.
    summary: ``DigitizedECG.summary()`` (scales, windows, confidence, warnings).
    """

    STATUS_CHOICES = [("ok", "digitised"), ("failed", "could not be digitised")]
    MISSING = -32768

    analysis = models.OneToOneField(Analysis, on_delete=models.CASCADE, primary_key=True, related_name="digitization")
    created_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=16, choices=STATUS_CHOICES)
    error = models.TextField(blank=True)
    template = models.CharField(max_length=32, blank=True)
    fs = models.FloatField(default=500.0)
    samples = models.BinaryField(blank=True, default=b"")
    has_rhythm = models.BooleanField(default=False)
    summary = models.JSONField(default=dict, blank=True)
    measurements = models.JSONField(default=dict, blank=True, help_text="ecgdx.signals.measure.Measurements.to_dict()")
    elapsed_ms = models.FloatField(default=0.0)

    def __str__(self) -> str:
        return f"digitisation of {self.analysis_id} ({self.status})"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def set_arrays(self, signals, rhythm) -> None:
        """Store (12, n) mV and the (n,) strip or None as compressed int16 microvolts."""
        import zlib

        import numpy as np

        n = signals.shape[1]
        stack = np.vstack([signals, rhythm[None] if rhythm is not None else np.full((1, n), np.nan)])
        micro = np.where(np.isfinite(stack), np.clip(np.round(stack * 1000.0), -32767, 32767), self.MISSING)
        self.samples = zlib.compress(micro.astype("<i2").tobytes(), 6)
        self.has_rhythm = rhythm is not None

    def arrays(self):
        """((12, n) mV with NaN where not printed, (n,) strip or None)."""
        import zlib

        import numpy as np

        raw = np.frombuffer(zlib.decompress(bytes(self.samples)), "<i2").reshape(13, -1)
        mv = np.where(raw == self.MISSING, np.nan, raw / 1000.0)
        return mv[:12], (mv[12] if self.has_rhythm else None)

    def result(self):
        """The stored ``ecgdx.signals.digitize.DigitizedECG``."""
        from ecgdx.signals.digitize import DigitizedECG

        signals, rhythm = self.arrays()
        return DigitizedECG.from_summary(self.summary, signals, rhythm)

    def measurement_rows(self) -> list[dict]:
        """[{key, label, value, unit, reason, flag, flag_reason}] for the result page (ecgdx.signals.measure.FIELDS
        order). flag: ok, uncertain, implausible or not measured (ecgdx.signals.measure), so that an uncertain
        value is never shown as a plain fact."""
        from ecgdx.signals.measure import FIELDS

        values = self.measurements or {}
        reasons = values.get("reasons", {})
        flags, flag_reasons = values.get("flags", {}), values.get("flag_reasons", {})
        return [{"key": key, "label": label, "value": values.get(key), "unit": unit, "reason": reasons.get(key, ""),
                 "flag": flags.get(key, "ok" if values.get(key) is not None else "not measured"),
                 "flag_reason": flag_reasons.get(key, "")}
                for key, label, unit in FIELDS]

    def st_rows(self) -> list[dict]:
        """[{lead, value, reason}] of the ST levels (mV) in lead order."""
        from ecgdx.labels import LEADS

        values = (self.measurements or {}).get("st_mv", {})
        reasons = (self.measurements or {}).get("reasons", {})
        return [{"lead": lead, "value": values.get(lead), "reason": reasons.get(f"st:{lead}", "")} for lead in LEADS]

    def confidence_rows(self) -> list[dict]:
        from ecgdx.labels import LEADS

        values = (self.summary or {}).get("confidence", {})
        return [{"lead": lead, "value": values.get(lead)} for lead in LEADS]
