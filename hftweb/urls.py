from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from apps.accounts.views import HealthView, RateLimitedLoginView

urlpatterns = [
    path("accounts/login/", RateLimitedLoginView.as_view(), name="login"),
    # Not django.contrib.auth.urls: its password reset mails a link, and the desk has no mail server (every
    # request failed and logged it). Accounts and new passwords come from an operator: manage.py add_user.
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/password_change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("accounts/password_change/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("healthz", HealthView.as_view(), name="healthz"),
    path("admin/", admin.site.urls),
    path("lab/studies/", include("apps.research.urls")),
    path("lab/", include("apps.lab.urls")),
    path("", include("apps.dashboard.urls")),
]
