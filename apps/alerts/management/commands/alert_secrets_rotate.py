"""manage.py alert_secrets_rotate: re-encrypt every alert channel secret under the first key of HFT_SECRETS_KEY.

Rotation: set HFT_SECRETS_KEY="<new>,<old>" everywhere (web, workers), run this, then set HFT_SECRETS_KEY="<new>".
Exits with an error naming the channels that no configured key opens (left as they are: keep the old key
until they are re-entered on the Alerts page).
"""

from django.core.management.base import BaseCommand, CommandError

from apps.alerts.services import alert_secrets_rotate


class Command(BaseCommand):
    help = "Re-encrypt every alert channel secret under the first key of HFT_SECRETS_KEY (key rotation)."

    def handle(self, *args, **options) -> None:
        done, unreadable = alert_secrets_rotate()
        self.stdout.write(f"alert secrets: {done} re-encrypted under the first key of HFT_SECRETS_KEY")
        if unreadable:
            raise CommandError(f"{len(unreadable)} cannot be decrypted with any key: {', '.join(unreadable)} "
                               "(keep the old key in HFT_SECRETS_KEY, or enter those secrets again)")
