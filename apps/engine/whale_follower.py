"""Whale follower: follow the side of large aggressive prints when the trend filter and CVD agree.

The prototype never implemented it (docs/prototype-notes.md §13: "no parameters"), so every default
here is new and says where it comes from. Two levels share one config:

1. Trade level, `detect_bursts(trades, cfg)`: over a list of trades (ts, price, amount in base units,
   TAKER side) it flags WHALE PRINTS and BURSTS of them.
   - Whale print (`print_rule`, default "both"): notional = price * amount >= `whale_notional` AND
     amount >= `median_multiple` x the rolling median trade size (median of the amounts of the trades in
     the last `median_window_minutes` of trade time, this trade included, needing at least
     `median_min_trades` trades; too few -> the median is unknown and the multiple test fails).
     "notional" / "multiple" use one test only, "either" accepts a trade passing either test. "both" is
     the default because each test alone misfires: a fixed notional means little in a market whose
     typical trade is itself large, and a multiple of a tiny median (2 contracts = 200 USD on the COIN-M
     2026-05-08 day) is only 10 kUSD. A recording that holds large trades only (the >= 15 kUSD logs)
     has no median to speak of: use print_rule="notional" there.
   - Burst at a whale print: over the whale prints in the trailing `burst_seconds` of trade time (this
     print included), NET of the other side (buy minus sell): net count >= `burst_min_prints` OR net
     notional >= `burst_min_notional`, where the side is the sign of the net notional (a net count that
     points the other way from the net notional is a conflict, not a burst). `burst_start` marks the
     whale print where a burst of a side begins (the previous whale print was not in a burst of that side).
2. Bar level, the ghost `evaluate(bars, cfg)`: on 1-minute bars with `whale_buy_volume` /
   `whale_sell_volume` (base units of the whale prints per taker side, built upstream from trades; NaN
   when trade sizes are unknown, e.g. kline-only history -> idle, reason "no trade sizes").
   - net whale notional N = sum over the last `window_minutes` of (whale_buy - whale_sell) * close;
   - norm = mean gross whale notional per present bar over the `lookback_minutes` before that window,
     times window_minutes (what a window usually holds); ratio = |N| / norm;
   - burst bar: |N| >= min_net_notional, ratio >= burst_ratio, and |N| >= min_whale_share of the
     window's total traded notional (volume * close): the whales moved the tape, not a sliver of it;
   - follow the side of N when the trend filter allows it (`apps.engine.trend.trend_state`:
     allow_long / allow_short) and CVD agrees (`apps.engine.cvd.cvd_state`: sign of `cvd` == side, taker
     split available);
   - edge-triggered: a bar fires only if no bar in the previous `cooldown_minutes` was a candidate
     (burst + gates agree). This is a finite window of candidates, not a recursion on earlier firings,
     so the live window reproduces the backtest exactly;
   - stop / target from the trend filter's 1-minute ATR (% of close): distance = max(mult x ATR %,
     floor %); entry = close of the signal bar (a reference: the fill is the next open, apps.engine.exits).

Exactness (live == backtest): every window sum is an integer number of quote cents (each bar's
notional, volume * close, is rounded to whole cents once, then summed as int64 prefix sums), so a sum
over a window is the same bit for bit however far back the series starts; the gates are evaluated with
their own warmups added to `warmup_minutes`.

Bar columns: `whale_volumes(trades, cfg)` builds whale_buy_volume / whale_sell_volume by THIS print rule.
apps/market's BarBuilder (at the time of writing) counts notional >= its whale_notional only, i.e.
print_rule="notional"; on the 2026-05-08 COIN-M day that is 883 prints against 879 for "both".
"""

import dataclasses
import math
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import pandas as pd

from apps.engine.bars import validate_bars
from apps.engine.cvd import CvdConfig, cvd_state
from apps.engine.trend import DIRECTION_NAMES, TrendConfig, trend_state
from apps.engine.types import ConfigError, GhostConfig, check_range, drafts_frame, idle_draft_arrays, idle_drafts

_WEEK_MIN = 7 * 24 * 60
_PRINT_RULES = ("both", "notional", "multiple", "either")
NO_TRADE_SIZES = "no trade sizes (whale volumes unknown for this bar) -> idle"


class TradesError(ValueError):
    """A trade list that violates the detect_bursts input contract."""


