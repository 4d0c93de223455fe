"""`python manage.py reconcile [--exchange CODE] [--since-hours H]`: compare the exchange with the ledger.

Thin: the work is `apps.trading.live_reconcile.live_reconcile`. Exit status 0 when nothing needs a person, 2 when
something was reported for review, and a CommandError (status 1) when live trading is off or refused.

It records, and it keeps open live positions protected: a missing protective stop is placed again, one out of
step with the ledger is moved, a stale one of ours is cancelled, a position whose stop filled while the desk
was down is closed from that fill, and one whose stop the price is already through (the exchange refuses the
stop) is closed at market, as the desk's own stop rule would (apps.trading.live_executor.protect_position).
No other orders.
"""

import sys

from django.core.management.base import BaseCommand, CommandError

from apps.trading.live_client import LiveTradingRefused, live_check
from apps.trading.live_reconcile import live_reconcile, reconcile_exchange_codes


class Command(BaseCommand):
    help = ("Reconcile open orders, recent fills, protective stops and holdings on the exchange with the live "
            "ledger.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--exchange", action="append", dest="exchanges",
                            help="ccxt exchange id (repeatable); default: every exchange live trading touches")
        parser.add_argument("--since-hours", type=float, default=48.0,
                            help="how far back to look for our filled orders missing from the ledger (hours)")

    def handle(self, *args, exchanges=None, since_hours: float = 48.0, **options) -> None:
        codes = exchanges or reconcile_exchange_codes()
        if not codes:
            self.stdout.write("no exchange to reconcile: no enabled ghost, live position or live order")
            return
        unresolved = 0
        for code in codes:
            try:
                live_check(code)
                report = live_reconcile(exchange_code=code, since_hours=since_hours)
            except LiveTradingRefused as exc:
                raise CommandError(str(exc)) from exc
            for line in report.lines():
                self.stdout.write(line)
            unresolved += len(report.unresolved)
        if unresolved:
            self.stderr.write(f"{unresolved} finding(s) need an operator: see above and the audit log")
            sys.exit(2)
