from django.contrib import admin
from django.urls import include, path

from apps.accounts.views import HealthView, RateLimitedLoginView

urlpatterns = [
    path("accounts/login/", RateLimitedLoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("healthz", HealthView.as_view(), name="healthz"),
    path("admin/", admin.site.urls),
    path("lab/studies/", include("apps.research.urls")),
    path("lab/", include("apps.lab.urls")),
    path("", include("apps.dashboard.urls")),
]
