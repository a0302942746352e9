from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from diagnosis import views as diagnosis_views

urlpatterns = [
    path("", include("diagnosis.urls")),
    path("api/v1/", include("diagnosis.api.urls")),
    path("accounts/login/", diagnosis_views.SignInView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/signup/", diagnosis_views.signup, name="signup"),
    path("admin/", admin.site.urls),
]

handler400 = "diagnosis.views.bad_request"
handler403 = "diagnosis.views.permission_denied"
handler404 = "diagnosis.views.page_not_found"
handler500 = "diagnosis.views.server_error"

admin.site.site_header = "ecgdx administration"
admin.site.site_title = "ecgdx"
