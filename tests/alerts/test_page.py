"""The Alerts page: operators add, edit, disable channels and send a test alert; viewers see the list and
are refused every change; secrets never appear in any rendered page or audit row; CSRF is enforced."""

import pytest
from django.test import Client
from django.urls import reverse

from apps.alerts.models import AlertChannel, AlertDelivery
from apps.alerts.services import alert_channel_create
from apps.audit.models import AuditEvent

pytestmark = pytest.mark.django_db
URL = "/alerts/"
TOKEN = "123456789:AAHfakeTokenForTests_0123456789abcdef"
NEW_TOKEN = "987654321:BBHanotherFakeToken_9876543210fedcba"
DISCORD = "https://discord.com/api/webhooks/1234567890/s3cr3t-webhook-token-part"
TELEGRAM_FORM = {"kind": "telegram", "name": "ops-telegram", "chat_id": "-1001234567", "secret": TOKEN,
                 "events": ["fill", "kill_switch"], "enabled": "1"}


@pytest.fixture
def tg(operator):
    return alert_channel_create(actor=operator, kind="telegram", name="ops-telegram", events=["kill_switch"],
                                chat_id="-1001234567", secret=TOKEN)


def everything_rendered(client) -> str:
    pages = [client.get(URL)]
    for ch in AlertChannel.objects.all():
        pages.append(client.get(reverse("dashboard:alert-channel-edit", args=[ch.pk])))
    pages.append(client.get("/audit/"))
    return "".join(p.content.decode() for p in pages if p.status_code == 200)


def test_url_and_nav_link(op_client, viewer_client):
    assert reverse("dashboard:alerts") == URL
    for client in (op_client, viewer_client):
        page = client.get(URL)
        assert page.status_code == 200 and 'href="/alerts/"' in page.content.decode()
    assert "No alert channels yet" in op_client.get(URL).content.decode()


def test_operator_adds_a_telegram_channel_and_the_token_is_never_shown(op_client, operator):
    response = op_client.post(URL, TELEGRAM_FORM)
    assert response.status_code == 302 and response.url == URL
    ch = AlertChannel.objects.get()
    assert (ch.kind, ch.name, ch.chat_id, ch.secret, ch.events, ch.enabled) == (
        "telegram", "ops-telegram", "-1001234567", TOKEN, ["fill", "kill_switch"], True)
    audit = AuditEvent.objects.get(action="alert_channel.create", actor=operator)
    assert audit.after["secret"] == "set" and TOKEN not in str(audit.after)
    html = everything_rendered(op_client)
    assert "ops-telegram" in html and "-1001234567" in html
    assert TOKEN not in html and TOKEN.split(":")[1] not in html
    edit = op_client.get(reverse("dashboard:alert-channel-edit", args=[ch.pk])).content.decode()
    assert 'name="secret"' in edit and 'value=""' in edit and "set: leave empty to keep, type to replace" in edit


def test_edit_keeps_the_secret_when_left_empty_and_replaces_it_when_typed(op_client, tg):
    edit = reverse("dashboard:alert-channel-edit", args=[tg.pk])
    r = op_client.post(edit, {"name": "ops-tg", "chat_id": "@desk_alerts", "secret": "", "events": ["fill"]})
    assert r.status_code == 302
    tg.refresh_from_db()
    assert (tg.name, tg.chat_id, tg.secret, tg.events, tg.enabled) == ("ops-tg", "@desk_alerts", TOKEN, ["fill"],
                                                                       False)
    assert AuditEvent.objects.get(action="alert_channel.update").after["secret"] == "kept"
    r = op_client.post(edit, {"name": "ops-tg", "chat_id": "@desk_alerts", "secret": NEW_TOKEN, "events": ["fill"],
                              "enabled": "1"})
    assert r.status_code == 302
    tg.refresh_from_db()
    assert tg.secret == NEW_TOKEN and tg.enabled
    html = everything_rendered(op_client)
    assert NEW_TOKEN not in html and TOKEN not in html


@pytest.mark.parametrize("change, message", [
    ({"secret": "not-a-token"}, "bot token must look like 123456789:AA"),
    ({"chat_id": "general chat"}, "chat id must be a number"),
    ({"events": []}, "choose at least one event"),
    ({"events": ["fill", "lunch"]}, "unknown event lunch"),
    ({"name": ""}, "give the channel a name"),
    ({"kind": "pager"}, "kind must be telegram, discord or webhook"),
    ({"kind": "discord", "secret": "http://discord.com/api/webhooks/1/tok"},
     "must be a full URL starting with https:// (http:// only to this machine"),
    ({"kind": "webhook", "secret": "ftp://example.com/x"}, "must be a full URL starting with https://"),
])
def test_bad_input_says_what_is_wrong_creates_nothing_and_echoes_no_secret(op_client, change, message):
    form = {**TELEGRAM_FORM, **change}
    response = op_client.post(URL, form)
    html = response.content.decode()
    assert response.status_code == 400 and message in html and 'id="channel-errors"' in html
    assert not AlertChannel.objects.exists()
    assert form["secret"] not in html  # a refused secret is not echoed back either


