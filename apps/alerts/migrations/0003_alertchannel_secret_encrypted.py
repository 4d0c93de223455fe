"""The secret column becomes the encrypted one (its rows are encrypted in place by 0004)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("alerts", "0002_redact_delivery_errors")]

    operations = [
        migrations.RenameField(model_name="alertchannel", old_name="secret", new_name="secret_encrypted"),
        migrations.AlterField(model_name="alertchannel", name="secret_encrypted",
                              field=models.TextField(blank=True, editable=False)),
    ]
