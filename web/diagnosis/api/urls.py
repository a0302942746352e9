from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.authtoken.views import obtain_auth_token

from diagnosis.api import views

app_name = "api"

urlpatterns = [
    path("predictions", views.PredictionListCreate.as_view(), name="prediction-list"),
    path("predictions/<uuid:pk>", views.PredictionDetail.as_view(), name="prediction-detail"),
    path("predictions/<uuid:pk>/images/<slug:kind>", views.PredictionImage.as_view(), name="prediction-image"),
    path("predictions/<uuid:pk>/report", views.PredictionReport.as_view(), name="prediction-report"),
    path("predictions/<uuid:pk>/signals/<str:fmt>", views.PredictionSignals.as_view(), name="prediction-signals"),
    path("model", views.ModelInfo.as_view(), name="model"),
    path("health", views.Health.as_view(), name="health"),
    path("auth/token", obtain_auth_token, name="token"),
    path("schema", SpectacularAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("redoc", SpectacularRedocView.as_view(url_name="api:schema", template_name="diagnosis/api/redoc.html"), name="redoc"),
]
