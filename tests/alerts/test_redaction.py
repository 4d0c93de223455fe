"""A webhook that answers an error echoing its URL must not put the URL's token (path or query) into the delivery
error: not on the row, not in its attempts, not on /alerts/ (viewers), not in the admin, not in the log. The
endpoint is a real HTTP server on 127.0.0.1 that echoes the URL it was called on, in the forms real services
use (as is, JSON-escaped, percent-encoded, cut at the end of a long answer)."""

import json
import logging
from urllib.parse import quote

import pytest
from django.test import Client

from apps.alerts.models import AlertDelivery
from apps.alerts.services import alert_channel_create, alert_emit

pytestmark = pytest.mark.django_db
TOKEN = "123456789:AAHfakeTokenForTests_0123456789abcdef"
DISCORD_ID, DISCORD_TOKEN = "1234567890123456789", "s3cr3t-webhook-token-part_XyZ"
PATH_TOKEN, QUERY_TOKEN = "tok3nInThePath99", "qu3rySecretValue"


def echo_plain(url: str) -> str:
    return json.dumps({"ok": False, "description": f"no webhook at {url}"})


def echo_json_escaped(url: str) -> str:  # PHP's json_encode and others escape "/" as "\/"
    return '{"ok":false,"error":"no webhook at ' + url.replace("/", "\\/") + '"}'


def echo_percent_encoded(url: str) -> str:
    return f"error=unknown+hook&url={quote(url, safe='')}"


def echo_path_only(url: str) -> str:  # "POST /hook/...?token=... not found": no scheme, no host
    return "POST /" + url.split("://", 1)[1].split("/", 1)[1] + " not found"


def echo_at_the_cut(url: str) -> str:  # the old code cut the answer at 300 characters, then redacted: half a token
    return "x" * (300 - len("POST ") - len(url) + 8) + "POST " + url


ECHOES = [echo_plain, echo_json_escaped, echo_percent_encoded, echo_path_only, echo_at_the_cut]
CHANNELS = {
    "telegram": lambda url: {"secret": TOKEN, "chat_id": "-1001234567"},
    "discord": lambda url: {"secret": f"{url}/api/webhooks/{DISCORD_ID}/{DISCORD_TOKEN}"},
    "webhook": lambda url: {"secret": f"{url}/hook/{PATH_TOKEN}?token={QUERY_TOKEN}&v=2"},
}
SECRETS = [TOKEN, TOKEN.split(":")[1], DISCORD_TOKEN, DISCORD_ID, PATH_TOKEN, QUERY_TOKEN]


def leaks(text: str) -> list[str]:
    """Any secret, or a 12-character piece of one (a token cut in half is still half a token)."""
    return [s for s in SECRETS if any(s[i:i + 12] in text for i in range(0, max(1, len(s) - 11)))]


@pytest.fixture
def superuser_client(django_user_model):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "root-Pw-12345")
    client = Client()
    client.force_login(root)
    return client


@pytest.mark.parametrize("kind", CHANNELS)
@pytest.mark.parametrize("echo", ECHOES, ids=lambda f: f.__name__)
def test_an_endpoint_echoing_its_url_leaks_no_token(kind, echo, endpoint, eager, settings, caplog, viewer_client,
                                                    superuser_client, django_capture_on_commit_callbacks):
    settings.HFT_ALERT_TELEGRAM_API = endpoint.url
    settings.HFT_ALERT_MAX_RETRIES = 1
    endpoint.script, endpoint.error_body = [500, 404], echo  # a retry (logged as a warning), then a permanent 4xx
    alert_channel_create(actor=None, kind=kind, name=f"{kind}-echo", events=["fill"], **CHANNELS[kind](endpoint.url))
    with caplog.at_level(logging.INFO), django_capture_on_commit_callbacks(execute=True):
        alert_emit(kind="fill", title="x")
    assert len(endpoint.requests) == 2
    d = AlertDelivery.objects.get()
    assert (d.status, d.attempts, d.http_status) == ("failed", 2, 404)
    assert d.error.startswith("HTTP 404: ") and "***" in d.error  # the error still says what came back
    stored = d.error + json.dumps(d.attempts_log)
    page = viewer_client.get("/alerts/").content.decode()
    admin = superuser_client.get(f"/admin/alerts/alertdelivery/{d.pk}/change/")
    assert admin.status_code == 200 and "HTTP 404" in admin.content.decode()
    assert leaks(stored) == [] and leaks(page) == [] and leaks(admin.content.decode()) == []
    assert "retry in" in caplog.text and leaks(caplog.text) == []