def test_duplicate_name_is_refused(op_client, tg):
    response = op_client.post(URL, TELEGRAM_FORM)
    assert response.status_code == 400 and "a channel named &#x27;ops-telegram&#x27; exists already" in \
        response.content.decode()
    assert AlertChannel.objects.count() == 1


def test_disable_enable_and_send_a_test_alert(op_client, tg, endpoint, eager, settings,
                                              django_capture_on_commit_callbacks):
    settings.HFT_ALERT_TELEGRAM_API = endpoint.url
    toggle = reverse("dashboard:alert-channel-toggle", args=[tg.pk])
    assert op_client.post(toggle, {"enabled": "0"}).status_code == 302
    tg.refresh_from_db()
    assert not tg.enabled and AuditEvent.objects.filter(action="alert_channel.disable").exists()
    with django_capture_on_commit_callbacks(execute=True):
        r = op_client.post(reverse("dashboard:alert-test"), {"channel": tg.key})  # a disabled channel can be tested
    assert r.status_code == 302
    [req] = endpoint.requests
    assert req.path == f"/bot{TOKEN}/sendMessage"
    assert req.body["text"] == "[hftweb PAPER] Test alert\nsent by olga from the Alerts page"
    d = AlertDelivery.objects.get()
    assert (d.event, d.status, d.channel, d.http_status) == ("test", "sent", tg, 200)
    page = op_client.get(URL).content.decode()
    assert f'id="delivery-{d.pk}"' in page and ">sent<" in page and TOKEN not in page
    assert op_client.post(toggle, {"enabled": "1"}).status_code == 302
    assert op_client.post(toggle, {"enabled": "maybe"}).status_code == 400
    assert op_client.post(reverse("dashboard:alert-test"), {"channel": "db:999"}).status_code == 400
    assert op_client.post(reverse("dashboard:alert-channel-toggle", args=[999]), {"enabled": "1"}).status_code == 404


def test_environment_channels_are_listed_read_only_without_secrets(op_client, viewer_client, monkeypatch, endpoint,
                                                                   eager, django_capture_on_commit_callbacks):
    hook = endpoint.url + "/env-hook/tok3n-in-the-path"
    monkeypatch.setenv("HFT_ALERT_TELEGRAM_TOKEN", TOKEN)
    monkeypatch.setenv("HFT_ALERT_TELEGRAM_CHAT_ID", "-100777")
    monkeypatch.setenv("HFT_ALERT_DISCORD_WEBHOOK", DISCORD)
    monkeypatch.setenv("HFT_ALERT_WEBHOOK_URL", hook)
    for client in (op_client, viewer_client):
        html = client.get(URL).content.decode()
        for kind in ("telegram", "discord", "webhook"):
            assert f'id="channel-env-{kind}"' in html
        assert "chat -100777" in html and "read-only" in html
        assert TOKEN not in html and "s3cr3t-webhook-token-part" not in html and "tok3n-in-the-path" not in html
    assert 'href="/alerts/db' not in op_client.get(URL).content.decode()  # no edit link for environment channels
    with django_capture_on_commit_callbacks(execute=True):
        assert op_client.post(reverse("dashboard:alert-test"), {"channel": "env:webhook"}).status_code == 302
    [req] = endpoint.requests
    assert req.path == "/env-hook/tok3n-in-the-path" and req.body["kind"] == "test"
    assert AlertDelivery.objects.get().channel_label == "Webhook (environment)"


def test_viewer_sees_the_list_and_is_refused_every_change(viewer_client, tg):
    html = viewer_client.get(URL).content.decode()
    assert "ops-telegram" in html and "Read-only" in html and 'id="channel-form"' not in html
    assert TOKEN not in html
    before = list(AlertChannel.objects.values())
    for url, data in [
        (URL, TELEGRAM_FORM),
        (reverse("dashboard:alert-channel-edit", args=[tg.pk]), {**TELEGRAM_FORM, "secret": NEW_TOKEN}),
        (reverse("dashboard:alert-channel-toggle", args=[tg.pk]), {"enabled": "0"}),
        (reverse("dashboard:alert-test"), {"channel": tg.key}),
    ]:
        assert viewer_client.post(url, data).status_code == 403, url
    assert viewer_client.get(reverse("dashboard:alert-channel-edit", args=[tg.pk])).status_code == 403
    assert list(AlertChannel.objects.values()) == before and not AlertDelivery.objects.exists()


def test_anonymous_is_sent_to_login(tg):
    r = Client().get(URL)
    assert r.status_code == 302 and "/login" in r.url


def test_post_without_csrf_token_is_refused(operator):
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    assert client.post(URL, TELEGRAM_FORM).status_code == 403
    assert not AlertChannel.objects.exists()
