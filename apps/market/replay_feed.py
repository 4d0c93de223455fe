"""The replay feed (HFT_FEED / FeedStatus.source = "replay:<what>[@speed]"): recorded history through the
same FeedPipeline as live, so it is the offline demo on real data and the basis of end-to-end tests.

<what> is one or more comma-separated files, or stored history:

* an aggTrades file (Binance Vision zip/CSV, COIN-M contracts converted to base units) or a ccxt/freqtrade
  public trade list -> trades, in file order, through Sanitiser -> BarBuilder -> candle_store -> ghosts,
  stops/targets checked on every trade: exactly the live path;
* a Binance forceOrder liquidation recording -> liquidations of this instrument's market (same ccxt
  symbol; else same base/quote, e.g. the USDT-M perp's liquidations for a spot instrument) -> into the bar
  of their minute (with trades: through the BarBuilder; with klines: added to the bar's liq volumes);
* a 1-minute kline file (Binance Vision, Binance API CSV, freqtrade OHLCV) -> the real bars themselves.
  Nothing is synthesised: a bar file has no trades, so each bar is sanitised (`Sanitiser.check_candle`),
  stored through the same candle_store + on_bar path at its close time, and stops/targets are checked
  against its high/low with the backtest's intrabar rule (FeedPipeline.consume_bars);
* `db:<exchange>:<symbol>` -> the 1m candles already stored for another instrument (e.g.
  `replay:db:binance:BTC/USDT` into a demo instrument), replayed like a kline file; its stored
  LiquidationEvents fill bars whose liquidation volume is unknown (NULL).

Relative paths resolve against $MARKET_DATA_DIR (or settings.MARKET_DATA_DIR), then the repository's
../shared/data, then the repository itself. A missing file or an unknown format raises ReplayError, which
the feed task shows as the feed's error on the dashboard. A large-trade recording (trades over ~15k USD
only) is refused: it is not a complete trade stream and would make wrong bars (import it instead).

Speed is data seconds per wall second (`@60`: an hour of data per minute); `@0` or `@max` replays as fast
as the pipeline goes (in chunks, so the heartbeat is still checked); no suffix: the `speed` argument,
else settings.HFT_REPLAY_SPEED (default 60). The data clock handed to the sanitiser is the replay's own:
per event, the running max of min(its time, the median time of it and the next 15 events). For ordered
data that is the event's own time; a far-future timestamp (up to 7 in a row) does not drag the clock
along, so the sanitiser still rejects it as "future", and an old straggler does not pull it back.

A restarted replay (its worker died) resumes after the last bar already stored for this instrument when
that bar lies inside the replayed range: stored bars are never written twice, and old prices are not
replayed against positions opened later. The feed stops cleanly when the heartbeat is lost, after
`max_seconds` of wall time, or at the end of the data (then the feed's state becomes "stopped").
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from django.conf import settings

from apps.market.bar_builder import MINUTE_MS, Liquidation, Trade
from apps.market.models import Candle, FeedStatus, Instrument, LiquidationEvent
from apps.market.sink import PipelineFactory

log = logging.getLogger(__name__)
LOOP_SLEEP = 0.05  # s between paced steps
MAX_CHUNK = 20_000  # events per step at most: the heartbeat is checked between steps
MIN_CHUNK = 50
PREVIEW_MAX_TRADES = 1_000_000  # a trade replay's bars are previewed up to this many trades (~10 s of building)
STEP_SECONDS = 1.0  # wall time a step aims at: the runner's lock (15 s TTL) is renewed about once a second
CLOCK_LOOKAHEAD = 16  # events, the median window of the data clock (module docstring)
TRADE, LIQ, BAR = 0, 1, 2


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class ReplayError(ValueError):
    """A replay source that cannot be played (missing file, unknown format, nothing for this instrument)."""


@dataclass(frozen=True)
class ReplaySpec:
    targets: tuple[str, ...]  # file paths as given, or ("db:<exchange>:<symbol>",)
    speed: float | None  # data seconds per wall second; 0 = as fast as possible; None = not in the source

    @property
    def label(self) -> str:
        names = ", ".join(Path(t).name if not t.startswith("db:") else t for t in self.targets)
        if self.speed is None:
            return names
        return f"{names} @{'max' if self.speed == 0 else f'{self.speed:g}'}"


def parse_source(source: str) -> ReplaySpec:
    """"replay:<what>[@speed]" -> ReplaySpec; ReplayError for a malformed one."""
    if not source.startswith("replay:"):
        raise ReplayError(f"not a replay source: {source!r}")
    body = source[len("replay:"):].strip()
    speed = None
    if "@" in body:
        body, _, sp = body.rpartition("@")
        sp = sp.strip().lower()
        if sp in ("max", "0"):
            speed = 0.0
        else:
            try:
                speed = float(sp)
            except ValueError:
                raise ReplayError(f"replay speed must be a number or 'max', got {sp!r} in {source!r}") from None
            if not (np.isfinite(speed) and speed > 0):
                raise ReplayError(f"replay speed must be > 0 (or 0/max), got {sp!r} in {source!r}")
    targets = tuple(t.strip() for t in body.split(",") if t.strip())
    if not targets:
        raise ReplayError(f"replay source names nothing to replay: {source!r} (use replay:<path>[@speed])")
    return ReplaySpec(targets=targets, speed=speed)


def data_roots() -> list[Path]:
    """Where relative replay paths are looked up, in order."""
    roots = []
    for env in (os.environ.get("MARKET_DATA_DIR"), getattr(settings, "MARKET_DATA_DIR", None)):
        if env:
            roots.append(Path(env))
    roots += [Path(settings.BASE_DIR).parent / "shared" / "data", Path(settings.BASE_DIR)]
    return roots


def resolve_path(name: str) -> Path:
    path = Path(name).expanduser()
    candidates = [path] if path.is_absolute() else [root / path for root in data_roots()]
    for c in candidates:
        if c.is_file():
            return c
    raise ReplayError(f"replay file not found: {name} (looked in {', '.join(str(c.parent) for c in candidates)})")


def _data_clock(t: np.ndarray) -> np.ndarray:
    """Per event: running max of min(time, forward rolling median time); bad times ignored (module doc)."""
    s = pd.Series(np.where(t > 0, t, np.nan).astype("float64"))
    fwd_median = s[::-1].rolling(CLOCK_LOOKAHEAD, min_periods=1).median()[::-1]
    clock = np.fmin(s, fwd_median).ffill().bfill().cummax().fillna(0).to_numpy()
    return clock.astype("int64")


class _Stream:
    """One replay's events merged by data clock: (kind, payload index) rows plus the per-event clock."""

    def __init__(self) -> None:
        self.parts: list[tuple[int, np.ndarray, np.ndarray]] = []  # (kind, clock, row index)

    def add(self, kind: int, times: np.ndarray) -> None:
        if len(times):
            self.parts.append((kind, _data_clock(np.asarray(times, dtype="int64")), np.arange(len(times))))

    def merged(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.parts:
            return np.empty(0, "int64"), np.empty(0, "int8"), np.empty(0, "int64")
        clock = np.concatenate([p[1] for p in self.parts])
        kind = np.concatenate([np.full(len(p[1]), p[0], dtype="int8") for p in self.parts])
        row = np.concatenate([p[2] for p in self.parts])
        # each stream's clock is non-decreasing, so a stable sort is a merge that keeps every file's order;
        # on equal clocks liquidations go first, then trades, then bars (a bar's clock is its close time)
        order = np.lexsort((np.array([1, 0, 2], dtype="int8")[kind], clock))
        return clock[order], kind[order], row[order]


class ReplayFeed:
    def __init__(
        self,
        instrument: Instrument,
        *,
        source: str,
        make_pipeline: PipelineFactory,
        heartbeat: Callable[[], bool],
        speed: float | None = None,
        max_seconds: float | None = None,
        warm_up: Callable[[datetime], str] | None = None,
    ) -> None:
        self.instrument = instrument
        self.spec = parse_source(source)
        # warm_up(first minute) -> what the ghosts warm up on, given by the runtime (apps.runtime.services.
        # replay_warmup); called once before a fresh replay's first event, never on a resume.
        self.warm_up = warm_up
        self.warmed_on = ""
        self.heartbeat = heartbeat
        self.max_seconds = max_seconds
        chosen = self.spec.speed if self.spec.speed is not None else speed
        self.speed = float(getattr(settings, "HFT_REPLAY_SPEED", 60.0) if chosen is None else chosen)
        self.trades = pd.DataFrame()
        self.liqs = pd.DataFrame()
        self.bars = pd.DataFrame()
        self.skipped: dict[str, int] = {}  # rows not replayed and why (other symbols etc.), for the log
        self._liq_minutes: dict[int, list[float]] = {}  # bar replays: sanitised liquidation volume per minute
        self._load()
        self.pipeline = make_pipeline(has_liquidations=not self.liqs.empty)

    # -- loading -------------------------------------------------------------------------------------
    def _load(self) -> None:
        trades, liqs, bars = [], [], []
        for target in self.spec.targets:
            if target.startswith("db:"):
                b, lq = self._load_db(target)
                bars.append(b)
                liqs.append(lq)
            else:
                kind, frame = self._load_file(resolve_path(target))
                {"trades": trades, "liqs": liqs, "bars": bars}[kind].append(frame)
        self.trades = pd.concat(trades, ignore_index=True) if trades else pd.DataFrame()
        self.liqs = pd.concat(liqs, ignore_index=True) if liqs else pd.DataFrame()
        self.bars = pd.concat(bars, ignore_index=True) if bars else pd.DataFrame()
        if self.trades.empty and self.bars.empty:
            raise ReplayError(
                f"replay {self.spec.label}: no trades or bars to replay for {self.instrument} "
                "(a liquidation file alone makes no bars; add an aggTrades or kline file)"
            )
        if not self.trades.empty and not self.bars.empty:
            raise ReplayError(f"replay {self.spec.label}: trades and bars together would make every minute twice")

    def _load_file(self, path: Path) -> tuple[str, pd.DataFrame]:
        from apps.market import importers, parsers_trades

        fmt = parsers_trades.detect_trade_format(path)
        if fmt == "agg_trades":
            return "trades", parsers_trades.read_agg_trades(path)[["ts_ms", "price", "amount", "side", "id"]]
        if fmt == "public_trades":
            return "trades", parsers_trades.read_public_trades(path)
        if fmt == "liquidations":
            return "liqs", self._own_liquidations(parsers_trades.read_liquidations(path), path)
        if fmt == "large_trades":
            raise ReplayError(
                f"{path.name}: a large-trade recording holds only trades over ~15k USD, not a complete trade "
                "stream; replaying it would make wrong bars (import it with import_market_data instead)"
            )
        try:
            kfmt = importers.detect_format(path)
        except importers.UnknownFormat as exc:
            raise ReplayError(
                f"{path.name}: unknown replay format ({exc}); replay takes aggTrades, public trade lists, "
                "forceOrder liquidation recordings and 1m kline files"
            ) from None
        frame = importers.read_klines(path, kfmt)
        tf = importers.timeframe_from_spacing(frame)
        if tf not in (None, "1m"):
            raise ReplayError(f"{path.name}: replay feeds 1-minute bars (the ghosts' timeframe), this file is {tf}")
        return "bars", frame

    def _own_liquidations(self, frame: pd.DataFrame, path: Path) -> pd.DataFrame:
        inst = self.instrument
        mine = frame["symbol"] == inst.symbol
        if not mine.any():  # same base/quote on another market type (the perp's liquidations for spot)
            mine = frame["symbol"].astype(str).str.startswith(f"{inst.base}/{inst.quote}")
        other = int((~mine).sum())
        if other:
            self.skipped[f"{path.name}: other symbols"] = other
        return frame.loc[mine, ["ts_ms", "side", "price", "amount"]].reset_index(drop=True)

    def _load_db(self, target: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        _, _, rest = target.partition(":")
        exchange, _, symbol = rest.partition(":")
        try:
            src = Instrument.objects.get(exchange__code=exchange, symbol=symbol)
        except Instrument.DoesNotExist:
            raise ReplayError(f"replay {target}: no stored instrument {exchange}:{symbol}") from None
        if src.pk == self.instrument.pk:
            raise ReplayError(f"replay {target}: cannot replay an instrument's own history into itself")
        cols = ["open_time", "open", "high", "low", "close", "volume", "taker_buy_volume", "taker_sell_volume",
                "trade_count", "whale_buy_volume", "whale_sell_volume", "liq_long_volume", "liq_short_volume"]
        rows = list(Candle.objects.filter(instrument=src, timeframe="1m").order_by("open_time").values_list(*cols))
        if not rows:
            raise ReplayError(f"replay {target}: no 1m candles stored for {src}")
        bars = pd.DataFrame(rows, columns=cols)
        for c in cols[1:]:
            bars[c] = pd.to_numeric(bars[c], errors="coerce").astype("float64")
        bars["open_time"] = pd.to_datetime(bars["open_time"], utc=True)
        ev = LiquidationEvent.objects.filter(instrument=src).order_by("ts").values_list("ts", "side", "price", "amount")
        liqs = pd.DataFrame(list(ev), columns=["ts", "side", "price", "amount"])
        liqs["ts_ms"] = (pd.to_datetime(liqs["ts"], utc=True).astype("int64") // 1_000_000).astype("int64")
        for c in ("price", "amount"):
            liqs[c] = pd.to_numeric(liqs[c]).astype("float64")
        return bars, liqs[["ts_ms", "side", "price", "amount"]]

    # -- the event stream ----------------------------------------------------------------------------
    def _events(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        stream = _Stream()
        if not self.trades.empty:
            stream.add(TRADE, self.trades["ts_ms"].to_numpy())
        if not self.liqs.empty:
            stream.add(LIQ, self.liqs["ts_ms"].to_numpy())
        if not self.bars.empty:
            opened = pd.to_datetime(self.bars["open_time"], utc=True).dt.tz_localize(None)
            ms = opened.to_numpy(dtype="datetime64[ms]").astype("int64")  # NaT -> a huge negative: a bad time
            stream.add(BAR, np.where(ms > 0, ms + MINUTE_MS, -1))  # a bar is known at its close
        return stream.merged()

    def _resume_from(self, clock: np.ndarray) -> int:
        """Index of the first event to play: after the last bar already stored inside the replayed range."""
        from apps.market.selectors import last_candle

        last = last_candle(instrument_id=self.instrument.pk)
        if last is None or not len(clock):
            return 0
        done_ms = int(last.open_time.timestamp() * 1000) + MINUTE_MS
        if not (clock[0] < done_ms <= clock[-1]):
            return 0
        start = int(np.searchsorted(clock, done_ms, side="left"))
        log.info("%s: replay resumes after the stored bar %s (event %d)", self.instrument, last.open_time, start)
        return start

    # -- running -------------------------------------------------------------------------------------
    def run(self) -> None:
        clock, kind, row = self._events()
        pos = self._resume_from(clock)
        if pos == 0 and len(clock) and self.warm_up is not None:
            first = int(clock[0]) - (MINUTE_MS if kind[0] == BAR else 0)  # a bar's clock is its close
            self.warmed_on = self.warm_up(ms_to_dt(first - first % MINUTE_MS))
            log.info("%s: replay %s warms up on %s", self.instrument, self.spec.label, self.warmed_on)
        if self.skipped:
            log.info("%s: replay %s skips %s", self.instrument, self.spec.label, self.skipped)
        p = self.pipeline
        if not self.trades.empty and self.liqs.empty and len(self.trades) <= PREVIEW_MAX_TRADES and len(clock):
            # The bars these trades will make, built ahead by the same sanitiser and builder: the runtime
            # evaluates the ghosts on them in chunks and checks each stored bar against them (FeedPipeline.
            # set_preview). Not with liquidations (merged into bars as they come) or beyond ~10 s of building.
            p.set_preview(self._preview(int(clock[-1])))
            if not self.heartbeat():
                return
        p.publish(force=True, state=FeedStatus.State.CONNECTED, last_error="", next_retry_at=None)
        wall_start = time.monotonic()
        data_start = int(clock[pos]) if pos < len(clock) else 0
        chunk = 1_000  # events in the next step; adapted to the pace after each step
        while pos < len(clock):
            elapsed = time.monotonic() - wall_start
            if (self.max_seconds is not None and elapsed > self.max_seconds) or not self.heartbeat():
                log.info("%s: replay stopped at event %d of %d", self.instrument, pos, len(clock))
                p.publish(force=True, state=FeedStatus.State.CONNECTED, bars_stored=p.bars_stored)
                return
            p.refresh_positions()
            if self.speed > 0:
                until = data_start + int(elapsed * self.speed * 1000)
                end = min(int(np.searchsorted(clock, until, side="right")), pos + chunk)
            else:
                until, end = None, min(pos + chunk, len(clock))
            if end > pos:
                step_start = time.monotonic()
                self._play(clock, kind, row, pos, end)
                # The step size follows the pipeline's pace, so the heartbeat comes about every STEP_SECONDS
                # whatever a step costs (bars with drafts, open positions, a loaded machine): a fixed 20,000
                # events between heartbeats took over an hour at 5 bars/s, and the supervisor started more runners.
                took = max(time.monotonic() - step_start, 1e-3)
                chunk = int(min(MAX_CHUNK, max(MIN_CHUNK, (end - pos) * STEP_SECONDS / took)))
                pos = end
            if until is not None:
                p.flush(min(until, int(clock[-1])))  # a quiet stretch still closes its bars on time
            p.publish(state=FeedStatus.State.CONNECTED, bars_stored=p.bars_stored)
            if self.speed > 0:
                time.sleep(LOOP_SLEEP)
        if len(clock):
            p.flush(int(clock[-1]) + MINUTE_MS + p.builder.grace_ms)  # the data is over: close the last bar
            p.finish_bars()
        p.publish(force=True, state=FeedStatus.State.CONNECTED, bars_stored=p.bars_stored)
        log.info("%s: replay %s finished: %d bars stored, counts %s", self.instrument, self.spec.label,
                 p.bars_stored, p.counts())

    def _preview(self, last_ms: int) -> pd.DataFrame:
        from apps.market.importers import bars_from_trades

        inst, builder = self.instrument, self.pipeline.builder
        return bars_from_trades(self.trades, whale_notional=float(inst.whale_notional),
                                whale_median_multiple=float(inst.whale_median_multiple), now_ms=last_ms,
                                grace_ms=builder.grace_ms).bars

    def _play(self, clock: np.ndarray, kind: np.ndarray, row: np.ndarray, start: int, end: int) -> None:
        """Hand events [start, end) to the pipeline in order, one run of the same kind at a time."""
        p = self.pipeline
        cut = np.flatnonzero(np.diff(kind[start:end])) + start + 1
        bounds = [start, *cut.tolist(), end]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            k, rows, now_ms = int(kind[a]), row[a:b], int(clock[b - 1])
            if k == TRADE:
                p.consume(self._trades(rows), now_ms=now_ms)
            elif k == LIQ:
                liqs = self._liquidations(rows)
                if self.bars.empty:
                    p.consume((), liqs, now_ms=now_ms)
                else:
                    self._collect_bar_liqs(liqs, now_ms)
            else:
                p.consume_bars(self._bar_dicts(rows), now_ms=now_ms)

    def _trades(self, rows: np.ndarray) -> list[Trade]:
        f = self.trades.iloc[rows]
        return [
            Trade(ts_ms=ts, price=price, amount=amount, side=side, id=ident)
            for ts, price, amount, side, ident in zip(
                f["ts_ms"].tolist(), f["price"].tolist(), f["amount"].tolist(), f["side"].tolist(),
                f["id"].astype(str).tolist(), strict=True,
            )
        ]

    def _liquidations(self, rows: np.ndarray) -> list[Liquidation]:
        f = self.liqs.iloc[rows]
        return [
            Liquidation(ts_ms=ts, side=side, price=price, amount=amount)
            for ts, side, price, amount in zip(
                f["ts_ms"].tolist(), f["side"].tolist(), f["price"].tolist(), f["amount"].tolist(), strict=True
            )
        ]

    def _collect_bar_liqs(self, liqs: list[Liquidation], now_ms: int) -> None:
        """Sanitise liquidations of a bar replay and sum them per minute until their bar comes."""
        for liq in liqs:
            if self.pipeline.sanitiser.check_liquidation(liq, now_ms) is None:
                acc = self._liq_minutes.setdefault(liq.ts_ms - liq.ts_ms % MINUTE_MS, [0.0, 0.0])
                acc[0 if liq.side == "long" else 1] += liq.amount

    def _bar_dicts(self, rows: np.ndarray) -> list[dict]:
        f = self.bars.iloc[rows]
        out = []
        has_liqs = not self.liqs.empty
        for rec in f.to_dict("records"):
            t = rec["open_time"]
            vol, buy = rec["volume"], rec.get("taker_buy_volume", np.nan)
            sell = rec.get("taker_sell_volume", np.nan)
            if np.isnan(sell) and not np.isnan(buy) and not np.isnan(vol):
                sell = vol - buy
            bar = {
                "open_time": t.to_pydatetime() if not pd.isna(t) else None,
                "open": rec["open"], "high": rec["high"], "low": rec["low"], "close": rec["close"],
                "volume": vol, "taker_buy_volume": buy, "taker_sell_volume": sell,
                "trades": 0 if pd.isna(rec.get("trade_count", np.nan)) else int(rec["trade_count"]),
                "whale_buy_volume": rec.get("whale_buy_volume", np.nan),
                "whale_sell_volume": rec.get("whale_sell_volume", np.nan),
                "liq_long_volume": rec.get("liq_long_volume", np.nan),
                "liq_short_volume": rec.get("liq_short_volume", np.nan),
            }
            if has_liqs and bar["open_time"] is not None and np.isnan(bar["liq_long_volume"]):
                minute = int(t.value // 1_000_000)
                long_v, short_v = self._liq_minutes.pop(minute, (0.0, 0.0))
                bar["liq_long_volume"], bar["liq_short_volume"] = long_v, short_v
            out.append(bar)
        return out


def replay_market(source: str) -> tuple[str, str] | None:
    """(exchange code, ccxt symbol) of the market a replay source's files are from, where their names say it:
    a COIN-M aggTrades file (``BTCUSD_PERP-aggTrades-...``) is Binance COIN-M's inverse perpetual BTC/USD:BTC
    (``ETHUSD_250627`` the dated contract ETH/USD:ETH-250627), quoted in USD. None when the names do not tell
    (spot and USDT-M files, klines, db: sources): the desk's default instrument then."""
    from apps.market.parsers_trades import _COINM_RE

    try:
        spec = parse_source(source)
    except ReplayError:
        return None
    for target in spec.targets:
        if target.startswith("db:"):
            continue
        m = _COINM_RE.search(Path(target).name)
        if m:
            base, tail = m.group(1), m.group(2)
            return "binancecoinm", f"{base}/USD:{base}" + ("" if tail == "PERP" else f"-{tail}")
    return None


def replay_label(source: str) -> str:
    """'REPLAY <file> @speed' for the dashboard badge; the raw text when it does not parse."""
    try:
        return f"REPLAY {parse_source(source).label}"
    except ReplayError:
        return "REPLAY"


__all__ = ["ReplayError", "ReplayFeed", "parse_source", "replay_label", "replay_market", "resolve_path"]
