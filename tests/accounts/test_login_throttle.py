"""Login throttling through the real login view, the real Redis cache and the real password check."""

import time

import pytest
from django.core import signing
from django.test import Client, RequestFactory, override_settings
from django.urls import reverse

from apps.accounts import throttle
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


def test_refusal_says_when_to_come_back(client, make_user):
    make_user("op", "operator")
    for _ in range(5):
        post_login(client, "op")
    refused = post_login(client, "op")
    assert refused.status_code == 429 and refused["Retry-After"] == "300"
    assert "Too many failed attempts. Try again in 5 minutes." in refused.content.decode()


def test_an_attacker_behind_the_owners_proxy_cannot_keep_the_owner_out(make_user):
    """Same proxy IP for both: the attacker locks the username for unknown browsers, the owner's browser,
    which logged in before, still gets in; and that login clears the username's counter."""
    make_user("olga", "operator")
    owner, attacker = Client(), Client()
    assert post_login(owner, "olga", "olga" + PASSWORD_SUFFIX).status_code == 302
    owner.post(reverse("logout"))  # the device cookie stays (Client.logout() would drop every cookie)
    for _ in range(5):
        assert post_login(attacker, "olga").status_code == 200
    assert post_login(attacker, "olga").status_code == 429
    assert post_login(attacker, "olga", "olga" + PASSWORD_SUFFIX).status_code == 429 and not logged_in(attacker)

    assert post_login(owner, "olga", "olga" + PASSWORD_SUFFIX).status_code == 302 and logged_in(owner)
    # The owner's login from a known device reset the username's counter.
    assert post_login(attacker, "olga").status_code == 200


def test_a_device_cookie_has_its_own_limit_and_only_for_its_username(make_user):
    make_user("olga", "operator")
    make_user("vera", "viewer")
    device = Client()
    assert post_login(device, "olga", "olga" + PASSWORD_SUFFIX).status_code == 302
    device.post(reverse("logout"))
    # The cookie is olga's: for vera this browser is an unknown client like any other.
    for _ in range(5):
        assert post_login(device, "vera").status_code == 200
    assert post_login(device, "vera", "vera" + PASSWORD_SUFFIX).status_code == 429
    # Five wrong guesses on the device's own counter, then it is an unknown client for olga too: five more
    # on the username's counter, then nothing, not even the right password.
    for _ in range(10):
        assert post_login(device, "olga").status_code == 200
    assert post_login(device, "olga", "olga" + PASSWORD_SUFFIX).status_code == 429 and not logged_in(device)


def test_a_forged_device_cookie_is_ignored(make_user):
    make_user("olga", "operator")
    forged = Client()
    forged.cookies["hft_device"] = signing.dumps(["0" * 32, "x"], salt="other")
    for _ in range(5):
        assert post_login(forged, "olga").status_code == 200
    assert post_login(forged, "olga", "olga" + PASSWORD_SUFFIX).status_code == 429


@override_settings(HFT_LOGIN_IP_FREE_ATTEMPTS=3, HFT_LOGIN_IP_BACKOFF_BASE=1)
def test_one_ip_spraying_many_usernames_backs_off_exponentially(make_user):
    make_user("olga", "operator")
    owner, sprayer, elsewhere = Client(), Client(), Client(REMOTE_ADDR="192.0.2.7")
    assert post_login(owner, "olga", "olga" + PASSWORD_SUFFIX).status_code == 302
    owner.post(reverse("logout"))
    for n in range(4):  # three free wrong passwords, the fourth starts a 1 s wait
        assert post_login(sprayer, f"user{n}").status_code == 200
    waits = []
    for n in range(4, 7):
        refused = post_login(sprayer, f"user{n}")
        assert refused.status_code == 429
        waits.append(int(refused["Retry-After"]))
        time.sleep(waits[-1] + 0.1)
        assert post_login(sprayer, f"user{n}").status_code == 200
    assert waits == [1, 2, 4]
    # Meanwhile the owner's known browser behind the same IP, and another IP, are not slowed down.
    assert post_login(sprayer, "user9").status_code == 429
    assert post_login(owner, "olga", "olga" + PASSWORD_SUFFIX).status_code == 302
    assert post_login(elsewhere, "user9").status_code == 200


