"""The alerts migrations on rows written by the code before them: delivery errors that printed a token are
redacted; plain secrets are encrypted (and decrypted going back). Real migrations on the test database
(MigrationExecutor), back to 0001 and forward again."""

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from apps.alerts.models import AlertDelivery

PATH_TOKEN, QUERY_TOKEN = "tok3nInThePath99", "qu3rySecretValue"
URL = f"https://hooks.example.com/hook/{PATH_TOKEN}?token={QUERY_TOKEN}"
ENV_URL = "https://discord.com/api/webhooks/1234567890123456789/envT0kenFromTheEnvironment"
TOKEN = "123456789:AAHfakeTokenForTests_0123456789abcdef"
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def migrate(target: str):
    """Migrate the alerts app to `target` ("zero" for nothing, "latest" for its leaf); the historical apps."""
    executor = MigrationExecutor(connection)
    if target == "latest":
        target = executor.loader.graph.leaf_nodes("alerts")[0][1]
    executor.migrate([("alerts", target)])
    return MigrationExecutor(connection).loader.project_state([("alerts", target)]).apps


@pytest.fixture
def at_0001():
    """The alerts tables as 0001 made them; migrated back to the latest afterwards, whatever the test did."""
    try:
        yield migrate("0001_initial")
    finally:
        migrate("latest")


def old_delivery(apps, channel, key: str, error: str):
    return apps.get_model("alerts", "AlertDelivery").objects.create(
        channel=channel, channel_key=key, channel_label="x", channel_kind="webhook", event="fill", title="x",
        event_at=T0, status="failed", attempts=2, error=error,
        attempts_log=[{"n": 1, "error": error, "http_status": 500}, {"n": 2, "error": error, "http_status": 404}])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_stored_delivery_errors_that_print_a_token_are_redacted(at_0001, monkeypatch):
    monkeypatch.setenv("HFT_ALERT_DISCORD_WEBHOOK", ENV_URL)
    channel = at_0001.get_model("alerts", "AlertChannel").objects.create(
        kind="webhook", name="hook", events=["fill"], secret=URL)
    # what the old code stored: the path replaced, the query left in; an echo of the env channel's URL, JSON-escaped
    rows = [old_delivery(at_0001, channel, f"db:{channel.pk}", f"HTTP 404: POST /***?token={QUERY_TOKEN} not found"),
            # the old code cut the answer at 300 characters before redacting: half a token at the end
            old_delivery(at_0001, channel, f"db:{channel.pk}", f'HTTP 404: {{"error": "bad token {QUERY_TOKEN[:12]}'),
            old_delivery(at_0001, None, "env:discord", "HTTP 401: " + ENV_URL.replace("/", "\\/")),
            old_delivery(at_0001, None, "env:discord", "URLError: <urlopen error [Errno 111] Connection refused>")]
    migrate("latest")
    after = {d.pk: d for d in AlertDelivery.objects.all()}
    errors = [after[r.pk].error for r in rows]
    assert errors == ["HTTP 404: POST /***?token=*** not found",
                      'HTTP 404: {"error": "bad token ***',
                      "HTTP 401: https://discord.com/api/webhooks/***/***",
                      "URLError: <urlopen error [Errno 111] Connection refused>"]
    for r in rows:
        d = after[r.pk]
        assert [e["error"] for e in d.attempts_log] == [d.error, d.error]
        assert [e["http_status"] for e in d.attempts_log] == [500, 404] and d.updated_at == r.updated_at


def raw_secrets() -> list:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM alerts_alertchannel ORDER BY name")
        return cursor.fetchall()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_plain_secrets_are_encrypted_and_back_again(at_0001):
    from apps.alerts.models import AlertChannel

    Channel = at_0001.get_model("alerts", "AlertChannel")
    Channel.objects.create(kind="webhook", name="a-hook", events=["fill"], secret=URL)
    Channel.objects.create(kind="telegram", name="b-tg", events=["fill"], chat_id="42", secret=TOKEN)
    Channel.objects.create(kind="webhook", name="c-none", events=["fill"], secret="")
    stamps = dict(Channel.objects.values_list("name", "updated_at"))
    assert URL in repr(raw_secrets())  # what 0001 stored: plain text
    migrate("latest")
    table = repr(raw_secrets())
    assert URL not in table and TOKEN not in table and QUERY_TOKEN not in table and PATH_TOKEN not in table
    rows = {c.name: c for c in AlertChannel.objects.all()}
    assert [rows[n].secret for n in ("a-hook", "b-tg", "c-none")] == [URL, TOKEN, ""]
    assert rows["c-none"].secret_encrypted == "" and not rows["c-none"].secret_set
    assert {n: c.updated_at for n, c in rows.items()} == stamps
    old = migrate("0002_redact_delivery_errors")  # backwards: plain again, as the code of then reads it
    assert dict(old.get_model("alerts", "AlertChannel").objects.values_list("name", "secret")) == {
        "a-hook": URL, "b-tg": TOKEN, "c-none": ""}