@dataclasses.dataclass(frozen=True)
class WhaleFollowerConfig(GhostConfig):
    """Validated parameters of the whale follower. Notional is in QUOTE units (USD/USDT for BTC pairs).

    Trade level (what a whale print and a trade-level burst are; also the rule to build bar columns):
    - print_rule (text; "both"; new): "both" | "notional" | "multiple" | "either", see the module doc.
    - whale_notional (quote units; 100000; apps/market/bar_builder.py BarBuilder default): minimum
      notional of a whale print. On the COIN-M BTCUSD_PERP 2026-05-08 day 883 of 105,280 aggTrades
      (0.8 %) reach it.
    - median_multiple (ratio; 50; new): minimum amount / rolling median amount of a whale print.
    - median_window_minutes (minutes of trade time; 15; new): window of the rolling median trade size.
    - median_min_trades (trades; 50; new): trades the median window must hold to be trusted.
    - burst_seconds (seconds of trade time; 60; new): window of a trade-level burst.
    - burst_min_prints (whale prints; 3; new): net whale prints on one side within burst_seconds.
    - burst_min_notional (quote units; 500000; new, 5 x whale_notional): net whale notional on one side
      within burst_seconds; must exceed whale_notional (or one print would be a burst).

    Bar level (the ghost):
    - window_minutes (minutes of data time; 3; new): window of the net whale notional.
    - lookback_minutes (minutes of data time; 240; new): norm window before the burst window; at least
      half of its minutes must hold bars.
    - burst_ratio (ratio; 5.0; new): |net whale notional in the window| / norm needed for a burst.
    - min_net_notional (quote units; 1000000; new): absolute floor on |net whale notional| in the window,
      so one print in a whale-free lookback (norm ~ 0) is not a "burst".
    - min_whale_share (fraction 0..1; 0.2; new): |net whale notional| / total notional traded in the
      window (volume * close).
    - cooldown_minutes (minutes of data time; 15; new): edge trigger, no signal if a candidate bar lies
      in the previous cooldown_minutes (0: every candidate bar fires).
    - stop_atr_mult (ATRs; 2.0; new) and min_stop_pct (% of entry; 0.3; new): stop distance =
      max(stop_atr_mult x ATR %, min_stop_pct); ATR is the trend filter's 1-minute `atr_pct`.
    - target_atr_mult (ATRs; 3.0; new) and min_target_pct (% of entry; 0.5; new): target distance =
      max(target_atr_mult x ATR %, min_target_pct); the floor clears the 0.3 % round trip
      (2 x 0.1 % fee + 2 x 5 bps slippage) with a margin.
    - max_hold_seconds (seconds of data time; 1800; new): time stop; whale momentum is short-lived.
    - priority (integer; 2; new, as the spike fader): tie-break weight for the signal manager.

    The gates use the default TrendConfig / CvdConfig (the configs the trend and CVD ghosts ship with).
    """

    KIND: ClassVar[str] = "whale_follower"

    print_rule: str = "both"
    whale_notional: float = 100_000.0
    median_multiple: float = 50.0
    median_window_minutes: int = 15
    median_min_trades: int = 50
    burst_seconds: float = 60.0
    burst_min_prints: int = 3
    burst_min_notional: float = 500_000.0
    window_minutes: int = 3
    lookback_minutes: int = 240
    burst_ratio: float = 5.0
    min_net_notional: float = 1_000_000.0
    min_whale_share: float = 0.2
    cooldown_minutes: int = 15
    stop_atr_mult: float = 2.0
    min_stop_pct: float = 0.3
    target_atr_mult: float = 3.0
    min_target_pct: float = 0.5
    max_hold_seconds: float = 1800.0
    priority: int = 2

    def __post_init__(self) -> None:
        k = self.KIND
        for name in ("median_window_minutes", "median_min_trades", "burst_min_prints", "window_minutes",
                     "lookback_minutes", "cooldown_minutes", "priority"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{k}.{name} must be an integer, got {v!r}")
        if self.print_rule not in _PRINT_RULES:
            raise ConfigError(f"{k}.print_rule must be one of {', '.join(_PRINT_RULES)}, got {self.print_rule!r}")
        check_range(k, "whale_notional", self.whale_notional, 0, 1e12, lo_open=True, unit="quote units")
        check_range(k, "median_multiple", self.median_multiple, 1, 1e6, unit="x median trade size")
        check_range(k, "median_window_minutes", self.median_window_minutes, 1, 1440, unit="minutes")
        check_range(k, "median_min_trades", self.median_min_trades, 1, 1_000_000, unit="trades")
        check_range(k, "burst_seconds", self.burst_seconds, 1, 3600, unit="seconds")
        check_range(k, "burst_min_prints", self.burst_min_prints, 1, 10_000, unit="net whale prints")
        check_range(k, "burst_min_notional", self.burst_min_notional, 0, 1e13, lo_open=True, unit="quote units")
        if self.print_rule != "multiple" and self.burst_min_notional <= self.whale_notional:
            raise ConfigError(
                f"{k}.burst_min_notional ({self.burst_min_notional:g}) must be above whale_notional "
                f"({self.whale_notional:g}): otherwise a single whale print is already a burst")
        check_range(k, "window_minutes", self.window_minutes, 1, 120, unit="minutes")
        check_range(k, "lookback_minutes", self.lookback_minutes, 10, _WEEK_MIN, unit="minutes")
        if self.lookback_minutes < 5 * self.window_minutes:
            raise ConfigError(
                f"{k}.lookback_minutes ({self.lookback_minutes}) must be at least 5 x window_minutes "
                f"({self.window_minutes}): the norm needs several windows of history")
        check_range(k, "burst_ratio", self.burst_ratio, 1, 1000, lo_open=True, unit="x norm")
        check_range(k, "min_net_notional", self.min_net_notional, 0, 1e13, lo_open=True, unit="quote units")
        check_range(k, "min_whale_share", self.min_whale_share, 0, 1, unit="fraction of window notional")
        check_range(k, "cooldown_minutes", self.cooldown_minutes, 0, 1440, unit="minutes")
        check_range(k, "stop_atr_mult", self.stop_atr_mult, 0, 100, lo_open=True, unit="ATRs")
        check_range(k, "min_stop_pct", self.min_stop_pct, 0, 20, lo_open=True, hi_open=True, unit="percent")
        check_range(k, "target_atr_mult", self.target_atr_mult, 0, 100, lo_open=True, unit="ATRs")
        check_range(k, "min_target_pct", self.min_target_pct, 0, 50, lo_open=True, hi_open=True, unit="percent")
        check_range(k, "max_hold_seconds", self.max_hold_seconds, 60, _WEEK_MIN * 60, unit="seconds")
        check_range(k, "priority", self.priority, 0, 100)

    @property
    def own_warmup_minutes(self) -> int:
        """Minutes of history the burst statistics of one bar need (window + lookback)."""
        return self.window_minutes + self.lookback_minutes

    @property
    def warmup_minutes(self) -> int:
        """History (minutes) a live window needs so its last row equals the full-history evaluation.

        A signal at t depends on the candidates of the previous cooldown_minutes (edge trigger), and each
        candidate on its own window + lookback and on the gates' states, which need their warmups.
        """
        trend_cfg, cvd_cfg = _gate_configs()
        need = max(self.own_warmup_minutes, trend_cfg.warmup_minutes, cvd_cfg.warmup_minutes)
        return self.cooldown_minutes + need + 1


# -- trade level ----------------------------------------------------------------------------------------

def _check_trades(trades: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ts ns int64, price, amount, is_buy) after checking the trade contract (TradesError otherwise)."""
    if not isinstance(trades, pd.DataFrame):
        raise TradesError(f"trades must be a pandas DataFrame, got {type(trades).__name__}")
    missing = [c for c in ("ts", "price", "amount", "side") if c not in trades.columns]
    if missing:
        raise TradesError(f"trades lack column(s): {', '.join(missing)} (need ts, price, amount, side)")
    ts = trades["ts"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise TradesError(f"trades.ts must be tz-aware UTC timestamps, got dtype {ts.dtype}")
    t_ns = pd.DatetimeIndex(ts).tz_convert("UTC").as_unit("ns").asi8
    if len(t_ns) > 1 and (np.diff(t_ns) < 0).any():
        i = int(np.argmax(np.diff(t_ns) < 0)) + 1
        raise TradesError(f"trades must be sorted by ts (trade time): row {i} at {ts.iloc[i]} comes after "
                          f"{ts.iloc[i - 1]}; sort them (stable) first")
    price = np.asarray(trades["price"].to_numpy(), dtype=np.float64)
    amount = np.asarray(trades["amount"].to_numpy(), dtype=np.float64)
    for name, arr in (("price", price), ("amount", amount)):
        bad = ~(np.isfinite(arr) & (arr > 0))
        if bad.any():
            raise TradesError(f"trades.{name} must be finite and > 0; {int(bad.sum())} bad value(s), first at "
                              f"row {int(np.argmax(bad))} ({arr[np.argmax(bad)]!r})")
    side = trades["side"].to_numpy(dtype=object)
    is_buy = side == "buy"
    bad = ~(is_buy | (side == "sell"))
    if bad.any():
        raise TradesError(f"trades.side must be 'buy' or 'sell' (the TAKER side); got {side[np.argmax(bad)]!r} "
                          f"at row {int(np.argmax(bad))}")
    return t_ns, price, amount, is_buy


def _rolling_median(t_ns: np.ndarray, amount: np.ndarray, cfg: WhaleFollowerConfig) -> np.ndarray:
    """Median amount over the trades in (ts - median_window, ts], up to and including each trade.

    pandas' time-based rolling ends each window at the row itself (later trades with the same
    timestamp are not included), so the value at a trade never depends on a later trade.
    """
    s = pd.Series(amount, index=pd.DatetimeIndex(t_ns.view("datetime64[ns]")))
    med = s.rolling(f"{cfg.median_window_minutes}min", min_periods=cfg.median_min_trades).median()
    return med.to_numpy(dtype=np.float64)


def detect_bursts(trades: pd.DataFrame, cfg: WhaleFollowerConfig | None = None) -> pd.DataFrame:
    """Flag whale prints and bursts in a trade list (see the module doc for both rules).

    trades: columns ts (tz-aware UTC Timestamp, sorted by trade time, ties kept in the given order),
    price (quote per base), amount (base units), side ("buy"/"sell" = the TAKER side). Not modified.

    Returns a frame on the same index, one row per trade:
    ts, price, amount, side, notional (quote), median_amount (rolling median, NaN when unknown or
    print_rule == "notional"), size_multiple (amount / median_amount), whale (bool), buy_prints /
    sell_prints (whale prints per side in the trailing burst_seconds, this trade included), buy_notional /
    sell_notional (their notional, quote), net_prints, net_notional (buy minus sell), burst (int8 +1 buy
    burst, -1 sell burst, 0 none; evaluated at whale prints only), burst_start (bool).
    Causal: row i depends on rows <= i only. Vectorised (prefix sums, one pandas rolling median).
    """
    cfg = cfg or WhaleFollowerConfig()
    t_ns, price, amount, is_buy = _check_trades(trades)
    n = len(t_ns)
    notional = price * amount
    if cfg.print_rule == "notional":
        median = np.full(n, np.nan)
    else:
        median = _rolling_median(t_ns, amount, cfg) if n else np.full(0, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        multiple = amount / median
    # relative tolerance: an inverse contract's base amount is 100/price per contract, so a print of
    # exactly 100 kUSD can come out as 99999.99999... after price * amount
    big = notional >= cfg.whale_notional * (1 - 1e-9)
    heavy = multiple >= cfg.median_multiple  # NaN median -> False: an unknown median proves nothing
    whale = {"both": big & heavy, "notional": big, "multiple": heavy, "either": big | heavy}[cfg.print_rule]

    # Trailing window (ts - burst_seconds, ts] over trades up to and including i: integer prefix sums
    # (counts; notional in cents) so the sums are exact whatever the start of the list.
    left = np.searchsorted(t_ns, t_ns - int(round(cfg.burst_seconds * 1e9)), side="right")
    cents = np.rint(notional * 100.0).astype(np.int64)
    wb = whale & is_buy
    ws = whale & ~is_buy

    def window_sum(x: np.ndarray) -> np.ndarray:
        cs = np.concatenate(([0], np.cumsum(x, dtype=np.int64)))
        return cs[1:] - cs[left]

    buy_n, sell_n = window_sum(wb.astype(np.int64)), window_sum(ws.astype(np.int64))
    buy_c, sell_c = window_sum(np.where(wb, cents, 0)), window_sum(np.where(ws, cents, 0))
    net_n = buy_n - sell_n
    net_c = buy_c - sell_c
    floor_c = cfg.burst_min_notional * 100.0
    up = whale & (net_c > 0) & ((net_n >= cfg.burst_min_prints) | (net_c >= floor_c))
    down = whale & (net_c < 0) & ((-net_n >= cfg.burst_min_prints) | (-net_c >= floor_c))
    burst = up.astype(np.int8) - down.astype(np.int8)
    # burst_start: compare with the previous WHALE print's burst state (non-whale trades carry none)
    wpos = np.flatnonzero(whale)
    prev = np.zeros(n, dtype=np.int8)
    if len(wpos) > 1:
        prev[wpos[1:]] = burst[wpos[:-1]]
    start = (burst != 0) & (burst != prev)

    out = pd.DataFrame({
        "ts": pd.DatetimeIndex(trades["ts"]).tz_convert("UTC"),
        "price": price, "amount": amount,
        "side": np.where(is_buy, "buy", "sell"),
        "notional": notional,
        "median_amount": median,
        "size_multiple": multiple,
        "whale": whale,
        "buy_prints": buy_n, "sell_prints": sell_n,
        "buy_notional": buy_c / 100.0, "sell_notional": sell_c / 100.0,
        "net_prints": net_n, "net_notional": net_c / 100.0,
        "burst": burst, "burst_start": start,
    }, index=trades.index)
    return out


def burst_events(detected: pd.DataFrame) -> pd.DataFrame:
    """One row per burst (a run of consecutive whale prints in a burst of the same side).

    detected: the output of detect_bursts. Columns: start, end (ts of the first / last whale print of
    the run), side ("buy"/"sell"), prints (whale prints in the run), net_notional_at_start (quote, the
    trailing-window net when the burst was detected), peak_net_notional (largest |net| during the run,
    signed).
    """
    w = detected[detected["whale"].to_numpy()]
    cols = ["start", "end", "side", "prints", "net_notional_at_start", "peak_net_notional"]
    if w.empty:
        return pd.DataFrame(columns=cols)
    b = w["burst"].to_numpy()
    run = np.cumsum(np.concatenate(([True], b[1:] != b[:-1])))
    keep = b != 0
    if not keep.any():
        return pd.DataFrame(columns=cols)
    g = w[keep].assign(_run=run[keep], _absnet=w["net_notional"].abs().to_numpy()[keep])
    grp = g.groupby("_run", sort=True)
    first = grp.head(1).set_index("_run")
    peak_idx = grp["_absnet"].idxmax()
    res = pd.DataFrame({
        "start": first["ts"],
        "end": grp["ts"].last(),
        "side": np.where(first["burst"].to_numpy() > 0, "buy", "sell"),
        "prints": grp.size(),
        "net_notional_at_start": first["net_notional"],
        "peak_net_notional": g.loc[peak_idx.to_numpy(), "net_notional"].to_numpy(),
    })
    return res.reset_index(drop=True)[cols]


def whale_volumes(trades: pd.DataFrame, cfg: WhaleFollowerConfig | None = None) -> pd.DataFrame:
    """Per-minute bar columns whale_buy_volume / whale_sell_volume (base units) by the print rule.

    Index: the UTC minute (open time) of every minute holding at least one trade; a minute with trades
    but no whale print has 0.0 (known zero), unlike NaN (sizes unknown).
    """
    cfg = cfg or WhaleFollowerConfig()
    d = detect_bursts(trades, cfg)
    minute = d["ts"].dt.floor("min")
    amt = d["amount"].where(d["whale"], 0.0)
    frame = pd.DataFrame({
        "whale_buy_volume": amt.where(d["side"] == "buy", 0.0).to_numpy(),
        "whale_sell_volume": amt.where(d["side"] == "sell", 0.0).to_numpy(),
    }, index=pd.DatetimeIndex(minute.to_numpy(), name="open_time"))
    return frame.groupby(level=0, sort=True).sum()


# -- bar level ------------------------------------------------------------------------------------------

_TREND_GATE = ("allow_long", "allow_short", "size_mult_long", "size_mult_short", "atr_pct", "confidence",
               "direction", "ready")
_CVD_GATE = ("cvd", "available")
# Above this many separate gate segments one full-history gate call is cheaper (each call costs a few ms
# of fixed pandas overhead); measured with benchmarks/bench_whale_follower.py.
_MAX_SEGMENTS = 4


def _gate_configs() -> tuple[TrendConfig, CvdConfig]:
    """The gates' configs: the defaults the trend and CVD ghosts ship with."""
    return TrendConfig(), CvdConfig()