@override_settings(HFT_LOGIN_IP_FREE_ATTEMPTS=2, HFT_LOGIN_IP_BACKOFF_BASE=60)
def test_x_forwarded_for_counts_only_from_a_trusted_proxy():
    spoofer = Client()
    for n in range(3):  # a new X-Forwarded-For each time: ignored, the TCP peer backs off
        assert post_login(spoofer, f"u{n}", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code == 200
    assert post_login(spoofer, "u3", HTTP_X_FORWARDED_FOR="198.51.100.3").status_code == 429

    with override_settings(HFT_TRUSTED_PROXIES=["127.0.0.0/8"]):
        proxied = Client()
        # The left part of the header is the client's to write; the proxy appended the real peer.
        for n in range(3):
            xff = f"203.0.113.{n}, 198.51.100.50"
            assert post_login(proxied, f"v{n}", HTTP_X_FORWARDED_FOR=xff).status_code == 200
        assert post_login(proxied, "v3", HTTP_X_FORWARDED_FOR="1.2.3.4, 198.51.100.50").status_code == 429
        assert post_login(proxied, "v3", HTTP_X_FORWARDED_FOR="198.51.100.51").status_code == 200


@pytest.mark.parametrize(
    "remote,xff,proxies,expected",
    [
        ("192.0.2.1", "203.0.113.9", [], "192.0.2.1"),
        ("10.0.0.2", "203.0.113.9", ["10.0.0.0/8"], "203.0.113.9"),
        ("10.0.0.2", "203.0.113.9, 10.0.0.7", ["10.0.0.0/8"], "203.0.113.9"),
        ("10.0.0.2", "evil, 203.0.113.9", ["10.0.0.0/8"], "203.0.113.9"),
        ("10.0.0.2", "203.0.113.9, junk", ["10.0.0.0/8"], "10.0.0.2"),
        ("10.0.0.2", "", ["10.0.0.0/8"], "10.0.0.2"),
        ("192.0.2.1", "203.0.113.9", ["10.0.0.0/8"], "192.0.2.1"),
        ("::1", "2001:db8::5", ["::1"], "2001:db8::5"),
    ],
)
def test_client_ip(rf, remote, xff, proxies, expected):
    request = rf.post("/accounts/login/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR=xff)
    with override_settings(HFT_TRUSTED_PROXIES=proxies):
        assert throttle.client_ip(request) == expected


def test_ipv6_clients_count_per_64_block():
    assert throttle._ip_key("2001:db8:1:2::1") == throttle._ip_key("2001:db8:1:2:ffff::9")
    assert throttle._ip_key("2001:db8:1:2::1") != throttle._ip_key("2001:db8:1:3::1")
    assert throttle._ip_key("::ffff:192.0.2.1") == throttle._ip_key("192.0.2.1")


def test_admin_login_shares_the_counters(make_user):
    """The throttle sits in authentication, so /admin/login/ is no way around it."""
    root = make_user("root", "operator")
    root.is_staff = root.is_superuser = True
    root.save()
    client = Client()
    for _ in range(5):
        assert post_login(client, "root").status_code == 200
    admin = client.post("/admin/login/", {"username": "root", "password": "root" + PASSWORD_SUFFIX})
    assert admin.status_code == 200 and not logged_in(client)
    throttle.unlock(username="root")
    admin = client.post("/admin/login/", {"username": "root", "password": "root" + PASSWORD_SUFFIX})
    assert admin.status_code == 302 and logged_in(client)


def test_parallel_guesses_cannot_outrun_the_counter(make_user):
    """Counted before the password check: ten guesses at once get five checks, not ten."""
    from concurrent.futures import ThreadPoolExecutor

    from django.contrib.auth import authenticate
    from django.db import close_old_connections

    make_user("olga", "operator")

    def guess(_):
        try:
            request = RequestFactory().post("/accounts/login/", REMOTE_ADDR="192.0.2.99")
            authenticate(request, username="olga", password=WRONG)
            return getattr(request, "login_refused", None) is None
        finally:
            close_old_connections()

    with ThreadPoolExecutor(10) as pool:
        checked = sum(pool.map(guess, range(10)))
    assert checked == 5


def test_login_unlock_command(make_user):
    from django.core.management import call_command

    make_user("olga", "operator")
    client = Client()
    for _ in range(5):
        post_login(client, "olga")
    assert post_login(client, "olga", "olga" + PASSWORD_SUFFIX).status_code == 429
    call_command("login_unlock", " OLGA")
    assert post_login(client, "olga", "olga" + PASSWORD_SUFFIX).status_code == 302
