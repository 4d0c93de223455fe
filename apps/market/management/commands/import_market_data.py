import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.market import importers
from apps.market.models import Exchange, Instrument
from apps.market.services import candles_import

EXCHANGE_NAMES = {"binance": "Binance", "binanceusdm": "Binance USDT-M"}


def instrument_ensure(*, exchange_code: str, symbol: str) -> Instrument:
    """The instrument, creating its exchange/instrument rows when missing (base/quote from the ccxt symbol)."""
    ex, _ = Exchange.objects.get_or_create(
        code=exchange_code, defaults={"name": EXCHANGE_NAMES.get(exchange_code, exchange_code)}
    )
    base, _, rest = symbol.partition("/")
    quote = rest.split(":")[0]
    inst, _ = Instrument.objects.get_or_create(exchange=ex, symbol=symbol, defaults={"base": base, "quote": quote})
    return inst


class Command(BaseCommand):
    help = (
        "Import kline files (Binance Vision zip/CSV, Binance API CSV, freqtrade OHLCV CSV[.gz]) into Candle. "
        "Idempotent: rows already stored are left alone. Exchange, symbol and timeframe come from the file name "
        "unless given."
    )

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", metavar="PATH")
        parser.add_argument("--exchange", help="ccxt exchange id, e.g. binance, binanceusdm")
        parser.add_argument("--symbol", help="ccxt unified symbol, e.g. BTC/USDT or BTC/USDT:USDT")
        parser.add_argument("--timeframe", help="bar timeframe, e.g. 1m, 1h (default: from the file name)")

    def handle(self, *args, paths, exchange=None, symbol=None, timeframe=None, **options):
        for raw in paths:
            path = Path(raw)
            if not path.is_file():
                raise CommandError(f"{path}: no such file")
            started = time.perf_counter()
            try:
                fmt = importers.detect_format(path)
                frame = importers.read_klines(path, fmt)
            except importers.UnknownFormat as exc:
                raise CommandError(str(exc)) from exc
            info = importers.infer_file_info(path)
            ex_code = exchange or info.exchange
            sym = symbol or info.symbol
            tf = timeframe or info.timeframe or importers.timeframe_from_spacing(frame)
            missing = [name for name, v in (("--exchange", ex_code), ("--symbol", sym), ("--timeframe", tf)) if not v]
            if missing:
                raise CommandError(f"{path.name}: cannot tell {', '.join(missing)} from the file name; pass it")
            inst = instrument_ensure(exchange_code=ex_code, symbol=sym)
            report = candles_import(instrument=inst, frame=frame, timeframe=tf)
            skipped = ", ".join(f"{k}={v}" for k, v in sorted(report.skipped.items())) or "none"
            self.stdout.write(
                f"{path.name} [{fmt}] -> {inst} {tf}: read {report.read}, stored {report.stored}, "
                f"skipped {sum(report.skipped.values())} ({skipped}), {time.perf_counter() - started:.2f}s"
            )