def _state_on_segments(fn: Callable[[pd.DataFrame], pd.DataFrame], bars: pd.DataFrame, rows: np.ndarray,
                       span_minutes: int) -> pd.DataFrame:
    """fn evaluated on the merged time segments [t - span_minutes + 1 min, t] around `rows` only.

    The gates are finite-window by contract (their value at t is exact given warmup_minutes of history),
    so with span_minutes >= the gate's warmup every row in `rows` gets the full-history value, at the cost
    of a few segments instead of the whole series. Returned frame is indexed by the rows' times.
    """
    secs = bars.index.as_unit("s").asi8
    t_end = secs[rows]
    t_start = t_end - (span_minutes - 1) * 60
    parts = []
    a0, b0 = int(t_start[0]), int(t_end[0])
    for a, b in zip(t_start[1:].tolist(), t_end[1:].tolist(), strict=True):  # rows sorted: one merge pass
        if a <= b0 + 60:
            b0 = b
            continue
        parts.append((a0, b0))
        a0, b0 = a, b
    parts.append((a0, b0))
    bounds = [(int(np.searchsorted(secs, a, "left")), int(np.searchsorted(secs, b, "right"))) for a, b in parts]
    if len(bounds) > _MAX_SEGMENTS or sum(hi - lo for lo, hi in bounds) * 2 > len(secs):
        # many or long segments: one full-history call is cheaper (per-call overhead dominates) and exact
        return fn(bars).iloc[rows]
    frames = [fn(bars.iloc[lo:hi]) for lo, hi in bounds]
    full = pd.concat(frames) if len(frames) > 1 else frames[0]
    return full.loc[bars.index[rows]]


