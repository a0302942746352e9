from django.apps import AppConfig


class DiagnosisConfig(AppConfig):
    name = "diagnosis"
    verbose_name = "ECG diagnosis"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from diagnosis import signals  # noqa: F401  (file clean-up on delete, predictor reset)
