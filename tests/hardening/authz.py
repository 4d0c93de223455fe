"""What a role gets from one request, in the matrix's words (tests/hardening/test_authz_matrix.py)."""

from django.conf import settings
from django.test import Client

LOGIN = "login"  # 302 to the desk's login page
ADMIN_LOGIN = "admin-login"  # 302 to the admin's login page
FORBIDDEN = "403"
NOT_ALLOWED = "405"
OK = "ok"  # got past every access check: any other status below 500 (200, a redirect, a 400 for the input...)


def outcome(response) -> str:
    location = response.get("Location", "") if response.status_code in (301, 302, 303, 307, 308) else ""
    if location.startswith(settings.LOGIN_URL) or location.startswith("/accounts/login/"):
        return LOGIN
    if location.startswith("/admin/login/"):
        return ADMIN_LOGIN
    if response.status_code == 403:
        return FORBIDDEN
    if response.status_code == 405:
        return NOT_ALLOWED
    return OK


def send(client: Client, method: str, url: str, body: dict) -> object:
    if method == "GET":
        return client.get(url)
    if method == "POST":
        return client.post(url, body)
    return client.generic(method, url)