def _gate_rows(given: pd.DataFrame | None, fn: Callable[[pd.DataFrame], pd.DataFrame], warm: int,
               bars: pd.DataFrame, rows: np.ndarray, cols: tuple[str, ...], name: str) -> dict[str, np.ndarray]:
    """Gate columns at `rows`: from the caller's precomputed frame, else computed on segments."""
    if given is not None:
        if not isinstance(given, pd.DataFrame) or not given.index.equals(bars.index):
            raise ValueError(f"{name} must be a DataFrame on the same index as the bars")
        missing = [c for c in cols if c not in given.columns]
        if missing:
            raise ValueError(f"{name} lacks column(s) {missing}")
        frame = given.iloc[rows]
    else:
        frame = _state_on_segments(fn, bars, rows, warm)
    return {c: frame[c].to_numpy() for c in cols}


def _cents(x: np.ndarray) -> np.ndarray:
    """Quote amounts as int64 cents, NaN -> 0 (the caller tracks unknowns separately). `x` is a fresh
    temporary: it is overwritten."""
    np.copyto(x, 0.0, where=~np.isfinite(x))
    x *= 100.0
    return np.rint(x, out=x).astype(np.int64)


def _prefix(x: np.ndarray) -> np.ndarray:
    return np.concatenate(([0], np.cumsum(x, dtype=np.int64)))


