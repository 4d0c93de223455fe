import sys
import time
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError

from apps.market import history
from apps.market.history_services import DownloadRequestError, history_download_create, history_download_run
from apps.market.history_services import progress_line as render_progress
from apps.market.models import HistoryDownload

GAPS_SHOWN = 20


def parse_utc(value: str) -> datetime:
    """'2025-05-01', '2025-05-01T12:30' or a full ISO timestamp; without a zone it is UTC."""
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a date: use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)") from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


class Command(BaseCommand):
    help = (
        "Download closed candles over ccxt REST into Candle: paginated, resumable (a rerun fetches only what is "
        "missing and stores nothing twice), retries network errors, never stores the still-forming candle, "
        "reports gaps. --until is exclusive; without it the download runs up to the last closed candle."
    )

    def add_arguments(self, parser):
        parser.add_argument("--exchange", required=True, help="ccxt exchange id: binance, binanceusdm, okx, kraken ...")
        parser.add_argument("--symbol", required=True, help="ccxt unified symbol, e.g. BTC/USDT or BTC/USDT:USDT")
        parser.add_argument("--timeframe", default="1m", choices=history.TIMEFRAMES)
        parser.add_argument("--since", required=True, help="first candle, UTC: YYYY-MM-DD[THH:MM]")
        parser.add_argument("--until", help="end, exclusive, UTC (default: up to the last closed candle)")
        parser.add_argument("--limit", type=int, default=history.DEFAULT_LIMIT, help="candles per request")

    def handle(self, *args, exchange, symbol, timeframe, since, until=None, limit=history.DEFAULT_LIMIT, **options):
        if limit < 1:
            raise CommandError("--limit must be at least 1")
        try:
            row = history_download_create(exchange_code=exchange, symbol=symbol, timeframe=timeframe,
                                          since=parse_utc(since), until=parse_utc(until) if until else None)
        except DownloadRequestError as e:
            raise CommandError(str(e)) from None
        self.stdout.write(f"download #{row.pk}: {row.instrument} {timeframe} from {row.since:%Y-%m-%d %H:%M} "
                          f"to {f'{row.until:%Y-%m-%d %H:%M}' if row.until else 'the last closed candle'} (UTC), "
                          f"{row.expected} candles")
        started = time.monotonic()
        last = [0.0, -1]

        def show(p: history.Progress) -> None:
            # A simple \r line: redrawn at most 10 times a second, and once at 100%.
            now = time.monotonic()
            if (now - last[0] >= 0.1 or p.done >= p.expected) and last[1] != p.done:
                last[0], last[1] = now, p.done
                self.stdout.write("\r" + render_progress(p, started=started), ending="")
                self.stdout.flush()

        row = history_download_run(download_id=row.pk, limit=limit, on_progress=show)
        elapsed = time.monotonic() - started
        self.stdout.write("")
        if row.state != HistoryDownload.State.DONE:
            raise CommandError(f"download #{row.pk} failed after storing {row.stored} candles: {row.error}\n"
                               "Run the same command again to resume: it fetches only what is missing.")
        missing = sum(g[2] for g in row.gaps)
        self.stdout.write(
            f"done: expected {row.expected}, fetched {row.fetched}, stored {row.stored} new, "
            f"{len(row.gaps)} gaps ({missing} candles missing), {elapsed:.2f}s"
            + (f", {row.fetched / elapsed:,.0f} candles/s" if row.fetched and elapsed > 0 else "")
        )
        for first, last_missing, count in row.gaps[:GAPS_SHOWN]:
            self.stdout.write(f"  gap {first} .. {last_missing}: {count} candles")
        if len(row.gaps) > GAPS_SHOWN:
            self.stdout.write(f"  ... {len(row.gaps) - GAPS_SHOWN} more gaps (HistoryDownload #{row.pk})")
        if row.error:
            self.stdout.write(row.error)
        sys.stdout.flush()
