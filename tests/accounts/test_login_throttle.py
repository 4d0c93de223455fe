"""Login throttling through the real login view, the real Redis cache and the real password check."""

import pytest
from django.urls import reverse

from tests.conftest import PASSWORD_SUFFIX

pytestmark = pytest.mark.django_db

WRONG = "wrong-password-1"


def post_login(client, username: str, password: str = WRONG, **extra):
    return client.post(reverse("login"), {"username": username, "password": password}, **extra)


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


# Spellings the login form (strip + NFKC, as ModelBackend is given them) turns into "op", and a case variant
# (a different account to the database, but one counter: the throttle must never be the weaker of the two).
VARIANTS = [" op", "     op", "\uff4fp", "op\u3000", "OP"]


def test_every_spelling_of_a_username_shares_one_lockout(client, make_user):
    make_user("op", "operator")
    # Authentication really does treat the full-width spelling as "op": it logs in before any lockout.
    assert post_login(client, "\uff4fp", "op" + PASSWORD_SUFFIX).status_code == 302 and logged_in(client)
    client.logout()
    for _ in range(5):
        assert post_login(client, "op").status_code == 200
    for variant in VARIANTS:
        wrong = post_login(client, variant)
        assert wrong.status_code == 429, f"{variant!r} got a fresh counter"
        right = post_login(client, variant, "op" + PASSWORD_SUFFIX)
        assert right.status_code == 429 and not logged_in(client), f"{variant!r} logged in during the lockout"
