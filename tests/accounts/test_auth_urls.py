"""Password reset is gone: no SMTP is configured and desk accounts are made by an operator (manage.py add_user,
which also sets a new password). Login, logout and a logged-in password change stay."""

import pytest
from django.core import mail
from django.urls import NoReverseMatch, reverse

pytestmark = pytest.mark.django_db

RESET_PATHS = [
    "/accounts/password_reset/",
    "/accounts/password_reset/done/",
    "/accounts/reset/MQ/set-password/",
    "/accounts/reset/done/",
]


@pytest.mark.parametrize("path", RESET_PATHS)
def test_password_reset_is_not_served(client, op_client, path):
    for c in (client, op_client):
        assert c.get(path).status_code == 404
        assert c.post(path, {"email": "olga@example.com"}).status_code == 404
    assert mail.outbox == []


@pytest.mark.parametrize("name", ["password_reset", "password_reset_done", "password_reset_complete"])
def test_no_reset_url_names_left(name):
    with pytest.raises(NoReverseMatch):
        reverse(name)


def test_login_logout_and_password_change_remain(client, op_client):
    assert client.get(reverse("login")).status_code == 200
    assert client.get(reverse("password_change")).status_code == 302  # login first
    assert op_client.get(reverse("password_change")).status_code == 200
    assert op_client.post(reverse("logout")).status_code == 302
