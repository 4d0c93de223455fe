from django.core.management.base import BaseCommand

from apps.runtime.services import desk_ensure


class Command(BaseCommand):
    help = "Ensure the default desk: Binance BTC/USDT, its feed, and a spike fader ghost (idempotent)."

    def handle(self, *args, **options):
        summary = desk_ensure()
        self.stdout.write(f"desk ready: {summary}")