_PER_MINUTE = {"s": 60, "ms": 60_000, "us": 60_000_000, "ns": 60_000_000_000}


def _minutes(index: pd.DatetimeIndex) -> np.ndarray:
    """Open times as integer epoch minutes (bars are whole minutes; cheaper than as_unit("s"))."""
    return index.asi8 // _PER_MINUTE[index.unit]


def _first_after(minutes: np.ndarray, back: int) -> np.ndarray:
    """np.searchsorted(minutes, minutes - back, side="right") for strictly increasing minutes: for each
    row, the first row whose minute is after its own minute minus `back`. Arithmetic on a gap-free series,
    a rank on the minute grid with gaps (both exact integers, cheaper than the binary searches)."""
    n = len(minutes)
    first = int(minutes[0])
    size = int(minutes[-1]) - first + 1
    if size == n:  # no gaps: row i is minute first + i
        return np.maximum(np.arange(1 - back, n + 1 - back), 0)
    if size > 4 * n:  # a sparse series over a long span: the grid would be large
        return np.searchsorted(minutes, minutes - back, side="right")
    before = np.zeros(size + 1, dtype=np.int64)  # before[k]: rows whose minute is < first + k
    before[minutes - first + 1] = 1
    np.cumsum(before, out=before)
    return before[np.clip(minutes - (first + back - 1), 0, size)]


@dataclasses.dataclass(frozen=True)
class _BurstStats:
    """Burst statistics; notionals in int64 cents. `known` covers every bar; the other arrays cover the
    bars in `rows` (every bar when rows is None, else the potential bars only, in order)."""

    known: np.ndarray        # this bar's whale volumes known
    rows: np.ndarray | None  # the bars the arrays below describe (None: all)
    net_c: np.ndarray        # net whale notional in the window (cents)
    norm_c: np.ndarray       # expected gross whale notional per window (cents, float)
    ratio: np.ndarray        # |net| / norm (inf when norm is 0)
    share: np.ndarray        # |net| / window traded notional
    unknown_w: np.ndarray    # bars with unknown whale volumes in window + lookback
    vol_unknown: np.ndarray  # bars with unknown volume in the window
    lb_bars: np.ndarray      # bars present in the lookback
    potential: np.ndarray    # known bar with |net| >= min_net_notional (worth a reason)
    burst: np.ndarray        # burst bar (all burst conditions)
    side: np.ndarray         # sign of net (int8)


def _burst_stats(bars: pd.DataFrame, cfg: WhaleFollowerConfig, potential_only: bool = False) -> _BurstStats:
    """Burst statistics of validated bars (window sums by time, exact integer cents).

    potential_only: the statistics of the potential bars only (`rows`; what evaluate reads, a few per
    thousand bars): every array but the net notional then has their length instead of 130k rows, so
    far fewer fresh pages. Each value is the same as in the full statistics (elementwise arithmetic on
    the same exact integer window sums).
    """
    close = bars["close"].to_numpy()
    wb, ws = bars["whale_buy_volume"].to_numpy(), bars["whale_sell_volume"].to_numpy()
    known = np.isfinite(wb) & np.isfinite(ws)
    vol = bars["volume"].to_numpy()
    vol_bad = ~np.isfinite(vol)
    w, lb = cfg.window_minutes, cfg.lookback_minutes
    minutes = _minutes(bars.index)
    lo_w_all = _first_after(minutes, w)  # window (t - w, t]: rows lo_w .. t
    buy_c, sell_c = _cents(wb * close), _cents(ws * close)
    cs_net = _prefix(buy_c - sell_c)
    net_all = cs_net[1:] - cs_net[lo_w_all]
    if potential_only:
        rows: np.ndarray | None = np.flatnonzero(known & (np.abs(net_all).astype(np.float64)
                                                         >= cfg.min_net_notional * 100.0))
        hi: np.ndarray | slice = rows + 1
        lo_w = lo_w_all[rows]
        lo_l = np.searchsorted(minutes, minutes[rows] - (w + lb), side="right")
        net_c = net_all[rows]
    else:
        rows, hi, lo_w, net_c = None, slice(1, None), lo_w_all, net_all
        lo_l = _first_after(minutes, w + lb)  # lookback (t - w - lb, t - w]: rows lo_l .. lo_w - 1
    cs_gross = _prefix(buy_c + sell_c)
    del buy_c, sell_c
    gross_lb = cs_gross[lo_w] - cs_gross[lo_l]
    lb_bars = lo_w - lo_l
    cs_vol = _prefix(_cents(vol * close))
    vol_w = cs_vol[hi] - cs_vol[lo_w]
    # unknown bars are rare (none on most inputs): counted only when there are any
    if known.all():
        unknown_w = np.zeros(len(net_c), dtype=np.int64)
    else:
        cs = _prefix(~known)
        unknown_w = cs[hi] - cs[lo_l]
    if vol_bad.any():
        cs = _prefix(vol_bad)
        vol_unknown = cs[hi] - cs[lo_w]
    else:
        vol_unknown = np.zeros(len(net_c), dtype=np.int64)
    abs_net = np.abs(net_c).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm_c = gross_lb / np.maximum(lb_bars, 1) * w
        ratio = np.where(norm_c > 0, abs_net / norm_c, np.where(abs_net > 0, np.inf, 0.0))
        share = np.where(vol_w > 0, abs_net / vol_w, np.nan)
    potential = abs_net >= cfg.min_net_notional * 100.0
    if rows is None:
        potential &= known  # (the potential rows are known bars)
    burst = (potential & (unknown_w == 0) & (vol_unknown == 0) & (lb_bars * 2 >= lb)
             & (ratio >= cfg.burst_ratio) & (share >= cfg.min_whale_share))
    return _BurstStats(known, rows, net_c, norm_c, ratio, share, unknown_w, vol_unknown, lb_bars, potential, burst,
                       np.sign(net_c).astype(np.int8))