def test_an_environment_webhook_echoing_its_url_leaks_no_token(endpoint, eager, monkeypatch, caplog, viewer_client,
                                                               django_capture_on_commit_callbacks):
    monkeypatch.setenv("HFT_ALERT_WEBHOOK_URL", f"{endpoint.url}/hook/{PATH_TOKEN}?token={QUERY_TOKEN}")
    endpoint.script, endpoint.error_body = [403], echo_path_only
    with django_capture_on_commit_callbacks(execute=True):
        alert_emit(kind="fill", title="x")
    d = AlertDelivery.objects.get()
    assert d.status == "failed" and d.channel_key == "env:webhook"
    assert leaks(d.error + json.dumps(d.attempts_log) + caplog.text + viewer_client.get("/alerts/").content.decode()) \
        == []


def test_a_broker_url_with_a_password_is_not_stored(endpoint, monkeypatch, caplog,
                                                    django_capture_on_commit_callbacks):
    from kombu.exceptions import OperationalError

    from apps.alerts import tasks

    def refuse(*args, **kwargs):  # the broker is the network edge; kombu names the URL it could not reach
        raise OperationalError(f"Error connecting to redis://:{QUERY_TOKEN}@10.0.0.5:6379/0. Connection refused.")

    monkeypatch.setattr(tasks.deliver_alert, "apply_async", refuse)
    alert_channel_create(actor=None, kind="webhook", name="hook", events=["fill"], secret=endpoint.url + "/hook")
    with django_capture_on_commit_callbacks(execute=True):
        alert_emit(kind="fill", title="x")
    d = AlertDelivery.objects.get()
    assert d.status == "failed" and d.error.startswith("could not queue: OperationalError")
    assert "10.0.0.5" in d.error and leaks(d.error + caplog.text) == []


def test_a_retry_that_cannot_be_queued_is_recorded_without_the_broker_password(
        endpoint, eager, monkeypatch, settings, caplog, django_capture_on_commit_callbacks):
    """deliver_alert's own fallback: a transient failure whose retry the broker refuses marks the row failed."""
    from apps.alerts import tasks

    settings.HFT_ALERT_MAX_RETRIES = 3
    endpoint.script, endpoint.error_body = [503], echo_plain

    def refuse(*args, **kwargs):  # the broker (network edge) is gone when the task asks for its retry
        raise ConnectionError(f"redis://user:{QUERY_TOKEN}@10.0.0.5:6379/0 unreachable")

    monkeypatch.setattr(tasks.deliver_alert, "retry", refuse)
    alert_channel_create(actor=None, kind="webhook", name="hook", events=["fill"],
                         secret=f"{endpoint.url}/hook/{PATH_TOKEN}?token={QUERY_TOKEN}")
    with django_capture_on_commit_callbacks(execute=True):
        alert_emit(kind="fill", title="x")
    d = AlertDelivery.objects.get()
    assert d.status == "failed" and "retry not scheduled" in d.error
    assert leaks(d.error + caplog.text) == []


def test_anything_the_alert_loggers_print_is_redacted(caplog):
    """The last line of defence: a traceback or message logged by apps.alerts carries no URL token."""
    url = f"https://discord.com/api/webhooks/{DISCORD_ID}/{DISCORD_TOKEN}"
    for name in ("apps.alerts.tasks", "apps.alerts.services", "apps.alerts.delivery"):
        try:
            raise ValueError(f"unknown url type: {url}?token={QUERY_TOKEN}")
        except ValueError:
            logging.getLogger(name).exception("alert delivery %s crashed at %s", 7, url)
    assert caplog.text.count("alert delivery 7 crashed") == 3 and "ValueError: unknown url type" in caplog.text
    assert "https://discord.com/api/webhooks/***/***" in caplog.text and leaks(caplog.text) == []


