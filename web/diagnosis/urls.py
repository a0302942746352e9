from django.urls import path

from diagnosis import views

app_name = "diagnosis"

urlpatterns = [
    path("", views.upload, name="upload"),
    path("analyses/", views.history, name="history"),
    path("analyses/<uuid:pk>/", views.result, name="result"),
    path("analyses/<uuid:pk>/status", views.status, name="status"),
    path("analyses/<uuid:pk>/images/<slug:kind>", views.image, name="image"),
    path("analyses/<uuid:pk>/report.pdf", views.report, name="report"),
    path("analyses/<uuid:pk>/signals/<str:fmt>", views.signals, name="signals"),
    path("analyses/<uuid:pk>/delete", views.delete, name="delete"),
    path("account/token/", views.api_token, name="api-token"),
]
