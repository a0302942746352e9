from __future__ import annotations

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from diagnosis.models import LABEL_CHOICES, Analysis


class UploadSerializer(serializers.Serializer):
    image = serializers.FileField(help_text="JPEG or PNG picture of a 12-lead ECG page (multipart field 'image').")


class FilterSerializer(serializers.Serializer):
    label = serializers.ChoiceField(choices=LABEL_CHOICES, required=False)
    date_from = serializers.DateField(required=False)
    date_to = serializers.DateField(required=False)

    def validate(self, attrs):
        if attrs.get("date_from") and attrs.get("date_to") and attrs["date_from"] > attrs["date_to"]:
            raise serializers.ValidationError("date_from must not be after date_to")
        return attrs


class GateSerializer(serializers.Serializer):
    ok = serializers.BooleanField(source="gate_ok")
    score = serializers.FloatField(source="gate_score")
    reasons = serializers.ListField(child=serializers.CharField(), source="gate_reasons")


class LeadSerializer(serializers.Serializer):
    name = serializers.CharField()
    importance = serializers.FloatField(help_text="drop of P(label) when this region is whited out")


def _absolute(request, name: str, **kwargs) -> str:
    path = reverse(name, kwargs=kwargs)
    return request.build_absolute_uri(path) if request is not None else path


class ExplanationSerializer(serializers.Serializer):
    """Occlusion heatmap and lead ranking, made by the analysis task with the verdict ('pending' until
    the analysis is done). Analyses stored by older versions are explained on their first GET."""

    status = serializers.SerializerMethodField(help_text="ready, pending (made on first GET) or unavailable")
    label = serializers.SerializerMethodField(
        help_text="the class explained: always the verdict's label (null until the explanation is ready)")
    method = serializers.CharField(source="explanation_method", help_text="page_layout, canonical or grid")
    note = serializers.CharField(source="explanation_note")
    leads = LeadSerializer(many=True, source="lead_importance")
    heatmap_url = serializers.SerializerMethodField()
    model_input_url = serializers.SerializerMethodField()
    original_url = serializers.SerializerMethodField()

    @extend_schema_field(serializers.ChoiceField(choices=["ready", "pending", "unavailable"]))
    def get_status(self, obj) -> str:
        if obj.explanation_method:
            return "ready"
        waiting = obj.status in ("queued", "running") or (obj.status == "done" and obj.original_image)
        return "pending" if self.context.get("stored", True) and waiting else "unavailable"

    probability = serializers.FloatField(
        source="explanation_probability", allow_null=True,
        help_text="probability of the explained class on the input the explanation read; equal to the "
        "verdict's when made from the stored model input (null until ready)")

    def get_label(self, obj) -> str | None:
        return obj.label if obj.explanation_method and obj.label else None

    def _image_url(self, obj: Analysis, kind: str) -> str | None:
        if not self.context.get("stored", True):
            return None
        pending = (kind == "heatmap" and obj.status == "done" and not obj.explanation_method
                   and bool(obj.original_image))
        if not obj.image_field(kind) and not pending:
            return None
        return _absolute(self.context.get("request"), "api:prediction-image", pk=obj.pk, kind=kind)

    @extend_schema_field(OpenApiTypes.URI)
    def get_heatmap_url(self, obj) -> str | None:
        return self._image_url(obj, "heatmap")

    @extend_schema_field(OpenApiTypes.URI)
    def get_model_input_url(self, obj) -> str | None:
        return self._image_url(obj, "model-input")

    @extend_schema_field(OpenApiTypes.URI)
    def get_original_url(self, obj) -> str | None:
        return self._image_url(obj, "original")


class UploadInfoSerializer(serializers.Serializer):
    sha256 = serializers.CharField(source="upload_sha256")
    bytes = serializers.IntegerField(source="upload_bytes")
    type = serializers.CharField(source="upload_type")
    header_blanked = serializers.BooleanField()


