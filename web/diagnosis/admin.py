from django.contrib import admin

from diagnosis.models import Analysis

_FILE_FIELDS = ("original_image", "model_input_image", "heatmap_image", "report_pdf")


@admin.register(Analysis)
class AnalysisAdmin(admin.ModelAdmin):
    """Staff see every analysis here (users see only their own in the app); results are read-only.

    Stored pictures are listed by their private file name only: they have no URL.
    """

    list_display = ("created_at", "owner", "status", "label", "gate_score", "model_version", "images_deleted_at")
    list_filter = ("status", "label", "gate_ok", "model_version", "created_at")
    search_fields = ("id", "owner__username", "upload_sha256", "model_version")
    date_hierarchy = "created_at"
    exclude = _FILE_FIELDS
    readonly_fields = [f.name for f in Analysis._meta.fields if f.name not in _FILE_FIELDS] + ["stored_files"]

    @admin.display(description="stored pictures and report (private storage)")
    def stored_files(self, obj):
        names = [getattr(obj, name).name for name in _FILE_FIELDS if getattr(obj, name)]
        return ", ".join(names) or "none"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
