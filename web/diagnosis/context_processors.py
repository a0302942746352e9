from django.conf import settings


def app_settings(request):
    return {
        "anonymous_demo": settings.ECGDX_ANONYMOUS_DEMO,
        "allow_signup": settings.ECGDX_ALLOW_SIGNUP,
        "max_upload_bytes": settings.ECGDX_MAX_UPLOAD_BYTES,
        "max_upload_mb": f"{settings.ECGDX_MAX_UPLOAD_BYTES / 1_000_000:.0f}",
    }