class DigitizationSerializer(serializers.Serializer):
    """The digitised leads of an analysis: status, measurements and where to download the signals."""

    status = serializers.ChoiceField(choices=["ok", "failed"])
    error = serializers.CharField(allow_blank=True)
    template = serializers.CharField(allow_blank=True)
    fs = serializers.FloatField(help_text="sampling rate of the signals (Hz)")
    has_rhythm = serializers.BooleanField()
    rhythm_lead = serializers.SerializerMethodField(
        help_text="the rhythm strip's lead as printed on the page ('II', 'III', ...); null when the page has no "
        "strip or its label could not be read (the strip is then called 'rhythm strip')")
    summary = serializers.JSONField(help_text="scales (px/mm, px/s), lead windows (s), confidence per lead, warnings")
    measurements = serializers.JSONField(
        help_text="heart_rate_bpm, rr_sdnn_ms, rr_rmssd_ms, pr_ms, qrs_ms, qt_ms, qtc_bazett_ms, "
        "qtc_fridericia_ms, axis_deg, st_mv {lead: mV}; null values have a reason in 'reasons'")
    findings = serializers.SerializerMethodField(
        help_text="criteria-based findings from the measurements (ecgdx.signals.findings): findings [{key, title, leads, "
        "values, unit, values_text, criterion, severity (urgent|abnormal), territory, uncertain}], checked, "
        "not_assessed, stemi_criteria_met, contradictions (sentences where they disagree with the model's label) "
        "and note; null when the page was not digitised. Computer measurements of a picture, to be confirmed by "
        "a clinician")
    downloads = serializers.SerializerMethodField()

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_rhythm_lead(self, obj) -> str | None:
        return (obj.summary or {}).get("rhythm_lead") if obj.ok and obj.has_rhythm else None

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_findings(self, obj) -> dict | None:
        from diagnosis.services import digitization_findings

        label = self.context.get("label") or (obj.analysis.label if obj.analysis_id else None)
        return digitization_findings(digitization=obj, label=label)

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_downloads(self, obj) -> dict:
        if not obj.ok or not self.context.get("stored", True):
            return {}
        request = self.context.get("request")
        out = {key: _absolute(request, "api:prediction-signals", pk=obj.analysis_id, fmt=fmt)
               for key, fmt in (("leads_csv", "leads.csv"), ("wfdb_zip", "wfdb.zip"))}
        if obj.has_rhythm:
            out["rhythm_csv"] = _absolute(request, "api:prediction-signals", pk=obj.analysis_id, fmt="rhythm.csv")
        return out


class FailureSerializer(serializers.Serializer):
    code = serializers.CharField(source="failure_code", help_text="not_an_ecg, invalid_image, picture_missing, "
                                 "model_unavailable, timeout, interrupted or internal_error")
    message = serializers.CharField(source="failure_reason", help_text="why, in words for people")
    status = serializers.IntegerField(source="failure_status", allow_null=True,
                                      help_text="the HTTP status this failure has (422 for not_an_ecg)")