def whale_bursts(bars: pd.DataFrame, cfg: WhaleFollowerConfig | None = None) -> pd.DataFrame:
    """Per-bar burst statistics (before the trend/CVD gates), for tests, the UI and research.

    Columns: net_notional (quote, net whale notional in the window, buy positive), norm (quote, usual
    gross whale notional per window), ratio, share (of the window's traded notional), burst (int8
    +1/-1/0: the bar meets every burst condition), known (whale volumes known at this bar).
    """
    cfg = cfg or WhaleFollowerConfig()
    bars = validate_bars(bars)
    s = _burst_stats(bars, cfg)
    return pd.DataFrame({
        "net_notional": s.net_c / 100.0, "norm": s.norm_c / 100.0, "ratio": s.ratio, "share": s.share,
        "burst": np.where(s.burst, s.side, 0).astype(np.int8), "known": s.known,
    }, index=bars.index)


def _q(cents: float) -> str:
    """A quote amount given in cents, short: 1.23M, 450k, 980."""
    v = cents / 100.0
    a = abs(v)
    if a >= 1e9:
        return f"{v / 1e9:.2f}B"
    if a >= 1e6:
        return f"{v / 1e6:.2f}M"
    if a >= 1e3:
        return f"{v / 1e3:.0f}k"
    return f"{v:.0f}"


