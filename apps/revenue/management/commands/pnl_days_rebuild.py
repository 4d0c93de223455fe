"""manage.py pnl_days_rebuild: re-derive the P&L day rows and the ghosts' running figures from the ledger.

For a database filled around the close services (a bulk import, a restored backup) or to check the rows: it
prints how many day rows and closed trades it counted, and the time it took.
"""

import time

from django.core.management.base import BaseCommand

from apps.revenue.models import PnlDay
from apps.revenue.services import pnl_days_rebuild


class Command(BaseCommand):
    help = "Rebuild revenue.PnlDay and revenue.GhostLedger from the closed positions (the ledger)."

    def handle(self, *args, **options) -> None:
        t = time.monotonic()
        days = pnl_days_rebuild()
        trades = sum(PnlDay.objects.values_list("trades", flat=True))
        self.stdout.write(f"{days} day rows, {trades} closed trades, in {time.monotonic() - t:.1f} s")