# --- the redaction itself ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    (f"POST https://api.telegram.org/bot{TOKEN}/sendMessage: 401",
     "POST https://api.telegram.org/bot***/sendMessage: 401"),
    (f"https://discord.com/api/webhooks/{DISCORD_ID}/{DISCORD_TOKEN}?wait=true",
     "https://discord.com/api/webhooks/***/***?wait=***"),
    (f"see https://hooks.example.com/in/{PATH_TOKEN}?token={QUERY_TOKEN}&chat=42.",
     "see https://hooks.example.com/in/***?token=***&chat=***."),
    (f"https://ops:{QUERY_TOKEN}@hooks.example.com/alerts#frag", "https://***@hooks.example.com/alerts#***"),
    (f"redis://:{QUERY_TOKEN}@10.0.0.5:6379/0", "redis://***@10.0.0.5:6379/0"),
    (f'"https:\\/\\/discord.com\\/api\\/webhooks\\/{DISCORD_ID}\\/{DISCORD_TOKEN}"',
     '"https://discord.com/api/webhooks/***/***"'),
    (f"url={quote(f'https://x.example/h?token={QUERY_TOKEN}', safe='')}",
     "url=https%3A%2F%2Fx.example%2Fh%3Ftoken%3D***"),
    (f"POST /api/webhooks/{DISCORD_ID}/{DISCORD_TOKEN} not found", "POST /api/webhooks/***/*** not found"),
    (f"Unauthorized: bot {TOKEN} revoked", "Unauthorized: bot *** revoked"),
    (f"GET /hook?token={QUERY_TOKEN}&x=1 404", "GET /hook?token=***&x=*** 404"),
    # what must stay readable (None: unchanged): statuses, plain paths, hosts, times
    ('HTTP 404: {"ok":false,"description":"Not Found: chat not found"}', None),
    ("URLError: <urlopen error [Errno 111] Connection refused>", None),
    ("https://example.com/api/v2/alerts/sendMessage at 10:00:30", None),
])
def test_redact_hides_tokens_and_keeps_the_rest(text, expected):
    from apps.alerts.redact import redact

    assert redact(text) == (text if expected is None else expected)


def test_redact_hides_a_known_secret_in_any_form():
    from apps.alerts.redact import redact

    url = f"https://hooks.example.com/in/abcdefgh?key={QUERY_TOKEN}"  # a letters-only path token: known, so hidden
    for echoed in (url, quote(url, safe=""), url.replace("/", "\\/"), "/in/abcdefgh", f"bad key {QUERY_TOKEN}"):
        out = redact(f"HTTP 400: {echoed}", [url])
        assert "abcdefgh" not in out and QUERY_TOKEN not in out, out
    assert redact(f"bad token {TOKEN}", [TOKEN]) == "bad token ***"
    assert redact("nothing secret here", [url, "", TOKEN]) == "nothing secret here"


def test_a_feed_error_naming_a_signed_url_is_redacted_before_it_is_sent(desk, endpoint, eager,
                                                                         django_capture_on_commit_callbacks):
    from apps.market.models import FeedStatus
    from apps.market.services import feed_status_update

    alert_channel_create(actor=None, kind="webhook", name="hook", events=["feed_down"], secret=endpoint.url + "/hook")
    FeedStatus.objects.filter(instrument=desk["instrument"]).update(state="connected")
    error = (f"binance GET https://api.binance.com/api/v3/account?timestamp=1700000000000&signature={QUERY_TOKEN} "
             "418 I'm a teapot")
    with django_capture_on_commit_callbacks(execute=True):
        feed_status_update(instrument_id=desk["instrument"].pk, state="error", last_error=error)
    [req] = endpoint.requests
    assert "https://api.binance.com/api/v3/account?timestamp=***&signature=*** 418" in req.body["body"]
    d = AlertDelivery.objects.get()
    assert leaks(req.body["body"] + json.dumps(req.body["data"]) + d.body + json.dumps(d.data)) == []
