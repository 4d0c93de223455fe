"""Parse kline files into a standard candle DataFrame (pure: pandas only, no Django).

Formats (see ../shared/data/README.md):

* ``binance_vision``: data.binance.vision kline zip/CSV, no header, 12 columns; open_time in ms, or in
  µs for the 2025+ files (detected per row by magnitude).
* ``binance_api``: python-binance CSV with header ``timestamp,open,high,low,close,volume,close_time,
  quote_av,trades,tb_base_av,...`` (timestamp is a UTC date string).
* ``freqtrade``: OHLCV CSV(.gz) with header ``date,open,high,low,close,volume`` - no taker split, so
  taker_buy_volume is NaN (unknown, stored as NULL), never invented.

The standard frame: ``open_time`` (datetime64[ns, UTC]), ``open, high, low, close, volume,
taker_buy_volume`` (float64, taker may be NaN) and ``trade_count`` (float64, NaN when unknown).
``sanitize`` drops bad rows and counts them by reason.

Files are read whole and checked as `apps.market.parsers_trades` reads them (`read_bytes`, `split_table`):
a file that cannot be read (empty, not a zip/gzip, truncated, corrupt) raises `parsers_trades.BadFile`
(`UnknownFormat` is one), a line with the wrong column count is left out and counted. An open time that
does not parse, is not positive, or lies outside datetime64[ns] (1677..2262) is NaT (``bad_time``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from apps.market import parsers_trades as pt
from apps.market.parsers_trades import apply_checks

COLUMNS = ["open_time", "open", "high", "low", "close", "volume", "taker_buy_volume", "trade_count"]
VISION_COLUMNS = [
    "open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
    "taker_buy_volume", "taker_buy_quote_volume", "ignore",
]
QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USD", "EUR", "BTC", "ETH", "BNB")
_Q = "|".join(QUOTES)
_SYMBOL_RE = re.compile(rf"(?<![A-Z0-9])([A-Z0-9]{{2,12}}?)({_Q})(?![A-Z0-9])")
_FREQTRADE_SYMBOL_RE = re.compile(rf"(?<![A-Z0-9])([A-Z0-9]{{2,12}})_({_Q})(?:_({_Q}))?(?![A-Z0-9])")
_TIMEFRAME_RE = re.compile(r"(?<![A-Za-z0-9])(\d+[smhdwM])(?![A-Za-z0-9])")
_TIMEFRAME_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# open_time above this is in microseconds (ms epoch stays below 1e14 until the year 5138)
_US_THRESHOLD = 10**14


class UnknownFormat(pt.BadFile):
    """Not a kline file this module reads (or not readable at all: the reason says which)."""

    def __init__(self, name: str, reason: str = "unknown kline format") -> None:
        super().__init__(name, reason)


@dataclass(frozen=True)
class FileInfo:
    """What the file name says: exchange code, ccxt symbol, timeframe (each None when it does not say)."""

    exchange: str | None
    symbol: str | None
    timeframe: str | None


def _first_line(path: Path) -> str:
    try:
        return pt.first_line(path)
    except pt.BadFile as exc:
        raise UnknownFormat(exc.name, exc.reason) from None


def detect_format(path: Path) -> str:
    """'binance_vision' | 'binance_api' | 'freqtrade'; UnknownFormat otherwise."""
    line = _first_line(Path(path))
    head = [c.strip().lower() for c in line.split(",")]
    if head[:6] == ["date", "open", "high", "low", "close", "volume"]:
        return "freqtrade"
    if head[:6] == ["timestamp", "open", "high", "low", "close", "volume"] and "tb_base_av" in head:
        return "binance_api"
    if head == VISION_COLUMNS or (len(head) == 12 and head[0].isdigit()):
        return "binance_vision"
    raise UnknownFormat(
        Path(path).name,
        f"unknown kline format (first line {line[:80]!r}); expected a Binance Vision kline "
        "CSV/zip (12 columns, no header), a Binance API CSV (timestamp,...,tb_base_av) or a freqtrade CSV "
        "(date,open,high,low,close,volume)",
    )


def infer_file_info(path: Path) -> FileInfo:
    """Exchange, symbol and timeframe from the file name (and its folder, for Binance Vision dumps)."""
    path = Path(path)
    text = f"{path.parent.name}/{path.name}"
    tokens = set(re.split(r"[^a-z0-9]+", text.lower()))
    if "usdm" in tokens or "um" in tokens:
        exchange = "binanceusdm"
    elif any(t.startswith("binance") for t in tokens) or re.search(r"-\d+[smhdwM]-\d{4}-\d{2}", path.name):
        exchange = "binance"  # <SYMBOL>-<tf>-<date> is the data.binance.vision naming
    else:
        exchange = None
    symbol = None
    m = _FREQTRADE_SYMBOL_RE.search(path.name)  # freqtrade's own names: BTC_USDT-1m, BTC_USDT_USDT-1m-futures
    if m:
        base, quote, settle = m.groups()
        symbol = f"{base}/{quote}:{settle}" if settle else f"{base}/{quote}"
        if settle and exchange is None:
            exchange = "binanceusdm" if "binance" in text.lower() else None
    m = None if symbol else (_SYMBOL_RE.search(path.name) or _SYMBOL_RE.search(path.parent.name))
    if m:
        base, quote = m.groups()
        symbol = f"{base}/{quote}:{quote}" if exchange == "binanceusdm" else f"{base}/{quote}"
    tf = _TIMEFRAME_RE.search(path.name) or _TIMEFRAME_RE.search(path.parent.name)
    return FileInfo(exchange=exchange, symbol=symbol, timeframe=tf.group(1) if tf else None)


def timeframe_from_spacing(frame: pd.DataFrame) -> str | None:
    """The timeframe label of the most common bar spacing ('1m', '1h', ...), None if there is none."""
    t = frame["open_time"].drop_duplicates().sort_values()
    if len(t) < 2:
        return None
    step = int(t.diff().dropna().dt.total_seconds().mode().iloc[0])
    for unit in ("w", "d", "h", "m", "s"):
        secs = _TIMEFRAME_SECONDS[unit]
        if step > 0 and step % secs == 0:
            return f"{step // secs}{unit}"
    return None


def _num(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce").astype("float64")


_NS_MIN, _NS_MAX = pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC")


def _utc_ns(t: pd.Series) -> pd.Series:
    """Parsed UTC times as datetime64[ns, UTC]; a time datetime64[ns] cannot hold (before 1677, after 2262)
    becomes NaT instead of an OverflowError."""
    t = pd.Series(t)
    return t.where(t.notna() & (t >= _NS_MIN) & (t <= _NS_MAX)).astype("datetime64[ns, UTC]")


def read_klines(path: Path, fmt: str | None = None) -> pd.DataFrame:
    """The standard candle frame of one file, unsanitised (bad rows are still there; see `sanitize`)."""
    return load_klines(path, fmt).frame


def load_klines(path: Path, fmt: str | None = None) -> pt.Loaded:
    """`read_klines` with the file line of each row and the lines left out (wrong column count): a Binance
    Vision row has 12 fields, a Binance API / freqtrade row its header's count."""
    path = Path(path)
    fmt = fmt or detect_format(path)
    if fmt not in ("binance_vision", "binance_api", "freqtrade"):
        raise UnknownFormat(path.name, f"unknown kline format {fmt!r}")
    data = pt.read_bytes(path)
    head = pt.first_line_of(data)
    if fmt == "binance_vision":
        table = pt.split_table(data, path.name, names=VISION_COLUMNS, widths={12},
                               header=head.lower().startswith("open_time"))
        raw = table.rows
        t = _num(raw["open_time"])
        ms = np.where(t >= _US_THRESHOLD, t / 1000.0, t)
        with np.errstate(invalid="ignore"):
            ms = np.where((ms > 0) & (ms <= pt.MAX_MS), ms, np.nan)  # not positive or past 2262: bad_time
        out = pd.DataFrame({"open_time": _utc_ns(pd.to_datetime(ms, unit="ms", utc=True, errors="coerce"))})
        out["taker_buy_volume"] = _num(raw["taker_buy_volume"]).to_numpy()
        out["trade_count"] = _num(raw["count"]).to_numpy()
    else:
        names = pt.header_names(head)
        table = pt.split_table(data, path.name, names=names, widths={len(names)}, header=True)
        raw = table.rows
        when = raw["timestamp" if fmt == "binance_api" else "date"]
        out = pd.DataFrame({"open_time": _utc_ns(pd.to_datetime(when, utc=True, errors="coerce", format="ISO8601"))})
        if fmt == "binance_api":
            out["taker_buy_volume"] = _num(raw["tb_base_av"])
            out["trade_count"] = _num(raw["trades"])
        else:
            out["taker_buy_volume"] = np.nan
            out["trade_count"] = np.nan
    for col in ("open", "high", "low", "close", "volume"):
        out[col] = _num(raw[col]).to_numpy()
    out["open_time"] = out["open_time"].astype("datetime64[ns, UTC]")
    return pt.Loaded(frame=out[COLUMNS], lines=table.lines, skipped=table.skipped, first=table.first)


