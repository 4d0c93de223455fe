"""Alert secrets are encrypted at rest (Fernet under HFT_SECRETS_KEY): the table holds no token, the worker still
sends with it, a key is rotated without losing a secret, and a key that cannot open a secret fails that channel's
deliveries with a clear reason while every page keeps working."""

import pytest
from cryptography.fernet import Fernet
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse

from apps.alerts.models import AlertChannel, AlertDelivery
from apps.alerts.services import alert_channel_create, alert_channel_update, alert_emit
from apps.audit.models import AuditEvent

pytestmark = pytest.mark.django_db
TOKEN = "123456789:AAHfakeTokenForTests_0123456789abcdef"
NEW_TOKEN = "987654321:BBHanotherFakeToken_9876543210fedcba"
HOOK_PATH = "/api/webhooks/1234567890/s3cr3t-webhook-token-part"


def raw_table() -> str:
    """Every column of every channel row as the database holds it (no ORM in between)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM alerts_alertchannel")
        return repr(cursor.fetchall())


def tg(name: str = "ops-telegram", token: str = TOKEN) -> AlertChannel:
    return alert_channel_create(actor=None, kind="telegram", name=name, events=["kill_switch"], chat_id="42",
                                secret=token)


def test_the_table_holds_no_secret_and_the_worker_still_sends(endpoint, eager, settings,
                                                              django_capture_on_commit_callbacks):
    settings.HFT_ALERT_TELEGRAM_API = endpoint.url
    tg()
    hook = alert_channel_create(actor=None, kind="webhook", name="hook", events=["kill_switch"],
                                secret=endpoint.url + HOOK_PATH + "?token=qu3rySecretValue")
    table = raw_table()
    for piece in (TOKEN, TOKEN.split(":")[1], "s3cr3t-webhook-token-part", "qu3rySecretValue", endpoint.url):
        assert piece not in table
    assert AlertChannel.objects.get(pk=hook.pk).secret == endpoint.url + HOOK_PATH + "?token=qu3rySecretValue"
    with django_capture_on_commit_callbacks(execute=True):
        alert_emit(kind="kill_switch", title="Kill switch tripped")
    assert sorted(r.path for r in endpoint.requests) == sorted([f"/bot{TOKEN}/sendMessage",
                                                               HOOK_PATH + "?token=qu3rySecretValue"])
    assert set(AlertDelivery.objects.values_list("status", flat=True)) == {"sent"}


def test_the_column_is_a_fernet_token_under_the_configured_key_with_a_random_iv(settings):
    a, b = tg("a"), tg("b")  # the same token twice
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM alerts_alertchannel ORDER BY name")
        cells = [[c for c in row if isinstance(c, str) and c.startswith("gAAAAA")] for row in cursor.fetchall()]
    assert [len(c) for c in cells] == [1, 1]  # one Fernet token per row
    (ta,), (tb,) = cells
    assert ta != tb  # equal secrets, different tokens: the column does not even say which channels share one
    assert Fernet(settings.HFT_SECRETS_KEYS[0]).decrypt(ta.encode()).decode() == TOKEN
    assert a.secret == b.secret == TOKEN


def test_replacing_a_secret_re_encrypts_it_and_the_audit_says_only_replaced(operator):
    ch = tg()
    before = raw_table()
    alert_channel_update(actor=operator, channel_id=ch.pk, name=ch.name, events=["fill"], chat_id="42",
                         enabled=True, secret=NEW_TOKEN)
    ch.refresh_from_db()
    assert ch.secret == NEW_TOKEN and NEW_TOKEN not in raw_table() and raw_table() != before
    audit = AuditEvent.objects.get(action="alert_channel.update")
    assert audit.after["secret"] == "replaced" and NEW_TOKEN not in str(audit.before) + str(audit.after)


def test_a_key_is_rotated_without_losing_a_secret(settings, capsys):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.HFT_SECRETS_KEYS = [old]
    ch = tg()
    settings.HFT_SECRETS_KEYS = [new, old]  # step 1: the new key first; both open the secrets
    assert AlertChannel.objects.get(pk=ch.pk).secret == TOKEN
    call_command("alert_secrets_rotate")  # step 2: every secret re-encrypted under the new key
    assert "1 re-encrypted" in capsys.readouterr().out
    settings.HFT_SECRETS_KEYS = [new]  # step 3: the old key dropped
    assert AlertChannel.objects.get(pk=ch.pk).secret == TOKEN
    assert AuditEvent.objects.filter(action="alert_secrets.rotate").exists()


def test_rotation_names_the_channels_no_key_opens_and_leaves_them_as_they_are(settings):
    tg()
    before = raw_table()
    settings.HFT_SECRETS_KEYS = [Fernet.generate_key().decode()]  # the key that wrote it is gone
    with pytest.raises(CommandError, match="1 cannot be decrypted with any key: ops-telegram"):
        call_command("alert_secrets_rotate")
    assert raw_table() == before  # the right key may still come back


def test_a_key_that_cannot_open_a_secret_fails_its_deliveries_clearly_and_pages_still_work(
        endpoint, eager, settings, op_client, viewer_client, django_capture_on_commit_callbacks):
    settings.HFT_ALERT_TELEGRAM_API = endpoint.url
    broken = tg("broken")
    settings.HFT_SECRETS_KEYS = [Fernet.generate_key().decode()]  # HFT_SECRETS_KEY replaced, old key not kept
    fine = alert_channel_create(actor=None, kind="webhook", name="fine", events=["kill_switch"],
                                secret=endpoint.url + "/hook")  # written under the new key
    with django_capture_on_commit_callbacks(execute=True):
        alert_emit(kind="kill_switch", title="Kill switch tripped")
    assert [r.path for r in endpoint.requests] == ["/hook"]  # the other channel is not held up
    d = AlertDelivery.objects.get(channel=broken)
    assert d.status == "failed" and d.attempts == 1
    assert d.error == ("the channel's secret cannot be decrypted with HFT_SECRETS_KEY (was the key replaced? "
                       "put the old key after the new one, or enter the secret again)")
    assert AlertDelivery.objects.get(channel=fine).status == "sent"
    for client in (op_client, viewer_client):
        page = client.get("/alerts/")
        assert page.status_code == 200 and f'id="channel-{broken.pk}"' in page.content.decode()
    edit = op_client.get(reverse("dashboard:alert-channel-edit", args=[broken.pk]))
    assert edit.status_code == 200 and "set: leave empty to keep" in edit.content.decode()
    # entering the secret again under the new key repairs the channel
    alert_channel_update(actor=None, channel_id=broken.pk, name="broken", events=["kill_switch"], chat_id="42",
                         enabled=True, secret=TOKEN)
    assert AlertChannel.objects.get(pk=broken.pk).secret == TOKEN