class PredictionSerializer(serializers.ModelSerializer):
    """One analysis. ``status`` is queued, running, done or failed; the result fields (label,
    probabilities, gate, explanation, digitization) are filled in when it is done."""

    id = serializers.SerializerMethodField()
    status = serializers.ChoiceField(choices=["queued", "running", "done", "failed"], read_only=True)
    stage = serializers.CharField(read_only=True, help_text="what a running analysis is doing now")
    progress = serializers.IntegerField(read_only=True, help_text="percent done (0-100)")
    failure = serializers.SerializerMethodField(help_text="why it failed; null unless status is failed")
    label = serializers.SerializerMethodField(help_text="the verdict's class key; null until done")
    url = serializers.SerializerMethodField()
    report_url = serializers.SerializerMethodField()
    display_name = serializers.CharField(read_only=True)
    probabilities = serializers.DictField(child=serializers.FloatField())
    decided_from = serializers.CharField(read_only=True, help_text="what the verdict read: 'the picture', or the "
                                         "picture and the measured ST segments ('' until done)")
    st_elevation_weighed = serializers.BooleanField(
        read_only=True, allow_null=True, help_text="the ST-elevation criteria finding of the digitised leads that "
        "the verdict weighed (true: met, false: not met); null when the picture alone decided")
    picture_probabilities = serializers.DictField(
        child=serializers.FloatField(), read_only=True, help_text="the probabilities of the picture alone, when the "
        "verdict also weighed the measured ST segments (empty otherwise)")
    gate = serializers.SerializerMethodField(help_text="the quality gate's verdict on the page; null until done "
                                             "(a page it refuses fails with code not_an_ecg)")
    explanation = ExplanationSerializer(source="*")
    upload = UploadInfoSerializer(source="*")
    digitization = serializers.SerializerMethodField(
        help_text="the digitised leads and measurements; made on the first GET of the prediction (null in "
        "lists until then, and when the picture was deleted before)")

    class Meta:
        model = Analysis
        fields = ["id", "url", "status", "stage", "progress", "failure", "created_at", "started_at", "finished_at",
                  "attempts", "label", "display_name", "probabilities", "decided_from", "st_elevation_weighed",
                  "picture_probabilities",
                  "gate", "model_version",
                  "processing_ms", "timings_ms", "preprocess", "explanation", "upload", "report_url",
                  "images_deleted_at", "digitization"]

    @extend_schema_field(GateSerializer(allow_null=True))
    def get_gate(self, obj):
        return GateSerializer(obj).data if obj.status == "done" else None

    @extend_schema_field(FailureSerializer(allow_null=True))
    def get_failure(self, obj):
        return FailureSerializer(obj).data if obj.status == "failed" else None

    @extend_schema_field(serializers.ChoiceField(choices=LABEL_CHOICES, allow_null=True))
    def get_label(self, obj) -> str | None:
        return obj.label if obj.status == "done" and obj.label else None

    @extend_schema_field(DigitizationSerializer(allow_null=True))
    def get_digitization(self, obj):
        from diagnosis.models import Digitization

        if not self._stored():
            return None
        row = self.context.get("digitization")
        if row is None:
            row = Digitization.objects.filter(analysis_id=obj.pk).first()
        return None if row is None else DigitizationSerializer(row, context=self.context).data

    def _stored(self) -> bool:
        return self.context.get("stored", True)

    @extend_schema_field(OpenApiTypes.UUID)
    def get_id(self, obj) -> str | None:
        return str(obj.pk) if self._stored() else None

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, obj) -> str | None:
        return _absolute(self.context.get("request"), "api:prediction-detail", pk=obj.pk) if self._stored() else None

    @extend_schema_field(OpenApiTypes.URI)
    def get_report_url(self, obj) -> str | None:
        if not self._stored() or obj.status != "done":
            return None
        return _absolute(self.context.get("request"), "api:prediction-report", pk=obj.pk)


class ClassSerializer(serializers.Serializer):
    key = serializers.CharField()
    display_name = serializers.CharField()


class ModelInfoSerializer(serializers.Serializer):
    model_version = serializers.CharField()
    classes = ClassSerializer(many=True)
    architecture = serializers.CharField(allow_null=True)
    parameters = serializers.IntegerField(allow_null=True)
    temperature = serializers.FloatField(allow_null=True)
    test_metrics = serializers.JSONField(allow_null=True)
    data_fingerprint = serializers.JSONField(allow_null=True)
    preprocess = serializers.JSONField(allow_null=True)
    ecgdx_version = serializers.CharField(allow_null=True)
    exported_at = serializers.CharField(allow_null=True)


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "degraded"])
    database = serializers.BooleanField()
    model_loaded = serializers.BooleanField()
    model_version = serializers.CharField(allow_null=True)
    message = serializers.CharField(allow_blank=True)


class ErrorBodySerializer(serializers.Serializer):
    status = serializers.IntegerField()
    code = serializers.CharField()
    message = serializers.CharField()
    fields = serializers.JSONField(required=False)
    details = serializers.JSONField(required=False)


class ErrorSerializer(serializers.Serializer):
    error = ErrorBodySerializer()
