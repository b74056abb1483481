from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from portal import audit_views, views

audit_patterns = (
    [
        path("", audit_views.audit_list, name="list"),
        path("export.csv", audit_views.audit_export_csv, name="export"),
    ],
    "audit",
)

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("environments/check/", views.environment_check_start, name="environment-check"),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("runs/", include("portal.runs.urls")),
    path("onboarding/", include("onboarding.urls")),
    path("audit/", include(audit_patterns)),
    path("admin/", admin.site.urls),
]
