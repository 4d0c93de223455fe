"""Encrypt the alert secrets stored in plain text before issue 12 (Fernet under HFT_SECRETS_KEY, apps/alerts/crypto.py).

Forward: every non-empty value that no configured key opens is taken as plain and encrypted under the first key
(a plain bot token or URL can never pass Fernet's HMAC, so a value already encrypted is left alone and the step
can run twice). Backward: decrypted to plain again; refuses, naming the channels, when a value no key opens.
`updated_at` is kept (update(), not save()). Needs HFT_SECRETS_KEY only when there are rows: settings refuse to
start without it unless DEBUG=1 (`make run` creates one before migrating).
"""

from django.db import migrations

from apps.alerts.crypto import SecretUnreadable, secret_decrypt, secret_encrypt


def encrypt_plain_secrets(apps, schema_editor):
    AlertChannel = apps.get_model("alerts", "AlertChannel")
    for pk, value in AlertChannel.objects.exclude(secret_encrypted="").values_list("pk", "secret_encrypted"):
        try:
            secret_decrypt(value)
        except SecretUnreadable:
            AlertChannel.objects.filter(pk=pk).update(secret_encrypted=secret_encrypt(value))


def decrypt_secrets(apps, schema_editor):
    AlertChannel = apps.get_model("alerts", "AlertChannel")
    rows = list(AlertChannel.objects.exclude(secret_encrypted="").values_list("pk", "name", "secret_encrypted"))
    plain, unreadable = {}, []
    for pk, name, value in rows:
        try:
            plain[pk] = secret_decrypt(value)
        except SecretUnreadable:
            unreadable.append(name)
    if unreadable:
        raise RuntimeError(f"cannot decrypt the secrets of alert channels {unreadable} with HFT_SECRETS_KEY: "
                           "add the key that encrypted them, or clear those secrets, before migrating back")
    for pk, value in plain.items():
        AlertChannel.objects.filter(pk=pk).update(secret_encrypted=value)


class Migration(migrations.Migration):
    dependencies = [("alerts", "0003_alertchannel_secret_encrypted")]

    operations = [migrations.RunPython(encrypt_plain_secrets, decrypt_secrets)]
