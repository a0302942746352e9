from csp.constants import UNSAFE_INLINE
from csp.decorators import csp_update
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from diagnosis.api import views

app_name = "api"

# Redoc styles itself with <style> elements it writes at run time; its page alone allows them.
redoc = csp_update({"style-src": [UNSAFE_INLINE], "worker-src": ["blob:"]})(SpectacularRedocView.as_view(
    url_name="api:schema", template_name="diagnosis/api/redoc.html"))

urlpatterns = [
    path("predictions", views.PredictionListCreate.as_view(), name="prediction-list"),
    path("predictions/<uuid:pk>", views.PredictionDetail.as_view(), name="prediction-detail"),
    path("predictions/<uuid:pk>/images/<slug:kind>", views.PredictionImage.as_view(), name="prediction-image"),
    path("predictions/<uuid:pk>/report", views.PredictionReport.as_view(), name="prediction-report"),
    path("predictions/<uuid:pk>/signals/<str:fmt>", views.PredictionSignals.as_view(), name="prediction-signals"),
    path("model", views.ModelInfo.as_view(), name="model"),
    path("health", views.Health.as_view(), name="health"),
    path("auth/token", views.TokenCreate.as_view(), name="token"),
    path("schema", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file: the page needs no inline script.
    path("docs", SpectacularSwaggerSplitView.as_view(url_name="api:schema",
                                                     template_name="diagnosis/api/swagger_ui.html"), name="docs"),
    path("redoc", redoc, name="redoc"),
]
