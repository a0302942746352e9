"""Delete an analysis's files with it; forget the cached predictor when its settings change."""

from __future__ import annotations

from django.core.signals import setting_changed
from django.db.models.signals import post_delete
from django.dispatch import receiver

from diagnosis.models import Analysis


@receiver(post_delete, sender=Analysis)
def _delete_files(sender, instance: Analysis, **kwargs) -> None:
    for field in (instance.original_image, instance.model_input_image, instance.heatmap_image, instance.report_pdf):
        if field:
            field.storage.delete(field.name)


@receiver(setting_changed)
def _reset_predictor(sender, setting, **kwargs) -> None:
    if setting in ("ECGDX_PREDICTOR_FACTORY", "ECGDX_MODEL_PATH", "ECGDX_INFERENCE_THREADS"):
        from diagnosis import inference_adapter

        inference_adapter.reset_predictor()