def timeframe_ms(timeframe: str | None) -> int | None:
    """'1m' -> 60000 ..., None for None or a label of months/unknown units."""
    m = re.fullmatch(r"(\d+)([smhdw])", timeframe or "")
    return int(m.group(1)) * _TIMEFRAME_SECONDS[m.group(2)] * 1000 if m else None


def _on_epoch_grid(timeframe: str) -> bool:
    """Candles of this timeframe open on multiples of it since the epoch (s, m, h and 1d: UTC-aligned);
    weeks open on Mondays and multi-day bars on venue-specific days, so they are not checked."""
    m = re.fullmatch(r"(\d+)([smhdw])", timeframe)
    return bool(m) and (m.group(2) in "smh" or timeframe == "1d")


def sanitize(frame: pd.DataFrame, *, now_ms: int | None = None, timeframe: str | None = None,
             first: dict[str, int] | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """(clean rows, skipped count by reason). Each bad row counts once, under its first failing check:
    bad_time (NaT), too_old (before 2009-01-03), future, off_grid, then the value checks below, then
    duplicate_in_file (same open time; the first is kept).

    future: a candle that has not closed by now_ms (default: the wall clock) + 5 s: open_time + timeframe
    beyond it (without a timeframe: open_time beyond it). off_grid (only with a timeframe of s/m/h or 1d):
    an open time that is not a multiple of the timeframe. `first` gets the first bad row per reason
    (parsers_trades.apply_checks)."""
    df = frame.reset_index(drop=True)
    prices = df[["open", "high", "low", "close"]].to_numpy(dtype="float64")
    vol = df["volume"].to_numpy(dtype="float64")
    buy = df["taker_buy_volume"].to_numpy(dtype="float64") if "taker_buy_volume" in df else np.full(len(df), np.nan)
    trades = df["trade_count"].to_numpy(dtype="float64") if "trade_count" in df else np.full(len(df), np.nan)
    o, h, lo, c = prices.T
    times = df["open_time"].astype("datetime64[ns, UTC]")
    t_ms = np.where(times.isna(), 0, times.to_numpy(dtype="datetime64[ns]").astype("int64") // 1_000_000)
    now = pt.wall_clock_ms() if now_ms is None else int(now_ms)
    tf_ms = timeframe_ms(timeframe) or 0
    nat = times.isna().to_numpy()
    grid = tf_ms > 0 and _on_epoch_grid(timeframe or "")
    with np.errstate(invalid="ignore"):
        checks = [
            ("bad_time", nat),
            ("too_old", ~nat & (t_ms < pt.EARLIEST_MS)),
            ("future", ~nat & (t_ms + tf_ms > now + pt.FUTURE_TOLERANCE_MS)),
            ("off_grid", ~nat & (t_ms % tf_ms != 0) if grid else np.zeros(len(df), dtype=bool)),
            ("non_finite", ~np.isfinite(prices).all(axis=1) | ~np.isfinite(vol) | np.isinf(buy)),
            ("non_positive_price", (prices <= 0).any(axis=1)),
            ("negative_volume", (vol < 0) | (buy < 0)),
            ("negative_trade_count", (trades < 0) | np.isinf(trades)),
            ("taker_buy_gt_volume", buy > vol),
            ("high_below_low", h < lo),
            ("open_close_outside_range", (o < lo) | (o > h) | (c < lo) | (c > h)),
        ]
    return apply_checks(df, checks, ["open_time"], first)


# -- trades -> 1-minute bars (the live aggregation, replayed over a file) ---------------------------------
BAR_FRAME_COLUMNS = [
    "open_time", "open", "high", "low", "close", "volume", "taker_buy_volume", "taker_sell_volume", "trades",
    "whale_buy_volume", "whale_sell_volume", "liq_long_volume", "liq_short_volume",
]


@dataclass
class TradeBars:
    """What `bars_from_trades` made of a trades frame.

    bars: one row per minute that had an accepted trade (BAR_FRAME_COLUMNS; volumes base units, liq NaN);
    large: the accepted trades whose notional (price * amount, quote units) reaches the builder's
    whale_notional, i.e. exactly the trades counted in whale_buy/sell_volume; rejected: the live
    sanitiser's and the BarBuilder's counts by reason (trades left out); accepted: trades that reached a
    bar; reanchored: accepted trades that moved the sanitiser's price band (counted, not left out); first:
    the first rejected trade per reason (its "line" when the frame has that column, else its position).
    """

    bars: pd.DataFrame
    large: pd.DataFrame
    rejected: dict[str, int]
    accepted: int
    reanchored: int = 0
    first: dict[str, int] = field(default_factory=dict)


def bars_from_trades(
    trades: pd.DataFrame,
    *,
    whale_notional: float = 100_000.0,
    whale_median_multiple: float = 0.0,
    sanitiser=None,
    now_ms: int | None = None,
    **builder_kwargs,
) -> TradeBars:
    """Aggregate a trades frame (parsers_trades.read_*: ts_ms, price, amount, side, id) into closed 1m bars
    through the SAME objects as the live feed (apps.runtime.pipeline): Sanitiser then BarBuilder, one trade
    at a time in file order. The Sanitiser's clock is now_ms (default: the wall clock), so a trade beyond
    now is refused as "future" and never becomes the newest trade (the trades after it would all be "out
    of order"); `parsers_trades.sanitize_trades` refuses those rows before, with their file lines.

    The whale rule is the instrument's (whale_notional in quote units, whale_median_multiple, 0 = off);
    other BarBuilder options pass through. No liquidation feed: liq volumes are NaN (set later from the
    recordings, see services.candles_liquidations_apply). The last bars are flushed at the end of the file.
    `large` holds the trades the BarBuilder counted as whale volume: the builder does not say which trades
    those were, so the rule is mirrored here (same notional test, same rolling median of the amounts it
    accepted) and tests/apps/test_import_trades.py checks that per minute they sum to the bar's whale volume.
    A per-trade Python loop (~10 µs/trade, figure in benchmarks/bench_import.py): fine for a day of trades.
    """
    from apps.market.bar_builder import BarBuilder, RollingMedian, Trade
    from apps.market.sanitize import Sanitiser

    builder = BarBuilder(whale_notional, False, whale_median_multiple=whale_median_multiple, **builder_kwargs)
    sanitiser = sanitiser if sanitiser is not None else Sanitiser()
    notional, multiple = builder.whale_notional, builder.whale_median_multiple
    min_trades = builder.whale_median_min_trades
    median = RollingMedian(builder_kwargs.get("whale_median_window", 1_000)) if multiple > 0 else None
    out: list[dict] = []
    large: list[int] = []
    first: dict[str, int] = {}
    labels = trades["line"].tolist() if "line" in trades else None
    check, add = sanitiser.check_trade, builder.add_trade
    now = pt.wall_clock_ms() if now_ms is None else int(now_ms)
    newest = None
    columns = (trades["ts_ms"].tolist(), trades["price"].tolist(), trades["amount"].tolist(),
               trades["side"].tolist(), trades["id"].astype(str).tolist())
    for i, (ts, price, amount, side, ident) in enumerate(zip(*columns, strict=True)):
        t = Trade(ts_ms=ts, price=price, amount=amount, side=side, id=ident)
        reason = check(t, now)
        if reason is not None:
            first.setdefault(reason, labels[i] if labels is not None else i)
            continue
        newest = ts if newest is None or ts > newest else newest
        dup, late, rej = builder.duplicates, builder.late_trades, builder.rejected.copy()
        closed = add(t)
        if closed:
            out.extend(closed)
        if builder.duplicates != dup or builder.late_trades != late or builder.rejected != rej:
            # the builder did not count it (repeat id in its bar, or later than the grace)
            if builder.duplicates != dup:
                reason = "duplicates"
            elif builder.late_trades != late:
                reason = "late_trades"
            else:
                reason = next(k for k, v in builder.rejected.items() if v != rej.get(k, 0))
            first.setdefault(reason, labels[i] if labels is not None else i)
            continue
        whale = price * amount >= notional
        if median is not None:
            if whale and len(median) >= min_trades:
                whale = amount >= multiple * median.median()
            median.add(amount)
        if whale:
            large.append(i)
    if newest is not None:  # past the last minute and its grace: every bar comes out
        out.extend(builder.flush(newest // 60_000 * 60_000 + 120_000))
    bars = pd.DataFrame(out, columns=BAR_FRAME_COLUMNS)
    bars["open_time"] = pd.to_datetime(bars["open_time"], utc=True).astype("datetime64[ns, UTC]")
    rejected = {**sanitiser.counts, **builder.rejected}
    reanchored = int(rejected.pop("reanchored", 0))
    for name in ("late_trades", "duplicates", "late_liquidations", "orphan_liquidations"):
        if getattr(builder, name, 0):
            rejected[name] = int(getattr(builder, name))
    accepted = int(bars["trades"].sum()) if len(bars) else 0
    return TradeBars(bars=bars, large=trades.iloc[large].reset_index(drop=True), rejected=rejected,
                     accepted=accepted, reanchored=reanchored, first=first)
