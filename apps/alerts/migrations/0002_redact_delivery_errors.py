"""Redact the delivery errors stored before redaction covered every URL form (issue 12): an endpoint that echoed
its URL left the query token (or, JSON-escaped or percent-encoded, the whole URL) on the row, its attempts and
so on /alerts/. Each row is redacted with its channel's own secret (plain in this schema) and the environment's
channel secrets as known at migrate time. `updated_at` is kept (update(), not save()). Not reversible in content:
going back leaves the rows redacted."""

import os

from django.db import migrations

from apps.alerts.redact import redact

ENV_SECRETS = ("HFT_ALERT_TELEGRAM_TOKEN", "HFT_ALERT_DISCORD_WEBHOOK", "HFT_ALERT_WEBHOOK_URL")


def redact_stored_errors(apps, schema_editor):
    AlertChannel = apps.get_model("alerts", "AlertChannel")
    AlertDelivery = apps.get_model("alerts", "AlertDelivery")
    channel_secrets = dict(AlertChannel.objects.values_list("pk", "secret"))
    env = [os.environ.get(name, "") for name in ENV_SECRETS]
    rows = AlertDelivery.objects.values_list("pk", "channel_id", "error", "attempts_log")
    for pk, channel_id, error, attempts in rows.iterator(chunk_size=500):
        known = [channel_secrets.get(channel_id, ""), *env]
        new_error = redact(error, known) if error else error
        new_attempts = [{**e, "error": redact(e["error"], known)} if isinstance(e, dict) and e.get("error") else e
                        for e in attempts or []]
        if new_error != error or new_attempts != (attempts or []):
            AlertDelivery.objects.filter(pk=pk).update(error=new_error, attempts_log=new_attempts)


class Migration(migrations.Migration):
    dependencies = [("alerts", "0001_initial")]

    operations = [migrations.RunPython(redact_stored_errors, migrations.RunPython.noop, elidable=True)]
