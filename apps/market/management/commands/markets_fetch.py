"""`manage.py markets_fetch EXCHANGE [...]`: load exchanges' ccxt markets into the cache the Instruments page reads
offline (RUN_DIR/markets/<exchange>.json), and refresh the rules (tick, step, minimums) of their instruments."""

from django.core.management.base import BaseCommand, CommandError

from apps.market.markets import MarketError, markets_fetch
from apps.market.services import instruments_rules_refresh


class Command(BaseCommand):
    help = "Load and cache ccxt markets (symbols, precision, minimums, contract sizes) of the given exchanges."

    def add_arguments(self, parser) -> None:
        parser.add_argument("exchanges", nargs="+", help="ccxt exchange ids: binance, binanceusdm, kraken, ...")

    def handle(self, *args, **opts) -> None:
        failed = []
        for code in opts["exchanges"]:
            try:
                got = markets_fetch(code)
            except MarketError as exc:
                self.stderr.write(str(exc))
                failed.append(code)
                continue
            refreshed = instruments_rules_refresh(exchange_code=code, markets=got)
            self.stdout.write(f"{code}: {len(got.symbols())} markets cached ({got.fetched_at:%Y-%m-%d %H:%M} UTC); "
                              f"rules changed on {', '.join(refreshed) or 'no instrument'}")
        if failed:
            raise CommandError(f"not loaded: {', '.join(failed)}")
