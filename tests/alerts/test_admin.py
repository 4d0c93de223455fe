"""The admin never lets a staff user read or probe an alert secret: no filter, search or lookup on it (the
old `?secret__startswith=` answered one character at a time), and it shows "set", never the value."""

import pytest
from django.test import Client

from apps.alerts.models import AlertChannel
from apps.alerts.services import alert_channel_create

pytestmark = pytest.mark.django_db
TOKEN = "123456789:AAHfakeTokenForTests_0123456789abcdef"
CHANGELIST = "/admin/alerts/alertchannel/"


@pytest.fixture
def staff():
    """A superuser: the strongest admin account, with every permission the admin checks."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_superuser("root", "root@example.com", "root-Pw-12345")
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def tg():
    return alert_channel_create(actor=None, kind="telegram", name="ops-telegram", events=["fill"], chat_id="42",
                                secret=TOKEN)


@pytest.mark.parametrize("lookup", [
    "secret__startswith=1234", "secret__startswith=9999", "secret=" + TOKEN, "secret__isnull=False",
    "secret__regex=^1", "secret_encrypted__startswith=gAAAAA", "secret_encrypted__gt=a", "secret_encrypted__isnull=0",
])
def test_no_lookup_on_a_secret_is_allowed(staff, tg, lookup):
    response = staff.get(f"{CHANGELIST}?{lookup}")
    assert response.status_code == 400  # DisallowedModelAdminLookup: refused, not answered row by row
    assert "ops-telegram" not in response.content.decode()


def test_no_lookup_through_a_delivery_either(staff, tg):
    for lookup in ("channel__secret__startswith=1", "channel__secret_encrypted__startswith=g"):
        assert staff.get(f"/admin/alerts/alertdelivery/?{lookup}").status_code == 400


def test_the_admin_shows_set_never_the_value_and_has_no_secret_input(staff, tg):
    bare = AlertChannel.objects.create(kind="webhook", name="bare", events=["fill"])
    listing = staff.get(CHANGELIST).content.decode()
    assert "ops-telegram" in listing and '<td class="field-secret_state">set</td>' in listing
    assert '<td class="field-secret_state">not set</td>' in listing  # the row without a secret
    change = staff.get(f"{CHANGELIST}{tg.pk}/change/").content.decode()
    assert "set" in change and 'name="secret' not in change and 'name="secret_encrypted' not in change
    for page in (listing, change, staff.get(f"{CHANGELIST}{tg.pk}/history/").content.decode()):
        assert TOKEN not in page and TOKEN.split(":")[1] not in page and tg.secret_encrypted not in page
    # saving the admin's form keeps the secret (it has no field for it)
    form = {"name": "ops-tg", "enabled": "on", "events": '["fill"]', "chat_id": "42"}
    assert staff.post(f"{CHANGELIST}{tg.pk}/change/", form).status_code == 302
    tg.refresh_from_db()
    assert tg.name == "ops-tg" and tg.secret == TOKEN
    assert not bare.secret_set
