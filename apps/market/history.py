"""History download over ccxt REST: paginated, resumable, gap-reporting (no Django here).

The prototype's downloader (prototype-notes §9) stopped at the first error and cached the partial result
as complete, did not trim the last page to the end date, kept the still-forming candle and never checked
for gaps. This one:

* works on the candle grid ``[start, end)`` in epoch milliseconds, ``start`` = `since` rounded up to the
  timeframe, ``end`` = the earlier of `until` (exclusive, rounded up) and the open of the candle that is
  still forming at ``now`` (``open_time + timeframe > now`` -> never stored);
* asks only for what is missing: the caller says which grid slots are already stored, and each request
  starts at the next missing slot (``since`` = that open time), so a rerun after an interruption continues
  where the stored data ends and stores nothing twice;
* pages with `limit` candles per request; the next request starts after the last candle received;
* retries `ccxt.NetworkError` (timeouts, dropped connections, 429/DDoS protection, exchange unavailable)
  with exponential backoff, then raises: the caller marks the download failed, never done;
* reports gaps: runs of grid slots still missing at the end (the exchange had no candle there).

Binance (spot, and USDⓈ-M perpetuals) is read through ccxt's implicit raw API (``publicGetKlines`` /
``fapiPublicGetKlines``) because its 12-column klines carry the trade count (column 8) and the taker-buy
base volume (column 9), which ccxt's ``parse_ohlcv`` drops; ccxt still builds, sends and error-maps the
request. Every other exchange goes through ``fetch_ohlcv`` and gets taker-buy volume and trade count NaN
(unknown, stored as NULL / 0), never invented.

Timeframes: those that divide a day (1m .. 1d), so that the epoch-anchored grid is the exchange's grid.
Weekly/monthly candles open on exchange-specific days and are refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import ccxt
import numpy as np
import pandas as pd

from apps.market.importers import COLUMNS

DEFAULT_LIMIT = 1000  # candles per request: Binance spot's maximum (USDⓈ-M allows 1500 at double weight)
RETRIES = 5  # network retries per request before the download fails
BACKOFF_S = 1.0  # first retry delay; doubles each time
BACKOFF_MAX_S = 30.0
DAY_MS = 86_400_000
# Timeframes whose grid is anchored at the epoch (they divide a day); ordered for forms.
TIMEFRAMES = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")
RAW_BINANCE = {"binance", "binanceusdm"}  # ccxt ids whose raw klines keep taker-buy volume

Clock = Callable[[], int]  # now, in epoch milliseconds


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def timeframe_ms(timeframe: str) -> int:
    """Length of one candle in milliseconds; ValueError for timeframes this downloader refuses."""
    if timeframe not in TIMEFRAMES:
        raise ValueError(f"timeframe {timeframe!r} is not supported; use one of {', '.join(TIMEFRAMES)}")
    ms = int(ccxt.Exchange.parse_timeframe(timeframe) * 1000)
    assert DAY_MS % ms == 0
    return ms


def to_ms(ts: datetime) -> int:
    """Aware datetime -> epoch ms (naive datetimes are refused: the desk is UTC everywhere)."""
    if ts.tzinfo is None:
        raise ValueError(f"{ts!r} has no time zone; pass UTC")
    return int(ts.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def candle_grid(*, since_ms: int, until_ms: int | None, tf_ms: int, now_ms: int) -> tuple[int, int]:
    """(start, end) of the candle open times to download, end exclusive, both multiples of tf_ms.

    end stops before the candle forming at now_ms (its open + tf_ms > now_ms) and before `until_ms`
    (exclusive: a candle opening at or after it is outside). end <= start means nothing to do.
    """
    start = -(-since_ms // tf_ms) * tf_ms
    end = (now_ms // tf_ms) * tf_ms
    if until_ms is not None:
        end = min(end, -(-until_ms // tf_ms) * tf_ms)
    return start, end


def expected_count(*, since_ms: int, until_ms: int | None, tf_ms: int, now_ms: int) -> int:
    start, end = candle_grid(since_ms=since_ms, until_ms=until_ms, tf_ms=tf_ms, now_ms=now_ms)
    return max(0, (end - start) // tf_ms)


@dataclass(frozen=True)
class Gap:
    """A run of consecutive missing candles: open times of the first and last missing one (ms), count."""

    first_ms: int
    last_ms: int
    count: int

    def as_json(self) -> list:
        """The HistoryDownload.gaps item: [first ISO, last ISO, count]."""
        return [from_ms(self.first_ms).isoformat(), from_ms(self.last_ms).isoformat(), self.count]


def find_gaps(missing_ms: np.ndarray, tf_ms: int) -> list[Gap]:
    """Group sorted missing open times into runs of consecutive candles (vectorised)."""
    m = np.asarray(missing_ms, dtype="int64")
    if m.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(m) != tf_ms)
    firsts = np.concatenate(([0], breaks + 1))
    lasts = np.concatenate((breaks, [m.size - 1]))
    return [Gap(int(m[a]), int(m[b]), int(b - a + 1)) for a, b in zip(firsts, lasts, strict=True)]


@dataclass
class Progress:
    """Counters after each page. `done` grid slots are settled (stored before, stored now, or skipped over
    as a gap), so done / expected is the progress bar; `fetched` counts candles received inside the range."""

    expected: int
    done: int = 0
    fetched: int = 0
    stored: int = 0
    requests: int = 0
    retries: int = 0
    off_grid: int = 0  # candles whose open time is not on the timeframe grid (dropped, counted)
    last_error: str = ""

    @property
    def fraction(self) -> float:
        return 1.0 if self.expected == 0 else min(1.0, self.done / self.expected)


@dataclass(frozen=True)
class DownloadResult:
    start_ms: int
    end_ms: int
    expected: int
    fetched: int
    stored: int
    requests: int
    retries: int
    off_grid: int
    gaps: list[Gap] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return sum(g.count for g in self.gaps)


# --- exchange access -------------------------------------------------------------------------------------


def exchange_create(code: str, *, urls: dict | None = None, config: dict | None = None) -> ccxt.Exchange:
    """A sync ccxt exchange for public REST. `urls` deep-merges into ``urls['api']`` (tests point it at a
    local server; production passes nothing). Binance loads only the market type it serves, so
    ``load_markets`` costs one exchangeInfo request instead of three (spot, USDⓈ-M, COIN-M)."""
    if code not in ccxt.exchanges:
        raise ValueError(f"unknown exchange {code!r} (a ccxt id such as binance, binanceusdm, okx, kraken, bybit)")
    cfg: dict = {"enableRateLimit": True, "timeout": 30_000}
    if code == "binance":
        cfg["options"] = {"fetchMarkets": {"types": ["spot"]}}
    if urls:
        cfg["urls"] = {"api": dict(urls)}
    cfg.update(config or {})
    return getattr(ccxt, code)(cfg)


def with_retries(call: Callable[[], object], *, progress: Progress | None = None, retries: int = RETRIES,
                 sleep: Callable[[float], None] = time.sleep):
    """call(), retrying ccxt.NetworkError `retries` times with doubling delays (1 s, 2 s, 4 s ... <= 30 s).

    Only network errors are retried: an ExchangeError (bad symbol, bad interval) would fail the same way
    again. The last network error is re-raised unchanged.
    """
    delay = BACKOFF_S
    for attempt in range(retries + 1):
        try:
            return call()
        except ccxt.NetworkError as exc:
            if attempt == retries:
                raise
            if progress is not None:
                progress.retries += 1
                progress.last_error = f"{type(exc).__name__}: {exc}"[:500]
            sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
    raise AssertionError("unreachable")


def _frame(open_ms, o, h, lo, c, v, taker, trades) -> pd.DataFrame:
    """The standard candle frame of apps.market.importers (floats; NaN = unknown)."""
    f = pd.DataFrame({
        "open_time": pd.to_datetime(np.asarray(open_ms, dtype="int64"), unit="ms", utc=True),
        "open": o, "high": h, "low": lo, "close": c, "volume": v,
        "taker_buy_volume": taker, "trade_count": trades,
    })
    f["open_time"] = f["open_time"].astype("datetime64[ns, UTC]")
    return f[COLUMNS]


def _num(values) -> np.ndarray:
    return pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype="float64")


def uses_raw_klines(exchange: ccxt.Exchange, market: dict) -> bool:
    """Binance spot and USDⓈ-M (linear) markets are read as raw klines (taker-buy volume kept)."""
    return exchange.id in RAW_BINANCE and bool(market.get("spot") or market.get("linear"))


def fetch_page(exchange: ccxt.Exchange, market: dict, timeframe: str, since_ms: int, limit: int,
               end_ms: int) -> pd.DataFrame:
    """One request: up to `limit` candles opening at or after since_ms (and before end_ms where the API
    takes an end time), as the standard candle frame, unfiltered."""
    if uses_raw_klines(exchange, market):
        request = {
            "symbol": market["id"],
            "interval": exchange.safe_string(exchange.timeframes, timeframe, timeframe),
            "startTime": since_ms,
            "endTime": end_ms - 1,  # inclusive on Binance: without it a long gap would end the page early
            "limit": limit,
        }
        method = exchange.publicGetKlines if market.get("spot") else exchange.fapiPublicGetKlines
        rows = method(request)
        if not rows:
            return _frame([], [], [], [], [], [], [], [])
        cols = list(zip(*rows, strict=False))  # 12 columns; strings for prices and volumes
        return _frame(np.asarray(cols[0], dtype="int64"), _num(cols[1]), _num(cols[2]), _num(cols[3]),
                      _num(cols[4]), _num(cols[5]), _num(cols[9]), _num(cols[8]))
    rows = exchange.fetch_ohlcv(market["symbol"], timeframe, since_ms, limit)
    if not rows:
        return _frame([], [], [], [], [], [], [], [])
    cols = list(zip(*rows, strict=False))
    nan = np.full(len(rows), np.nan)
    return _frame(np.asarray(cols[0], dtype="int64"), _num(cols[1]), _num(cols[2]), _num(cols[3]),
                  _num(cols[4]), _num(cols[5]), nan, nan)


# --- the download loop -----------------------------------------------------------------------------------


def download_candles(
    exchange: ccxt.Exchange,
    symbol: str,
    timeframe: str,
    *,
    since_ms: int,
    until_ms: int | None,
    stored_times: Callable[[int, int], np.ndarray],
    store: Callable[[pd.DataFrame], int],
    clock: Clock = wall_clock_ms,
    limit: int = DEFAULT_LIMIT,
    retries: int = RETRIES,
    sleep: Callable[[float], None] = time.sleep,
    on_progress: Callable[[Progress], None] | None = None,
) -> DownloadResult:
    """Download the closed candles of [since, until) that are not stored yet, and report what is missing.

    stored_times(start_ms, end_ms) -> sorted open times (ms) already stored in [start, end): read once to
    plan, once more for the gap report. store(frame) -> candles newly stored (idempotent). The clock is
    read once: candles closing during a long download belong to the next run. Raises the last
    ccxt.NetworkError after `retries` failed attempts of one request, and any ccxt.ExchangeError at once;
    candles stored up to then stay stored (they are closed and complete), and a rerun continues from them.
    """
    tf = timeframe_ms(timeframe)
    if limit < 1:
        raise ValueError("limit must be at least 1")
    start, end = candle_grid(since_ms=since_ms, until_ms=until_ms, tf_ms=tf, now_ms=clock())
    grid = np.arange(start, max(start, end), tf, dtype="int64")
    progress = Progress(expected=int(grid.size))
    missing = grid[~np.isin(grid, np.asarray(stored_times(start, end), dtype="int64"))]
    progress.done = int(grid.size - missing.size)
    if on_progress is not None:
        on_progress(progress)
    market = None
    if missing.size:
        with_retries(exchange.load_markets, progress=progress, retries=retries, sleep=sleep)
        market = exchange.market(symbol)  # ccxt.BadSymbol when the exchange does not list it
    # End (exclusive index) of the run of consecutive missing slots each slot belongs to: a request never
    # asks for more candles than its run holds, so a rerun that only fills holes moves little data.
    breaks = np.flatnonzero(np.diff(missing) != tf) + 1
    run_end = np.append(breaks, missing.size)
    i = 0
    while i < missing.size:
        since = int(missing[i])
        n = int(min(limit, run_end[np.searchsorted(run_end, i, side="right")] - i))
        page = with_retries(lambda s=since, n=n: fetch_page(exchange, market, timeframe, s, n, end),
                            progress=progress, retries=retries, sleep=sleep)
        progress.requests += 1
        t = page["open_time"].to_numpy(dtype="datetime64[ms]").astype("int64")
        keep = (t >= since) & (t < end)  # trims the last page to `until`; drops anything still forming
        on_grid = (t - start) % tf == 0
        progress.off_grid += int((keep & ~on_grid).sum())
        keep &= on_grid
        if not keep.any():
            break  # the exchange has nothing in [since, end): the rest is reported as gaps
        page = page[keep].sort_values("open_time", kind="stable")
        progress.fetched += len(page)
        progress.stored += store(page)
        covered = int(t[keep].max()) + tf
        i = int(np.searchsorted(missing, covered, side="left"))
        progress.done = int(grid.size - missing.size + i)
        if on_progress is not None:
            on_progress(progress)
    progress.done = int(grid.size)
    still = grid[~np.isin(grid, np.asarray(stored_times(start, end), dtype="int64"))]
    result = DownloadResult(
        start_ms=start, end_ms=max(start, end), expected=progress.expected, fetched=progress.fetched,
        stored=progress.stored, requests=progress.requests, retries=progress.retries, off_grid=progress.off_grid,
        gaps=find_gaps(still, tf),
    )
    if on_progress is not None:
        on_progress(progress)
    return result