def evaluate(bars: pd.DataFrame, cfg: WhaleFollowerConfig, *, trend: pd.DataFrame | None = None,
             cvd: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per-bar drafts (DRAFT_COLUMNS, same index as `bars`): +1 follows whale buying, -1 whale selling.

    A bar fires when it is a burst bar (module doc), the trend filter allows that side, CVD agrees, and no
    bar in the previous cooldown_minutes was such a candidate. Bars whose whale volumes are unknown say
    "no trade sizes"; bars with a large net whale flow that did not fire say why (history, ratio, share,
    trend, CVD, cooldown); other bars have an empty reason.

    `trend` / `cvd`: optional precomputed `trend_state` / `cvd_state` frames on the same index (a runner
    evaluating several ghosts computes them once; a test can pass a trend filter with a shorter horizon).
    By default both are computed with their default configs, only on time segments ending at burst bars
    (exact: each segment holds the gate's warmup).

    Levels (LONG; mirror for SHORT), with a = the trend filter's atr_pct at the bar (NaN -> floors only):
      stop   = entry * (1 - max(stop_atr_mult * a, min_stop_pct) / 100)
      target = entry * (1 + max(target_atr_mult * a, min_target_pct) / 100)
    confidence = min(1, 0.5 + 0.25 * clip(ratio / burst_ratio - 1, 0, 1)
                          + 0.15 * clip(share / min_whale_share - 1, 0, 1) + 0.10 * trend confidence):
    0.5 for a bare qualifying burst; full marks need twice the ratio, twice the share and a confident trend.
    size_mult = (0.7 + 0.3 * confidence) * the trend filter's size_mult for that side (which is 0 where
    the side is blocked and already carries the trend's confidence and volatility regime).
    """
    bars = validate_bars(bars)
    n = len(bars)
    if n == 0:
        return idle_drafts(bars.index)
    known = np.isfinite(bars["whale_buy_volume"].to_numpy()) & np.isfinite(bars["whale_sell_volume"].to_numpy())
    if not known.any():  # kline-only history: nothing to measure (the cheap path of most backtests)
        return idle_drafts(bars.index, NO_TRADE_SIZES)
    out = idle_draft_arrays(n)
    reasons = out["reason"]
    s = _burst_stats(bars, cfg, potential_only=True)  # arrays over the potential bars `pot`, in order
    reasons[~s.known] = NO_TRADE_SIZES
    pot = s.rows
    if len(pot) == 0:
        return drafts_frame(bars.index, **out)

    side = s.side  # never 0 at a potential bar (|net| >= min_net_notional > 0)
    bj = np.flatnonzero(s.burst)  # burst bars, as positions in pot
    brows = pot[bj]
    tg: dict[str, np.ndarray] = {}
    cg: dict[str, np.ndarray] = {}
    allow = np.zeros(len(pot), dtype=bool)
    cvd_ok = np.zeros(len(pot), dtype=bool)
    if len(brows):
        trend_cfg, cvd_cfg = _gate_configs()
        tg = _gate_rows(trend, lambda b: trend_state(b, trend_cfg), trend_cfg.warmup_minutes, bars, brows,
                        _TREND_GATE, "trend")
        cg = _gate_rows(cvd, lambda b: cvd_state(b, cvd_cfg), cvd_cfg.warmup_minutes, bars, brows,
                        _CVD_GATE, "cvd")
        bside = side[bj]
        allow[bj] = np.where(bside > 0, tg["allow_long"].astype(bool), tg["allow_short"].astype(bool))
        cvd_v = cg["cvd"].astype(np.float64)
        avail = cg["available"].astype(bool) & np.isfinite(cvd_v)
        cvd_ok[bj] = avail & (np.sign(cvd_v) == bside)
    cand = s.burst & allow & cvd_ok
    # edge trigger: no candidate in [t - cooldown, t); candidates are few, so counted among themselves
    cj = np.flatnonzero(cand)
    cmin = bars.index.asi8[pot[cj]] // _PER_MINUTE[bars.index.unit]
    fire = np.zeros(len(pot), dtype=bool)
    fire[cj] = np.searchsorted(cmin, cmin - cfg.cooldown_minutes, side="left") == np.arange(len(cj))

    _write_reasons(reasons, bars, cfg, s, tg, cg, allow, cvd_ok, fire)

    fj = np.flatnonzero(fire[bj])  # firing bars, as positions in the gate arrays
    if len(fj):
        rows = brows[fj]
        at = bj[fj]  # ... and in pot
        sd = side[at].astype(np.float64)
        entry = bars["close"].to_numpy()[rows]
        atr = tg["atr_pct"].astype(np.float64)[fj]
        stop_pct = np.fmax(cfg.stop_atr_mult * atr, cfg.min_stop_pct)  # fmax: NaN ATR -> the floor
        target_pct = np.fmax(cfg.target_atr_mult * atr, cfg.min_target_pct)
        t_conf = np.nan_to_num(tg["confidence"].astype(np.float64)[fj], nan=0.0)
        x_ratio = np.clip(s.ratio[at] / cfg.burst_ratio - 1.0, 0.0, 1.0)
        x_share = (np.clip(s.share[at] / cfg.min_whale_share - 1.0, 0.0, 1.0) if cfg.min_whale_share > 0
                   else np.ones(len(rows)))
        conf = np.minimum(1.0, 0.5 + 0.25 * x_ratio + 0.15 * x_share + 0.10 * np.clip(t_conf, 0.0, 1.0))
        smult = np.where(sd > 0, tg["size_mult_long"].astype(np.float64)[fj],
                         tg["size_mult_short"].astype(np.float64)[fj])
        out["side"][rows] = side[at]
        out["confidence"][rows] = conf
        out["entry"][rows] = entry
        out["stop"][rows] = entry * (1 - sd * stop_pct / 100)
        out["target"][rows] = entry * (1 + sd * target_pct / 100)
        out["size_mult"][rows] = (0.7 + 0.3 * conf) * smult
        out["max_hold_s"][rows] = float(cfg.max_hold_seconds)
        out["priority"][rows] = cfg.priority
    return drafts_frame(bars.index, **out)


def _obj(texts: list[str]) -> np.ndarray:
    """A list of str as an object array (assigned into the reasons without numpy's unicode detour)."""
    out = np.empty(len(texts), dtype=object)
    out[:] = texts
    return out


def _q_many(cents: np.ndarray) -> np.ndarray:
    """`_q` of every value (object array of str): one list comprehension per magnitude class over Python
    floats, the same divisions and formats as _q."""
    v = np.asarray(cents) / 100.0
    a = np.abs(v)
    out = np.empty(len(v), dtype=object)
    with np.errstate(invalid="ignore"):
        bil = a >= 1e9
        mil = (a >= 1e6) & (a < 1e9)
        kil = (a >= 1e3) & (a < 1e6)
        one = ~(a >= 1e3)  # NaN too, as _q
    for mask, scale, fmt in ((bil, 1e9, "{:.2f}B"), (mil, 1e6, "{:.2f}M"), (kil, 1e3, "{:.0f}k")):
        if mask.any():
            out[mask] = _obj([fmt.format(x) for x in (v[mask] / scale).tolist()])
    if one.any():
        out[one] = _obj([f"{x:.0f}" for x in v[one].tolist()])
    return out


def _write_reasons(reasons: np.ndarray, bars: pd.DataFrame, cfg: WhaleFollowerConfig, s: _BurstStats,
                   tg: dict[str, np.ndarray], cg: dict[str, np.ndarray], allow: np.ndarray, cvd_ok: np.ndarray,
                   fire: np.ndarray) -> None:
    """The reason of every potential bar (a large net whale flow), written into `reasons`: history,
    ratio, share, trend, CVD, cooldown, or the signal. Arrays are over the potential bars (s.rows); tg /
    cg over its burst bars. Built per outcome in bulk from Python scalars (numpy scalars format several
    times slower)."""
    pot, w, lb = s.rows, cfg.window_minutes, cfg.lookback_minutes
    trades = bars["trades"].to_numpy()[pot]
    tr_txt = np.full(len(pot), "", dtype=object)
    fin = np.isfinite(trades)
    if fin.any():
        tr_txt[fin] = _obj([f", {int(t)} trades this bar" for t in trades[fin].tolist()])
    lead = np.array(["whale SELL flow: net -", "", "whale BUY flow: net +"], dtype=object)[s.side + 1]
    head = _obj([f"{a}{q} in {w} min{t}" for a, q, t in zip(lead.tolist(), _q_many(np.abs(s.net_c)).tolist(),
                                                              tr_txt.tolist(), strict=True)])

    def put(mask: np.ndarray, texts: list[str]) -> None:
        reasons[pot[mask]] = _obj(texts)

    unk = s.unknown_w != 0
    if unk.any():
        put(unk, [f"{h}, but trade sizes unknown for {u} bar(s) of the {w}+{lb} minute window -> no trade"
                  for h, u in zip(head[unk].tolist(), s.unknown_w[unk].tolist(), strict=True)])
    vol_unk = ~unk & (s.vol_unknown != 0)
    if vol_unk.any():
        put(vol_unk, [f"{h}, but total volume unknown in the window -> no trade" for h in head[vol_unk].tolist()])
    short = ~unk & ~vol_unk & (s.lb_bars * 2 < lb)
    if short.any():
        put(short, [f"{h}, but only {b} of {lb} lookback minutes present -> no trade"
                    for h, b in zip(head[short].tolist(), s.lb_bars[short].tolist(), strict=True)])
    rest = ~unk & ~vol_unk & ~short
    if not rest.any():
        return
    ratio, share = s.ratio[rest], s.share[rest]
    ratio_txt = np.full(len(ratio), "no whale flow in the lookback", dtype=object)
    fin = ~np.isinf(ratio)
    if fin.any():
        ratio_txt[fin] = _obj([f"x{r:.1f} the norm {q}/{w} min over {lb} min" for r, q in zip(
            ratio[fin].tolist(), _q_many(s.norm_c[rest][fin]).tolist(), strict=True)])
    head[rest] = _obj([f"{h} = {r}, {x:.0%} of traded notional" for h, r, x in zip(
        head[rest].tolist(), ratio_txt.tolist(), share.tolist(), strict=True)])
    low = rest & (s.ratio < cfg.burst_ratio)
    if low.any():
        put(low, [f"{h}; ratio below x{cfg.burst_ratio:g} -> no burst" for h in head[low].tolist()])
    thin = rest & ~low & ~(s.share >= cfg.min_whale_share)
    if thin.any():
        put(thin, [f"{h}; share below {cfg.min_whale_share:.0%} -> no burst" for h in head[thin].tolist()])
    burst = s.burst  # == rest & ~low & ~thin; the gate arrays follow these bars in order
    if not burst.any():
        return
    head[burst] = _obj([f"{h}; trend {DIRECTION_NAMES.get(int(d), '?')} (confidence {float(c):.2f})"
                        for h, d, c in zip(head[burst].tolist(), tg["direction"].tolist(), tg["confidence"].tolist(),
                                           strict=True)])
    blocked = burst & ~allow
    if blocked.any():
        b = blocked[burst]
        why = np.where(s.side[blocked] > 0, "blocks longs", "blocks shorts").astype(object)
        why[~tg["ready"][b].astype(bool)] = "not ready"
        put(blocked, [f"{h}: trend filter {y} -> no trade" for h, y in zip(head[blocked].tolist(), why.tolist(),
                                                                            strict=True)])
    cvd_v = cg["cvd"].astype(np.float64)  # along the burst bars
    no_cvd = burst & allow & ~cvd_ok
    if no_cvd.any():
        b = no_cvd[burst]
        put(no_cvd, [f"{h}; CVD unknown (no taker split in its window) -> no trade"
                     if not bool(a) or not math.isfinite(v) else f"{h}; CVD {v:+.4g} base disagrees -> no trade"
                     for h, a, v in zip(head[no_cvd].tolist(), cg["available"][b].tolist(), cvd_v[b].tolist(),
                                        strict=True)])
    agree = burst & allow & cvd_ok
    if not agree.any():
        return
    head[agree] = _obj([f"{h}; CVD {v:+.4g} base agrees"
                        for h, v in zip(head[agree].tolist(), cvd_v[agree[burst]].tolist(), strict=True)])
    late = agree & ~fire
    if late.any():
        put(late, [f"{h}, but a whale signal condition already held within the last {cfg.cooldown_minutes} min "
                   "(edge-triggered) -> no trade" for h in head[late].tolist()])
    if fire.any():
        put(fire, [f"{h} -> follow {'LONG' if d > 0 else 'SHORT'}" for h, d in zip(
            head[fire].tolist(), s.side[fire].tolist(), strict=True)])


def state_summary(bars: pd.DataFrame, cfg: WhaleFollowerConfig | None = None) -> dict[str, str]:
    """The ghosts page's view: the last whale burst bar (time, side, net notional) and the last signal."""
    cfg = cfg or WhaleFollowerConfig()
    checked = validate_bars(bars)
    if len(checked) == 0:
        return {"last_burst": "no bars"}
    s = _burst_stats(checked, cfg)
    if not s.known.any():
        return {"last_burst": "no trade sizes (whale volumes unknown): idle"}
    idx = np.flatnonzero(s.burst)
    if len(idx) == 0:
        return {"last_burst": f"none in the last {len(checked)} bars", "last_signal": "none"}
    i = int(idx[-1])
    drafts = evaluate(checked, cfg)
    fired = np.flatnonzero(drafts["side"].to_numpy() != 0)
    last_sig = "none"
    if len(fired):
        j = int(fired[-1])
        last_sig = f"{drafts.index[j]:%Y-%m-%d %H:%M} UTC {'LONG' if drafts['side'].iat[j] > 0 else 'SHORT'}"
    return {
        "last_burst": (f"{checked.index[i]:%Y-%m-%d %H:%M} UTC {'BUY' if s.side[i] > 0 else 'SELL'} "
                       f"net {_q(abs(s.net_c[i]))} in {cfg.window_minutes} min (x{s.ratio[i]:.1f} norm)"),
        "last_burst_time": checked.index[i].isoformat(),
        "last_burst_side": "buy" if s.side[i] > 0 else "sell",
        "last_burst_notional": f"{s.net_c[i] / 100.0:.2f}",
        "last_signal": last_sig,
    }
