"""HistoryDownload rows: create (validated, audited), run (the downloader of apps.market.history writing
through candles_import), and the browser payload pushed while a download runs.

Progress goes to the "feeds" Channels group (every desk socket joins it) as ``history.progress`` events;
each event is the whole state of the row, so a browser that missed some only needs the next one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import TypedDict

import ccxt
import numpy as np
from django.conf import settings
from django.db import transaction

from apps.audit.services import audit_record
from apps.common.realtime import send_on_commit
from apps.common.text import db_text
from apps.market import history
from apps.market.events import FEEDS_GROUP
from apps.market.models import Candle, Exchange, HistoryDownload, Instrument
from apps.market.services import candles_import

log = logging.getLogger(__name__)

# Exchanges the desk offers (DESIGN: Binance spot, Binance USDT-M, OKX, Kraken, Bybit). The command
# accepts any ccxt id; the dashboard offers these.
EXCHANGES = {"binance": "Binance", "binanceusdm": "Binance USDT-M", "okx": "OKX", "kraken": "Kraken", "bybit": "Bybit"}
MAX_CANDLES = 2_000_000  # ~3.8 years of 1m per download: bigger ranges are split by the operator
PUSH_EVERY_S = 0.5  # browser progress at most twice a second (the final state is always sent)


class DownloadRequestError(ValueError):
    """A download request that cannot run (bad range, timeframe, exchange); the message is for the user."""


class DownloadEvent(TypedDict):
    type: str  # "history.progress"
    download_id: int
    exchange: str
    symbol: str
    timeframe: str
    since: str
    until: str | None
    state: str
    expected: int
    fetched: int
    stored: int
    progress: float  # 0..1 of the grid slots settled
    gaps: int  # runs of missing candles
    missing: int  # candles missing inside the range
    error: str


def instrument_ensure(*, exchange_code: str, symbol: str) -> Instrument:
    """The Instrument, creating Exchange/Instrument rows when missing (shared with import_market_data)."""
    from apps.market.management.commands.import_market_data import instrument_ensure as ensure

    # The exchange first, so a new one gets its display name (the import command knows only Binance's).
    Exchange.objects.get_or_create(code=exchange_code, defaults={"name": EXCHANGES.get(exchange_code, exchange_code)})
    return ensure(exchange_code=exchange_code, symbol=symbol)


def download_payload(row: HistoryDownload, *, fraction: float | None = None) -> DownloadEvent:
    if fraction is None:
        fraction = 1.0 if row.state == HistoryDownload.State.DONE else (
            min(1.0, row.fetched / row.expected) if row.expected else 0.0)
    return DownloadEvent(
        type="history.progress",
        download_id=row.pk,
        exchange=row.instrument.exchange.code,
        symbol=row.instrument.symbol,
        timeframe=row.timeframe,
        since=row.since.isoformat(),
        until=row.until.isoformat() if row.until else None,
        state=row.state,
        expected=row.expected,
        fetched=row.fetched,
        stored=row.stored,
        progress=round(fraction, 4),
        gaps=len(row.gaps or []),
        missing=sum(int(g[2]) for g in (row.gaps or [])),
        error=row.error,
    )


def history_downloads(*, limit: int = 50) -> list[HistoryDownload]:
    """Newest downloads first, for the dashboard."""
    return list(HistoryDownload.objects.select_related("instrument__exchange", "requested_by")[:limit])


def _validate(*, exchange_code: str, timeframe: str, since: datetime, until: datetime | None,
              now_ms: int) -> int:
    if exchange_code not in ccxt.exchanges:
        raise DownloadRequestError(f"unknown exchange {exchange_code!r}; use a ccxt id such as "
                                   f"{', '.join(EXCHANGES)}")
    try:
        tf = history.timeframe_ms(timeframe)
        since_ms = history.to_ms(since)
        until_ms = history.to_ms(until) if until is not None else None
    except ValueError as e:
        raise DownloadRequestError(str(e)) from None
    if until_ms is not None and until_ms <= since_ms:
        raise DownloadRequestError("'until' must be after 'since'")
    expected = history.expected_count(since_ms=since_ms, until_ms=until_ms, tf_ms=tf, now_ms=now_ms)
    if expected <= 0:
        raise DownloadRequestError(f"no closed {timeframe} candle in that range yet (it starts in the future)")
    if expected > MAX_CANDLES:
        raise DownloadRequestError(f"that range holds {expected:,} {timeframe} candles; at most {MAX_CANDLES:,} "
                                   "per download, split it")
    return expected


@transaction.atomic
def history_download_create(*, exchange_code: str, symbol: str, timeframe: str, since: datetime,
                            until: datetime | None = None, requested_by=None,
                            clock: history.Clock = history.wall_clock_ms) -> HistoryDownload:
    """A queued HistoryDownload (Exchange/Instrument rows created when missing). Raises DownloadRequestError
    before writing anything when the request cannot run. Audited when a user asked for it."""
    expected = _validate(exchange_code=exchange_code, timeframe=timeframe, since=since, until=until,
                         now_ms=clock())
    inst = instrument_ensure(exchange_code=exchange_code, symbol=symbol)
    row = HistoryDownload.objects.create(instrument=inst, timeframe=timeframe, since=since, until=until,
                                         expected=expected, requested_by=requested_by)
    if requested_by is not None:
        audit_record(actor=requested_by, action="history_download.start", obj=row,
                     after={"exchange": exchange_code, "symbol": symbol, "timeframe": timeframe,
                            "since": since.isoformat(), "until": until.isoformat() if until else None})
    send_on_commit(FEEDS_GROUP, download_payload(row))
    return row


def _stored_times(instrument_id: int, timeframe: str) -> Callable[[int, int], np.ndarray]:
    def stored(start_ms: int, end_ms: int) -> np.ndarray:
        # One datetime per stored candle (~1 s for a year of 1m): read twice per download, not per page.
        times = Candle.objects.filter(
            instrument_id=instrument_id, timeframe=timeframe,
            open_time__gte=history.from_ms(start_ms), open_time__lt=history.from_ms(end_ms),
        ).values_list("open_time", flat=True)
        return np.sort(np.fromiter((round(t.timestamp() * 1000) for t in times), dtype="int64"))

    return stored


def _exchange_for(code: str) -> ccxt.Exchange:
    # HFT_EXCHANGE_URLS (optional setting): {ccxt id: {api name: base URL}}; tests and private mirrors only.
    urls = getattr(settings, "HFT_EXCHANGE_URLS", {}).get(code)
    return history.exchange_create(code, urls=urls)


def history_download_run(*, download_id: int, exchange: ccxt.Exchange | None = None,
                         clock: history.Clock = history.wall_clock_ms, limit: int = history.DEFAULT_LIMIT,
                         retries: int = history.RETRIES, sleep: Callable[[float], None] = time.sleep,
                         on_progress: Callable[[history.Progress], None] | None = None) -> HistoryDownload:
    """Run one queued (or failed: a rerun resumes) download to done or failed. Safe to call twice: a row
    that is running or done is returned untouched. `exchange`/`clock`/`sleep` are injectable for tests;
    by default the ccxt exchange comes from `_exchange_for` and time from the wall clock.

    Progress (fetched, stored) is saved after each page and pushed to browsers; a download that ends in
    an error is marked failed with that error, never done, and keeps the candles it stored (closed,
    complete, idempotent), so running it again continues where it stopped.
    """
    claimed = HistoryDownload.objects.filter(
        pk=download_id, state__in=[HistoryDownload.State.QUEUED, HistoryDownload.State.FAILED]
    ).update(state=HistoryDownload.State.RUNNING, error="", fetched=0, stored=0)
    row = HistoryDownload.objects.select_related("instrument__exchange").get(pk=download_id)
    if not claimed:
        return row
    send_on_commit(FEEDS_GROUP, download_payload(row, fraction=0.0))
    inst, tf = row.instrument, row.timeframe
    last_push = [0.0]

    def progress(p: history.Progress) -> None:
        row.expected, row.fetched, row.stored = p.expected, p.fetched, p.stored
        row.save(update_fields=["expected", "fetched", "stored", "updated_at"])
        now = time.monotonic()
        if now - last_push[0] >= PUSH_EVERY_S:
            last_push[0] = now
            send_on_commit(FEEDS_GROUP, download_payload(row, fraction=p.fraction))
        if on_progress is not None:
            on_progress(p)

    try:
        ex = exchange if exchange is not None else _exchange_for(inst.exchange.code)
        result = history.download_candles(
            ex, inst.symbol, tf,
            since_ms=history.to_ms(row.since),
            until_ms=history.to_ms(row.until) if row.until else None,
            stored_times=_stored_times(inst.pk, tf),
            store=lambda frame: candles_import(instrument=inst, frame=frame, timeframe=tf).stored,
            clock=clock, limit=limit, retries=retries, sleep=sleep, on_progress=progress,
        )
    except Exception as exc:  # network after retries, exchange errors, a time limit: all visible on the row
        log.warning("history download %s failed: %s", download_id, exc)
        row.state = HistoryDownload.State.FAILED
        row.error = db_text(f"{type(exc).__name__}: {exc}")  # NUL or a bad byte would fail this save too
        row.save(update_fields=["state", "error", "updated_at"])
        send_on_commit(FEEDS_GROUP, download_payload(row))
        return row
    row.state = HistoryDownload.State.DONE
    row.expected, row.fetched, row.stored = result.expected, result.fetched, result.stored
    row.gaps = [g.as_json() for g in result.gaps]
    row.error = f"{result.off_grid} candles off the {tf} grid were dropped" if result.off_grid else ""
    row.save(update_fields=["state", "expected", "fetched", "stored", "gaps", "error", "updated_at"])
    send_on_commit(FEEDS_GROUP, download_payload(row))
    return row


def download_progress(row: HistoryDownload) -> float:
    """Share of the range already stored (0..1), for a page rendered while the download runs."""
    if row.state == HistoryDownload.State.DONE or not row.expected:
        return 1.0 if row.state == HistoryDownload.State.DONE else 0.0
    have = Candle.objects.filter(instrument_id=row.instrument_id, timeframe=row.timeframe,
                                 open_time__gte=row.since,
                                 **({"open_time__lt": row.until} if row.until else {})).count()
    return min(1.0, have / row.expected)


def progress_line(p: history.Progress, *, width: int = 30, started: float | None = None) -> str:
    """The terminal progress bar: ``[#####.....]  45.0%  1234/4320 fetched 1000 stored  2 retries``."""
    filled = int(round(p.fraction * width))
    rate = ""
    if started is not None and p.fetched:
        rate = f"  {p.fetched / max(time.monotonic() - started, 1e-9):,.0f} candles/s"
    retries = f"  {p.retries} retries" if p.retries else ""
    return (f"[{'#' * filled}{'.' * (width - filled)}] {p.fraction * 100:5.1f}%  {p.done}/{p.expected}  "
            f"fetched {p.fetched} stored {p.stored}{retries}{rate}")



def history_warmup(*, instrument: Instrument, minutes: int, clock: history.Clock = history.wall_clock_ms,
                   exchange: ccxt.Exchange | None = None) -> HistoryDownload | None:
    """Before a live feed streams: download the closed 1m candles of the last `minutes` the desk's ghosts
    need to be warm (the trend gate's 1h averages need ~8.5 days), so trading can start at once instead of
    days later. Already stored candles are skipped; a failure is visible on the History page and the feed
    starts anyway (its gate then waits for enough live bars)."""
    if minutes <= 0:
        return None
    since = history.from_ms((clock() // 60_000 - minutes) * 60_000)
    try:
        row = history_download_create(exchange_code=instrument.exchange.code, symbol=instrument.symbol,
                                      timeframe="1m", since=since, clock=clock)
    except DownloadRequestError as exc:
        log.warning("warm-up download for %s refused: %s", instrument, exc)
        return None
    return history_download_run(download_id=row.pk, exchange=exchange, clock=clock)
