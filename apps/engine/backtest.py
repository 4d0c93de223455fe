"""Portfolio backtest of the whole system over 1-minute bars, pure (DESIGN §4 "Backtest", issue 5).

The same functions the live desk calls, in a loop over data time:

1. every ghost in the set is evaluated ONCE over the whole series (its `evaluate` is causal: the draft of
   bar t uses bars up to the close of t only; tests/engine/test_causality.py checks each ghost);
2. the trend gate is `trend_state` of the set's trend_filter ghost config, row t (the live service's
   `apps.runtime.manager.trend_gate`, same label text); the gate applies whenever a trend_filter ghost
   is in the set, enabled or not (live: disabling the trend ghost stops its drafts, not its veto);
3. bars are then walked in time. Within bar t, in this order:
   a. an entry decided at the close of bar t-1 fills at the OPEN of t through the exchange's FillModel
      (adverse slippage + taker fee); stop and target keep their % distance from the ghost's reference
      entry and are re-anchored on the fill (`exits.rebase_levels`); the quantity is sized from the
      fill price (`sizing.quantity_at_fill`: the decided notional, qty = notional / fill price);
   b. every open position is checked with `exits.bar_check`, the order `simulate_trade` uses: a time
      stop due at the open of t exits at that open (reason "time", even when the open is beyond the
      stop or the target), otherwise `bar_exit` on t's open/high/low (an open beyond the stop or the
      target exits at that open, then the stop before the target when the range holds both);
   c. after each close the ghost's auto-disable rules (`performance.rules_breached`) and the desk's
      per-ghost drawdown stop (`risk.ghost_drawdown_breached`) are judged, like `ghost_review` live;
      a disabled ghost stays off to the end (only an operator re-enables);
   d. equity at t's close = start capital + realised gross P&L - every fee paid + open positions marked
      at t's close (`apps.trading.selectors.equity`); when the daily loss reaches its limit the kill
      switch trips and STAYS tripped to the end of the run (never reset at midnight: only an operator
      resets it); with `flatten_on_kill` open positions close at t's close as market orders;
   e. the drafts of bar t (side != 0) become candidates for `manager.arbitrate` - exactly the function
      `apps.runtime.manager.bar_decide` calls - with each ghost's performance score (performance_score of
      performance(...) of its closed trades so far), the gate and `risk.risk_check` on the simulated
      ledger; drafts of disabled ghosts get the fate ghost_disabled. The taken draft fills at step (a)
      of the next bar; a draft taken on the last bar has no next open and is reported as unfilled.

Lab options (issue 9; the defaults are the desk's behaviour): `BacktestConfig.sizing` (`Sizing`: the desk's
risk-based size, a fixed stake, or a % of equity; every risk limit still applies), `GhostSetup.direction`
("both" / "long" / "short": a draft of the other side gets the fate "direction_off" and never reaches the
manager), `BacktestConfig.auto_disable` / `kill_switch` (False: the auto-disable rules and the per-ghost
drawdown stop are not judged / the daily loss neither trips the kill switch nor blocks an entry), a
`progress(stage, done, total)` callback, and `BacktestResult.exposure` (fraction of bars with a position
open, each trade from its entry bar through its exit bar).

Data-time conventions: a bar belongs to the UTC day of its OPEN time (the day of the daily loss and of
max_trades_per_day); the decision for bar t happens at its close, t + 60 s (the manager's `now_s`).
Start-of-day equity is the live selector's (`apps.trading.risk_selectors.risk_state`): equity minus
today's P&L, where today's P&L is the net P&L of trades closed today plus the open positions' marks
net of their fees, i.e. start capital + net P&L of the trades closed before the day began.

Money: the ledger mirrors the paper executor (`apps.trading.services`): prices and quantities are
quantised to 1e-8 as Decimal, fees and gross P&L to 1e-8 of the quote currency, so the final equity is
EXACTLY start capital + the sum of the trades' net P&L. Marks and the equity curve are float64.

Cost: the ghosts and the trend gate are vectorised (`evaluate_ghosts` shares the trend and CVD states, and
its result hands the trend gate to run_backtest when the bars are unchanged: `GhostDrafts.gate_for`); the
walk is a Python loop (unavoidable: each decision depends on the ledger the previous ones made), but it
visits only bars with an open position, a pending entry or a draft of an enabled ghost: with nothing open
it jumps to the next such draft bar (the equity is flat in between), and a bar with a position but no such
draft only marks it (and judges the daily loss when equity is below the day's start). A disabled ghost's
drafts get their fate (ghost_disabled, the manager's first rule) in bulk when it is disabled; Draft objects
and bar Timestamps are made only for the drafts the manager sees. A ghost's performance figures are
recomputed only when it closes a trade, in numpy (`performance.sample_returns_daily`: the same figures as
the pandas resample, bit for bit). benchmarks/system.py and benchmarks/lab_engine.py print the throughput.
"""

import bisect
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from apps.engine.exits import END_OF_DATA, bar_check, rebase_levels
from apps.engine.fills import FillModel, fill_model_for
from apps.engine.lots import LotRules, lot_size, price_round
from apps.engine.manager import (
    BLOCKED_RISK,
    DISABLED_DETAIL,
    GHOST_DISABLED,
    TAKEN,
    Candidate,
    Decision,
    ManagerConfig,
    TrendGate,
    arbitrate,
)
from apps.engine.performance import (
    PERIODS_PER_YEAR,
    AutoDisableRules,
    Performance,
    ScoreWeights,
    performance,
    performance_of,
    performance_score,
    rules_breached,
    sample_returns_daily,
)
from apps.engine.registry import DESK_KINDS, get_spec
from apps.engine.risk import (
    RiskDecision,
    RiskLimits,
    RiskState,
    daily_loss_breached,
    daily_loss_hit,
    daily_loss_text,
    ghost_drawdown_breached,
    risk_check,
)
from apps.engine.sizing import quantity_at_fill
from apps.engine.types import ConfigError, Draft, GhostConfig, check_range

TREND_KIND = "trend_filter"
KILL_SWITCH = "kill_switch"  # exit reason of a position flattened when the kill switch trips
STEP = Decimal("0.00000001")  # the paper executor's 1e-8 step for prices, quantities, fees and P&L
_MINUTE_NS = 60_000_000_000
_DAY_NS = 86_400_000_000_000


def _d(x: float) -> Decimal:
    """A float as the paper executor stores it: shortest repr, quantised to 1e-8."""
    return Decimal(repr(float(x))).quantize(STEP)


DIRECTIONS = ("both", "long", "short")
DIRECTION_OFF = "direction_off"  # fate of a draft on the side its ghost's `direction` leaves out
SIZING_MODES = ("risk", "stake", "equity_pct")


@dataclasses.dataclass(frozen=True)
class GhostSetup:
    """One ghost in the backtest: a unique id (ties in the manager keep the lower id), a display name,
    its registry kind, its config (a GhostConfig, a params mapping, or None for the defaults), whether it
    starts enabled, its auto-disable rules, and the sides it may trade (`direction`: "both", "long" or
    "short"; a draft of the other side gets the fate "direction_off" and never reaches the manager)."""

    ghost_id: int
    name: str
    kind: str
    config: GhostConfig | Mapping[str, Any] | None = None
    enabled: bool = True
    auto_disable: AutoDisableRules = AutoDisableRules()
    direction: str = "both"

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"{self.name}: direction must be one of {', '.join(DIRECTIONS)}, "
                              f"got {self.direction!r}")

    def resolved_config(self) -> GhostConfig:
        spec = get_spec(self.kind)
        if isinstance(self.config, spec.config_cls):
            return self.config
        return spec.config_cls.from_params(self.config)  # type: ignore[arg-type]


def default_ghosts() -> list[GhostSetup]:
    """Every desk ghost at its defaults (not the lab-only kinds), ids 1.. in registry order, names = kinds."""
    return [GhostSetup(ghost_id=i, name=kind, kind=kind) for i, kind in enumerate(DESK_KINDS, start=1)]


@dataclasses.dataclass(frozen=True)
class Sizing:
    """How a taken draft is sized (the lab's choice; the desk sizes by risk).

    - mode "risk" (default, the desk's rule): `risk.risk_check`'s size, i.e. risk_per_trade_pct % of
      equity over the stop distance x trend x confidence multipliers, capped at max_notional_pct % of
      equity in notional;
    - mode "stake": a fixed notional of `stake` quote currency per trade (quote currency, > 0);
    - mode "equity_pct": a notional of `equity_pct` % of the equity marked at the decision's close (> 0,
      <= 100).
    stake and equity_pct are fixed notionals, as their names say: neither the multipliers nor the notional
    cap apply to them. Every other risk limit does, in every mode (kill switch, open positions overall and
    per ghost, trades per day, and the daily loss while the kill switch is on). In every mode the notional
    is decided at the signal bar's close and kept at the fill (`sizing.quantity_at_fill`: qty = notional /
    fill price).
    """

    mode: str = "risk"
    stake: float = 1000.0
    equity_pct: float = 10.0

    def __post_init__(self) -> None:
        if self.mode not in SIZING_MODES:
            raise ConfigError(f"sizing.mode must be one of {', '.join(SIZING_MODES)}, got {self.mode!r}")
        check_range("sizing", "stake", self.stake, 0, 1e12, lo_open=True, unit="quote currency per trade")
        check_range("sizing", "equity_pct", self.equity_pct, 0, 100, lo_open=True, unit="% of equity")

    def notional(self, equity: float) -> float:
        """The notional of one entry in modes stake / equity_pct (quote currency)."""
        return self.stake if self.mode == "stake" else equity * self.equity_pct / 100.0


@dataclasses.dataclass(frozen=True)
class BacktestConfig:
    """start_capital: quote currency (the desk's HFT_START_CAPITAL default, 10 000); exchange: ccxt id
    whose FillModel prices the fills (`fills.fill_model_for`), unless `fill_model` is given; limits,
    manager and score weights: the live defaults; perf_freq: sampling period of the performance figures
    (as `revenue.selectors.ghost_performance`).

    Lab switches (the defaults are the desk's behaviour): `sizing` (see Sizing); `auto_disable=False`:
    neither the ghosts' auto-disable rules nor the per-ghost drawdown stop are judged (a ghost trades to
    the end); `kill_switch=False`: the daily-loss limit never trips the kill switch and never blocks an
    entry.

    `lots`: the instrument's lot rules (`apps.engine.lots`, what the paper and live executors apply; None = no
    rule known, as an instrument never looked up trades on the desk). With them the backtest fills as paper does:
    the entry and exit prices on the nearest price tick, the re-anchored stop on the tick away from the fill and
    the target on the nearest one, the quantity rounded DOWN to the amount step; an entry below the minimum
    quantity or notional is not opened and its draft's fate becomes blocked_risk with the executor's words
    ("lot: notional 2.85 USDT below the minimum 5 USDT of BTC/USDT on binance").

    `trade_from`: bars before it are history only (the ghosts' and the trend gate's warm-up): their drafts are
    neither candidates nor fates, nothing trades, and the result (equity, exposure) starts at the first bar
    at or after it, as a desk that started trading then with that history stored."""

    start_capital: Decimal = Decimal("10000")
    exchange: str = "binance"
    fill_model: FillModel | None = None
    limits: RiskLimits = RiskLimits()
    manager: ManagerConfig = ManagerConfig()
    score_weights: ScoreWeights = ScoreWeights()
    perf_freq: str = "1D"
    sizing: Sizing = Sizing()
    auto_disable: bool = True
    kill_switch: bool = True
    trade_from: pd.Timestamp | None = None
    lots: LotRules | None = None

    @property
    def model(self) -> FillModel:
        return self.fill_model if self.fill_model is not None else fill_model_for(self.exchange)


@dataclasses.dataclass(frozen=True)
class Trade:
    """One closed round trip. Prices in quote currency, qty in base units, money in quote currency
    (Decimal, 1e-8 steps as the paper ledger). signal_time is the open time of the draft's bar;
    entry_time/exit_time are open times of the bars the fills happened in."""

    ghost_id: int
    ghost: str
    side: int
    signal_time: pd.Timestamp
    entry_time: pd.Timestamp
    entry_price: Decimal
    exit_time: pd.Timestamp
    exit_price: Decimal
    qty: Decimal
    stop: float
    target: float
    entry_fee: Decimal
    exit_fee: Decimal
    gross_pnl: Decimal
    reason: str

    @property
    def fees(self) -> Decimal:
        return self.entry_fee + self.exit_fee

    @property
    def net_pnl(self) -> Decimal:
        return self.gross_pnl - self.entry_fee - self.exit_fee


@dataclasses.dataclass(frozen=True)
class DisableEvent:
    time: pd.Timestamp  # open time of the bar in which the closing trade exited
    ghost_id: int
    ghost: str
    reasons: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class BacktestResult:
    """Everything a run produced; see `summary()` for the operator's view."""

    ghosts: tuple[GhostSetup, ...]
    start_capital: Decimal
    final_equity: Decimal  # ledger after closing what was still open at the last close
    trades: tuple[Trade, ...]
    fates: pd.DataFrame  # one row per draft (side != 0): bar_time, ghost_id, ghost, side, fate, detail, score
    equity: pd.Series  # float equity at each bar's close, indexed by bar open time; last = final_equity
    performance: dict[str, Performance]
    disables: tuple[DisableEvent, ...]
    kill_switch: tuple[pd.Timestamp, str] | None  # (bar open time, reason) when it tripped
    unfilled: tuple[tuple[pd.Timestamp, int], ...]  # (bar time, ghost id) taken on the last bar
    signals: pd.DataFrame  # per ghost: longs, shorts, its last idle reason
    # fraction of bars with at least one position open: each trade holds its entry bar through its exit bar,
    # both included (backtesting.py's "Exposure Time")
    exposure: float = 0.0

    def trades_frame(self) -> pd.DataFrame:
        """The trades as floats (one row each) for printing and vectorised checks."""
        cols = ["ghost_id", "ghost", "side", "signal_time", "entry_time", "entry_price", "exit_time",
                "exit_price", "qty", "entry_fee", "exit_fee", "fees", "gross_pnl", "net_pnl", "reason"]
        rows = [(t.ghost_id, t.ghost, t.side, t.signal_time, t.entry_time, float(t.entry_price), t.exit_time,
                 float(t.exit_price), float(t.qty), float(t.entry_fee), float(t.exit_fee), float(t.fees),
                 float(t.gross_pnl), float(t.net_pnl), t.reason) for t in self.trades]
        return pd.DataFrame(rows, columns=cols)

    def fate_counts(self) -> pd.DataFrame:
        """Drafts per ghost (rows) and fate (columns)."""
        if len(self.fates) == 0:
            return pd.DataFrame()
        return self.fates.groupby(["ghost", "fate"]).size().unstack(fill_value=0)

    def summary(self) -> str:
        """Multi-line operator text: signals and idle reasons per ghost, fates, trades, P&L, disables."""
        lines = [f"capital {self.start_capital} -> final equity {self.final_equity:.2f} "
                 f"(net {self.final_equity - self.start_capital:+.2f}) over {len(self.equity)} bars"]
        for name, row in self.signals.iterrows():
            idle = f"; idle: {row['idle_reason']}" if row["longs"] + row["shorts"] == 0 else ""
            lines.append(f"  {name}: {row['longs']} long + {row['shorts']} short drafts{idle}")
        fc = self.fate_counts()
        if len(fc):
            lines.append("fates:\n" + fc.to_string())
        tf = self.trades_frame()
        lines.append(f"trades {len(tf)}, fees {tf['fees'].sum():.2f}, net {tf['net_pnl'].sum():+.2f}")
        for name, p in self.performance.items():
            if p.trades:
                lines.append(f"  {name}: {p.trades} trades, win rate {p.win_rate:.0%}, PF {p.profit_factor:.2f}, "
                             f"net {p.net_pnl:+.2f}, max DD {p.max_drawdown:.2%}")
        for e in self.disables:
            lines.append(f"auto-disabled {e.ghost} at {e.time}: {'; '.join(e.reasons)}")
        if self.kill_switch:
            lines.append(f"kill switch tripped at {self.kill_switch[0]}: {self.kill_switch[1]}")
        if self.unfilled:
            lines.append(f"taken on the last bar, no next open to fill: {list(self.unfilled)}")
        return "\n".join(lines)


@dataclasses.dataclass
class _Open:
    """An open position (mutable only in the walk)."""

    setup: GhostSetup
    side: int
    signal_time: pd.Timestamp
    entry_i: int
    entry_ns: int
    entry_price: Decimal
    entry_f: float
    qty: Decimal
    qty_f: float
    stop: float
    target: float
    max_hold_s: float
    entry_fee: Decimal


_FATE_COLUMNS = ["bar_time", "ghost_id", "ghost", "side", "fate", "detail", "score"]


def _fates_frame(idx: pd.DatetimeIndex, names: Mapping[int, str], rows: list[tuple],
                 parts: list[tuple[np.ndarray, int, np.ndarray, str, str]]) -> pd.DataFrame:
    """One row per draft: the walk's decisions `rows` (bar position, ghost id, side, fate, detail, score) and
    the fates decided in bulk `parts` (bar positions, ghost id, sides, fate, detail; no score), in bar order,
    ghosts in id order within a bar (one draft per ghost and bar). Built by column: the same frame as from
    the rows with their boxed bar times, without boxing a Timestamp per draft."""
    pos = [np.array([r[0] for r in rows], dtype=np.int64)] + [p[0] for p in parts]
    if sum(len(p) for p in pos) == 0:
        return pd.DataFrame([], columns=_FATE_COLUMNS)
    gid = [np.array([r[1] for r in rows], dtype=np.int64)] + [np.full(len(p[0]), p[1], dtype=np.int64) for p in parts]
    side = [np.array([r[2] for r in rows], dtype=np.int64)] + [np.asarray(p[2], dtype=np.int64) for p in parts]
    score = [np.array([r[5] for r in rows], dtype=np.float64)] + [np.full(len(p[0]), np.nan) for p in parts]
    fate = np.empty(sum(len(p) for p in pos), dtype=object)
    detail = np.empty(len(fate), dtype=object)
    fate[:len(rows)] = [r[3] for r in rows]
    detail[:len(rows)] = [r[4] for r in rows]
    at = len(rows)
    for p in parts:
        fate[at:at + len(p[0])] = p[3]
        detail[at:at + len(p[0])] = p[4]
        at += len(p[0])
    pos_a, gid_a = np.concatenate(pos), np.concatenate(gid)
    order = np.lexsort((gid_a, pos_a))
    gid_s = gid_a[order]
    return pd.DataFrame({
        "bar_time": idx[pos_a[order]], "ghost_id": gid_s, "ghost": [names[g] for g in gid_s.tolist()],
        "side": np.concatenate(side)[order], "fate": fate[order].tolist(), "detail": detail[order].tolist(),
        "score": np.concatenate(score)[order],
    }, columns=_FATE_COLUMNS)


def _gate_label(direction: int, regime: int, ready: bool) -> str:
    """The label text of `apps.runtime.manager.trend_gate` for one trend_state row."""
    from apps.engine.trend import DIRECTION_NAMES, REGIME_NAMES

    return f"{DIRECTION_NAMES[direction]} / {REGIME_NAMES[regime]}" if ready else "trend filter warming up"


def _ghost_performance(closed: list[tuple[pd.Timestamp, float]], capital: float, freq: str) -> Performance:
    """`revenue.selectors.ghost_performance` on the simulated ledger (no revenue target in a backtest):
    equity = capital, then capital + cumulative net P&L at each close (data time)."""
    pnls = [p for _, p in closed]
    if closed:
        times = pd.DatetimeIndex([closed[0][0]] + [t for t, _ in closed])
        levels = [capital] + list(capital + np.cumsum(pnls))
    else:
        times, levels = pd.DatetimeIndex([], tz="UTC"), []
    return performance(pnls, pd.Series(levels, index=times, dtype="float64"), freq=freq)


class _Closes:
    """One ghost's closes in the walk: exit bar open times (int64 ns) and net P&L, in arrays grown by doubling
    (its figures are recomputed after each close: arrays spare numpy converting the growing lists each time)."""

    def __init__(self) -> None:
        self.ns = np.empty(16, dtype=np.int64)
        self.pnl = np.empty(16, dtype=np.float64)
        self.k = 0

    def append(self, t_ns: int, pnl: float) -> None:
        if self.k == len(self.ns):
            self.ns = np.concatenate((self.ns, np.empty_like(self.ns)))
            self.pnl = np.concatenate((self.pnl, np.empty_like(self.pnl)))
        self.ns[self.k] = t_ns
        self.pnl[self.k] = pnl
        self.k += 1

    def performance(self, capital: float, freq: str) -> Performance:
        return _ghost_performance_ns(self.ns[:self.k], self.pnl[:self.k], capital, freq)


def _ghost_performance_ns(t_ns: Sequence[int] | np.ndarray, pnls: Sequence[float] | np.ndarray, capital: float,
                          freq: str) -> Performance:
    """`_ghost_performance` of closes at `t_ns` (int64 ns, in time order) with net P&L `pnls`: the same
    figures, bit for bit, without pandas for the desk's daily sampling (a resample per close cost ~1.5 ms,
    90 % of a long lab run's walk)."""
    if freq != "1D" or len(pnls) == 0:
        return _ghost_performance([(pd.Timestamp(t, tz="UTC"), p) for t, p in zip(
            np.asarray(t_ns, dtype=np.int64).tolist(), np.asarray(pnls, dtype=np.float64).tolist(), strict=True)],
            capital, freq)
    levels = np.empty(len(pnls) + 1, dtype=np.float64)
    levels[0] = capital
    levels[1:] = capital + np.cumsum(pnls)
    times = np.empty(len(pnls) + 1, dtype=np.int64)
    times[0] = t_ns[0]
    times[1:] = t_ns
    return performance_of(pnls, levels, sample_returns_daily(times, levels), PERIODS_PER_YEAR["1D"])


def _signals_table(ghosts: Sequence[GhostSetup], drafts: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for g in ghosts:
        d = drafts[g.ghost_id]
        side = d["side"].to_numpy()
        rows.append({"ghost": g.name, "longs": int((side > 0).sum()), "shorts": int((side < 0).sum()),
                     "idle_reason": _last_idle_reason(side, d["reason"])})
    return pd.DataFrame(rows, columns=["ghost", "longs", "shorts", "idle_reason"]).set_index("ghost")


def _last_idle_reason(side: np.ndarray, reason: pd.Series) -> str:
    """The reason of the LAST bar without a draft that says one ("" if none): a ghost idle for lack of data
    says so on every bar, and a counted mode over 130k strings would cost more than the whole walk. Searched
    backwards in growing blocks (a busy ghost's last idle reason is near the end; comparing all 130k strings
    costs ~1 ms a ghost)."""
    hi, size = len(side), 256
    while hi > 0:
        lo = max(0, hi - size)
        r = reason.iloc[lo:hi].to_numpy(dtype=object)
        said = np.flatnonzero((side[lo:hi] == 0) & (r != ""))
        if len(said):
            return str(r[said[-1]])
        hi, size = lo, size * 4
    return ""


Progress = Callable[[str, int, int], None]
PROGRESS_EVERY = 2_000  # bars of the walk between two progress calls


class GhostDrafts(dict[int, pd.DataFrame]):
    """`evaluate_ghosts`' result: ghost id -> drafts frame, plus the trend states the evaluation computed
    (trend_state per TrendConfig) and the validated bars they were computed from, so run_backtest can take
    its trend gate from them instead of computing it again. `gate_for` hands one out only when the bars
    given to run_backtest still hold exactly the values validated here (a dict otherwise)."""

    def __init__(self, frames: Mapping[int, pd.DataFrame], bars: pd.DataFrame, valid: pd.DataFrame,
                 trend: Mapping[Any, pd.DataFrame]) -> None:
        super().__init__(frames)
        self._source = (bars, valid)
        self._trend = dict(trend)

    def gate_for(self, bars: pd.DataFrame, trend_cfg: Any) -> pd.DataFrame | None:
        """trend_state(bars, trend_cfg) when computed by the evaluation on these very bars, else None.

        "These very bars": the same frame object, with the same index object and the same contract columns,
        each bit for bit what validation produced (float64 as validate_bars converts it): validating and
        computing again would give the same frame (~1 ms of comparisons instead of ~15 ms)."""
        from apps.engine.types import BAR_COLUMNS

        frame = self._trend.get(trend_cfg)
        source, valid = self._source
        if frame is None or bars is not source or bars.index is not source.index or bars.columns.has_duplicates:
            return None
        for c in BAR_COLUMNS:
            if c not in bars.columns:
                if not np.isnan(valid[c].to_numpy()).all():
                    return None
                continue
            try:
                a = np.asarray(bars[c].to_numpy(), dtype=np.float64)
            except (TypeError, ValueError):
                return None
            if not np.array_equal(a.view(np.int64), valid[c].to_numpy().view(np.int64)):
                return None
        return frame


def evaluate_ghosts(bars: pd.DataFrame, ghosts: Sequence[GhostSetup], progress: Progress | None = None
                    ) -> GhostDrafts:
    """Each ghost's drafts frame over the whole series (one causal, vectorised call per ghost), keyed by
    ghost id in the order of `ghosts`; `progress("evaluate", k, len(ghosts))` after each.

    The bars are validated once and the trend and CVD states are shared between the ghosts that need them
    (`apps.engine.batch`'s shared path, which the desk's evaluate_all uses): each frame equals
    `get_spec(kind).evaluate(bars, config)` exactly (tests/engine/test_batch.py), at about 70 % of the cost
    with every ghost busy. Pass all the ghosts in one call to share; an exception propagates as raised.
    The result (a dict) also carries the trend states for run_backtest's gate (`GhostDrafts`).
    """
    from apps.engine.bars import validate_bars
    from apps.engine.batch import _ORDER, _ghost_fn, _Shared

    configs = {g.ghost_id: g.resolved_config() for g in ghosts}
    valid = validate_bars(bars)
    shared = _Shared(valid)
    out: dict[int, pd.DataFrame] = {}
    # the trend filter and the CVD detector first, so the gated ghosts reuse their states
    for k, g in enumerate(sorted(ghosts, key=lambda s: _ORDER.get(s.kind, 2)), start=1):
        # a shallow, copy-on-write copy marked as validated per ghost: nothing one ghost does reaches another
        out[g.ghost_id] = _ghost_fn(g.kind, shared)(validate_bars(valid), configs[g.ghost_id])
        if progress is not None:
            progress("evaluate", k, len(ghosts))
    trend = {c: st.frame for c, st in shared.trend.items() if st is not None}
    return GhostDrafts({g.ghost_id: out[g.ghost_id] for g in ghosts}, bars, valid, trend)


def run_backtest(
    bars: pd.DataFrame,
    ghosts: Sequence[GhostSetup] | None = None,
    cfg: BacktestConfig = BacktestConfig(),
    *,
    drafts: Mapping[int, pd.DataFrame] | None = None,
    progress: Progress | None = None,
    gate_state: pd.DataFrame | None = None,
) -> BacktestResult:
    """Run the whole system over `bars` (the engine's bars contract: UTC open times, 1-minute, float64).

    `ghosts` defaults to every registered ghost at its defaults. `drafts` (ghost id -> drafts frame on
    `bars.index`) skips the evaluation, for callers that already evaluated or for hand-built cases.
    `progress(stage, done, total)`, when given, is called with ("evaluate", k, n_ghosts) after each ghost's
    evaluation (not when `drafts` are given), ("walk", bar index, n_bars) at most every PROGRESS_EVERY bars
    of the walk and ("walk", n_bars, n_bars) at its end. An exception it raises propagates (the lab's
    cancel): the engine never swallows it.
    `gate_state`: the trend gate (`trend.trend_state(bars, <the set's trend_filter config>)`) when the caller
    already has it (a parameter study computes it once per study, not once per trial); None takes it from
    `drafts` when evaluate_ghosts computed it on these bars (`GhostDrafts.gate_for`), else computes it.
    """
    ghosts = tuple(default_ghosts() if ghosts is None else ghosts)
    ids = [g.ghost_id for g in ghosts]
    if len(set(ids)) != len(ids):
        raise ValueError(f"ghost ids must be unique, got {ids}")
    n = len(bars)
    if n == 0:
        raise ValueError("no bars to backtest")
    if drafts is None:
        drafts = evaluate_ghosts(bars, ghosts, progress)
    for g in ghosts:
        if g.ghost_id not in drafts or len(drafts[g.ghost_id]) != n:
            raise ValueError(f"drafts of ghost {g.ghost_id} ({g.name}) missing or not aligned with the bars")

    model, limits, mcfg, sizing = cfg.model, cfg.limits, cfg.manager, cfg.sizing
    lots = cfg.lots
    ticked = lots is not None and lots.price_tick is not None  # prices go on the tick grid only when it is known
    capital = cfg.start_capital
    capital_f = float(capital)
    idx = bars.index
    t_ns_arr = pd.DatetimeIndex(idx).as_unit("ns").asi8  # pandas 3 may hold us/s resolution
    # The walk reads single values: memoryviews hand out Python floats / ints without a copy of the columns
    # (numpy scalar indexing + float() costs ~3x as much per read, on up to every bar).
    t_ns = memoryview(np.ascontiguousarray(t_ns_arr))
    opens, highs, lows, closes = (memoryview(np.ascontiguousarray(bars[c].to_numpy(np.float64)))
                                  for c in ("open", "high", "low", "close"))

    trend_setup = next((g for g in ghosts if g.kind == TREND_KIND), None)
    if trend_setup is None:
        gate_state = None
    else:
        from apps.engine.trend import trend_state

        if gate_state is None and isinstance(drafts, GhostDrafts):
            gate_state = drafts.gate_for(bars, trend_setup.resolved_config())
        if gate_state is None:
            gate_state = trend_state(bars, trend_setup.resolved_config())
        elif len(gate_state) != n:
            raise ValueError(f"gate_state has {len(gate_state)} rows for {n} bars")
        g_long, g_short = gate_state["allow_long"].to_numpy(bool), gate_state["allow_short"].to_numpy(bool)
        g_ml = gate_state["size_mult_long"].to_numpy(np.float64)
        g_ms = gate_state["size_mult_short"].to_numpy(np.float64)
        g_dir, g_reg = gate_state["direction"].to_numpy(np.int64), gate_state["regime"].to_numpy(np.int64)
        g_ready = gate_state["ready"].to_numpy(bool)
    no_gate = TrendGate(label="no trend filter in the ghost set")

    # Candidate drafts per bar position, ghosts in id order (arbitrate keeps the candidates' order): (ghost, k),
    # the ghost's k-th candidate draft. A draft on the side its ghost's direction leaves out is no candidate:
    # its fate is direction_off at once. A disabled ghost's drafts are no candidates either: their fate is
    # ghost_disabled whatever the bar holds (the manager's first rule), so they leave by_bar when their ghost
    # is disabled (`disable`), and a bar left without candidates is walked like any bar without a draft
    # (the daily loss is still judged whenever equity is below the day's start: a limit > 0 cannot be
    # breached otherwise). Fates are kept as (bar position, ghost id, side, fate, detail, score) parts and
    # become one frame at the end, in bar order, ghosts in id order within a bar.
    by_bar: dict[int, list[tuple[GhostSetup, int]]] = {}
    fate_parts: list[tuple[np.ndarray, int, np.ndarray, str, str]] = []  # bulk fates: positions, ghost, sides...
    first = 0 if cfg.trade_from is None else int(idx.searchsorted(pd.Timestamp(cfg.trade_from)))
    if first >= n:
        raise ValueError(f"no bars at or after trade_from {cfg.trade_from}")
    enabled = {g.ghost_id: g.enabled for g in ghosts}
    cand_pos: dict[int, np.ndarray] = {}  # ghost id -> bar positions of its candidate drafts
    cand_cols: dict[int, list[list]] = {}  # ghost id -> the drafts' values there, as Python values (tolist)
    cand_times: dict[tuple[int, int], list[pd.Timestamp]] = {}  # (ghost id, k // 64) -> bar times, boxed in bulk
    for g in sorted(ghosts, key=lambda s: s.ghost_id):
        d = drafts[g.ghost_id]
        side = d["side"].to_numpy()
        if g.direction == "both":
            pos = np.flatnonzero(side[first:] != 0) + first
        else:
            keep = 1 if g.direction == "long" else -1
            off = np.flatnonzero(side[first:] == -keep) + first
            detail = f"{g.direction} only: {'short' if keep > 0 else 'long'} drafts are not traded"
            fate_parts.append((off, g.ghost_id, np.full(len(off), -keep), DIRECTION_OFF, detail))
            pos = np.flatnonzero(side[first:] == keep) + first
        if len(pos) == 0:
            continue
        cand_pos[g.ghost_id] = pos
        cand_cols[g.ghost_id] = [d[c].to_numpy()[pos].tolist() for c in (
            "side", "confidence", "priority", "entry", "stop", "target", "size_mult", "max_hold_s", "reason")]
        if not enabled[g.ghost_id]:
            fate_parts.append((pos, g.ghost_id, side[pos], GHOST_DISABLED, DISABLED_DETAIL))
            continue
        for k, p in enumerate(pos.tolist()):
            by_bar.setdefault(p, []).append((g, k))

    def draft(g: GhostSetup, k: int) -> Draft:
        """The ghost's k-th candidate draft as the manager sees it (made when its bar is decided)."""
        gid = g.ghost_id
        key = (gid, k >> 6)
        times = cand_times.get(key)
        if times is None:  # a Timestamp per idx[p] costs ~3-9 us; boxed 64 at a time, a fraction of that
            times = cand_times[key] = idx[cand_pos[gid][k & ~63:(k | 63) + 1]].tolist()
        side, conf, prio, entry, stop, target, mult, hold, reason = (c[k] for c in cand_cols[gid])
        return Draft(side=side, confidence=conf, priority=prio, entry=entry, stop=stop, target=target, size_mult=mult,
                     max_hold_s=hold, reason=str(reason), bar_time=times[k & 63])

    # each ghost's closes: exit bar open times (int64 ns), net P&L, and its cumulative P&L curve from 0
    closes_of: dict[int, _Closes] = {g.ghost_id: _Closes() for g in ghosts}
    curves: dict[int, list[float]] = {g.ghost_id: [0.0] for g in ghosts}
    drawdown: dict[int, tuple[float, float]] = {g.ghost_id: (0.0, 0.0) for g in ghosts}  # (peak, max dd)
    dd_stop = capital_f * limits.ghost_drawdown_stop_pct / 100
    scores: dict[int, float] = {g.ghost_id: 0.5 for g in ghosts}  # neutral until a record exists
    perf_cache: dict[int, Performance] = {}  # each ghost's figures after its latest close
    opened: list[_Open] = []
    pending: tuple[GhostSetup, Draft, Decision, int] | None = None  # ..., its row in fate_rows
    trades: list[Trade] = []
    fate_rows: list[tuple] = []  # the walk's decisions: (bar position, ghost id, side, fate, detail, score)
    disables: list[DisableEvent] = []
    kill: tuple[pd.Timestamp, str] | None = None
    unfilled: list[tuple[pd.Timestamp, int]] = []

    cash = capital  # start + realised gross - fees paid (Decimal, the ledger)
    realised_net = Decimal(0)  # sum of closed trades' net P&L
    day_start_equity = capital_f
    cur_day = None
    entries_today = 0
    equity = np.empty(n, dtype=np.float64)
    cash_f = capital_f
    held = np.zeros(n + 1, dtype=np.int32)  # +1 at each entry bar, -1 after each exit bar: exposure
    next_report = PROGRESS_EVERY

    def close(p: _Open, i: int, ref: float, reason: str) -> None:
        nonlocal cash, cash_f, realised_net
        exit_px = model.exit_fill(p.side, ref, reason)
        if ticked:  # as the paper close: the exit on the nearest tick (apps.trading.services.position_close)
            exit_px = float(price_round(exit_px, lots))
        exit_price = _d(exit_px)
        fee = _d(model.fee(exit_px * p.qty_f))
        gross = ((exit_price - p.entry_price) * p.qty * p.side).quantize(STEP)
        t = Trade(ghost_id=p.setup.ghost_id, ghost=p.setup.name, side=p.side, signal_time=p.signal_time,
                  entry_time=idx[p.entry_i], entry_price=p.entry_price, exit_time=idx[i],
                  exit_price=exit_price, qty=p.qty, stop=p.stop, target=p.target, entry_fee=p.entry_fee, exit_fee=fee,
                  gross_pnl=gross, reason=reason)
        trades.append(t)
        cash += gross - fee
        cash_f = float(cash)
        realised_net += t.net_pnl
        gid, pnl = p.setup.ghost_id, float(t.net_pnl)
        closes_of[gid].append(t_ns[i], pnl)
        curve = curves[gid]
        curve.append(curve[-1] + pnl)  # == np.cumsum (sequential) of the P&L, from 0.0
        held[p.entry_i] += 1
        held[i + 1] -= 1

    def review(g: GhostSetup, i: int) -> None:
        """`revenue.services.ghost_review` after a close: auto-disable rules + per-ghost drawdown stop."""
        gid = g.ghost_id
        perf = perf_cache[gid] = closes_of[gid].performance(capital_f, cfg.perf_freq)
        scores[gid] = performance_score(perf, cfg.score_weights)
        curve = curves[gid]
        # the running peak and max drawdown of ghost_drawdown_breached, kept incrementally (same float ops)
        peak, dd = drawdown[gid]
        peak = max(peak, curve[-1])
        dd = max(dd, peak - curve[-1])
        drawdown[gid] = (peak, dd)
        if not enabled[gid] or not cfg.auto_disable:
            return
        reasons = rules_breached(perf, g.auto_disable)
        if dd >= dd_stop:  # the text (and the same verdict) from the one function, only when it trips
            text = ghost_drawdown_breached(curve, capital_f, limits)
            if text:
                reasons.append(text)
        if reasons:
            enabled[g.ghost_id] = False
            disables.append(DisableEvent(time=idx[i], ghost_id=g.ghost_id, ghost=g.name, reasons=tuple(reasons)))
            disable(g, i)

    def disable(g: GhostSetup, i: int) -> None:
        """Ghost g was disabled during bar i (before its decisions): its drafts from bar i on are no candidates;
        their fate is the manager's ghost_disabled."""
        nonlocal draft_bars
        gid = g.ghost_id
        pos = cand_pos.get(gid)
        if pos is None:
            return
        k0 = int(np.searchsorted(pos, i))
        if k0 == len(pos):
            return
        fate_parts.append((pos[k0:], gid, np.asarray(cand_cols[gid][0][k0:], dtype=np.int64), GHOST_DISABLED,
                           DISABLED_DETAIL))
        for p in pos[k0:].tolist():
            here = by_bar[p]
            if len(here) == 1:  # (most bars hold one draft)
                del by_bar[p]
            else:
                by_bar[p] = [c for c in here if c[0] is not g]
        draft_bars = sorted(by_bar)

    draft_bars = sorted(by_bar)
    i = -1
    while i + 1 < n:
        i += 1
        if pending is None and not opened:
            # nothing open, nothing to fill: the equity stays flat until the next bar with a draft
            k = bisect.bisect_left(draft_bars, i)
            j = draft_bars[k] if k < len(draft_bars) else n
            if j > i:
                equity[i:j] = cash_f
                i = j
                if i >= n:
                    break
        if progress is not None and i >= next_report:
            progress("walk", i, n)
            next_report = (i // PROGRESS_EVERY + 1) * PROGRESS_EVERY
        if t_ns[i] // _DAY_NS != cur_day:  # the UTC day of the bar's open (walked bars only)
            cur_day = t_ns[i] // _DAY_NS
            entries_today = 0
            day_start_equity = float(capital + realised_net)  # the live selector's start-of-day equity

        # a. the entry decided at the previous close fills at this open
        if pending is not None:
            g, dr, dec, row = pending
            pending = None
            fill_px = model.entry_fill(dr.side, opens[i])
            if ticked:  # the order of apps.trading.services.signal_execute_paper: fill, levels, then the lot
                fill_px = float(price_round(fill_px, lots))
            stop_f, target_f = rebase_levels(dr.entry, dr.stop, dr.target, fill_px)
            if ticked:  # the stop never tighter than decided (away from the fill), the target on the nearest tick
                stop_f = float(price_round(stop_f, lots, away_from=fill_px))
                target_f = float(price_round(target_f, lots))
            qty = _d(quantity_at_fill(dec.quantity, dr.entry, fill_px))  # the decided notional, at the fill
            if lots is not None and qty > 0:
                lot = lot_size(qty, fill_px, lots)
                if lot.ok:
                    qty = lot.quantity
                else:  # refused at the fill, as paper refuses it: the draft was taken, no position opened
                    r = fate_rows[row]
                    fate_rows[row] = (r[0], r[1], r[2], BLOCKED_RISK, f"lot: {lot.detail}", r[5])
                    qty = Decimal(0)
            if qty > 0:
                fee = _d(model.fee(fill_px * float(qty)))
                price = _d(fill_px)
                cash -= fee
                cash_f = float(cash)
                entries_today += 1
                opened.append(_Open(setup=g, side=dr.side, signal_time=dr.bar_time, entry_i=i, entry_ns=t_ns[i],
                                    entry_price=price, entry_f=float(price), qty=qty, qty_f=float(qty), stop=stop_f,
                                    target=target_f, max_hold_s=dr.max_hold_s, entry_fee=fee))

        # b. exits, in the order of exits.simulate_trade; c. review each ghost that closed
        if opened:
            still: list[_Open] = []
            closed_now: list[GhostSetup] = []
            for p in opened:
                time_due = i > p.entry_i and math.isfinite(p.max_hold_s) and \
                    (t_ns[i] - p.entry_ns) / 1e9 >= p.max_hold_s  # == exits.due in data time
                hit = bar_check(p.side, p.stop, p.target, opens[i], highs[i], lows[i], time_due=time_due)
                if hit is None:
                    still.append(p)
                else:
                    close(p, i, hit[0], hit[1])
                    closed_now.append(p.setup)
            opened = still
            for g in closed_now:
                review(g, i)

        # d. mark to the close; the daily loss trips the kill switch, which stays tripped
        cands = by_bar.get(i)  # after b: a ghost disabled there has no candidate left
        close_i = closes[i]
        if len(opened) == 1:  # the sum below, without its generator (0 + the one mark: the same float)
            p = opened[0]
            marks = 0 + p.side * p.qty_f * (close_i - p.entry_f)
        else:
            marks = sum(p.side * p.qty_f * (close_i - p.entry_f) for p in opened)
        eq = cash_f + marks
        # the risk state is needed for this bar's decisions, or when the daily loss trips the kill switch (only
        # possible with equity below the day's start, as the limit is > 0): most bars with a position need neither
        if cands is None and not (kill is None and cfg.kill_switch and eq < day_start_equity
                                  and daily_loss_hit(eq, day_start_equity, limits)):
            equity[i] = eq
            continue
        by_ghost: dict[int, int] = {}
        for p in opened:
            by_ghost[p.setup.ghost_id] = by_ghost.get(p.setup.ghost_id, 0) + 1
        # the open notional at this close, for the notional caps (one instrument: total = per instrument)
        state = RiskState(equity=eq, day_start_equity=day_start_equity, open_positions=len(opened),
                          open_by_ghost=by_ghost, trades_today=entries_today, kill_switch=kill is not None,
                          open_notional=sum(p.qty_f for p in opened) * close_i)
        if kill is None and cfg.kill_switch and daily_loss_breached(state, limits):
            kill = (idx[i], daily_loss_text(state, limits))
            state = dataclasses.replace(state, kill_switch=True)
            if limits.flatten_on_kill and opened:
                for p in opened:
                    close(p, i, closes[i], KILL_SWITCH)
                flat = [p.setup for p in opened]
                opened = []
                for g in flat:
                    review(g, i)
                eq = cash_f
                state = dataclasses.replace(state, equity=eq, open_positions=0, open_by_ghost={},
                                            open_notional=0.0)
        equity[i] = eq

        # e. the manager decides on this bar's drafts
        cands = by_bar.get(i)  # again: a ghost disabled by the kill switch's flattening has none left
        if cands is None:
            continue
        cand_drafts = [(g, draft(g, k)) for g, k in cands]
        candidates = [Candidate(ghost_id=g.ghost_id, ghost_name=g.name, draft=dr, enabled=enabled[g.ghost_id],
                                performance_score=scores[g.ghost_id] if enabled[g.ghost_id] else 0.5)
                      for g, dr in cand_drafts]

        def risk(c: Candidate, size_mult: float, _state: RiskState = state) -> RiskDecision:
            verdict = risk_check(ghost_id=c.ghost_id, entry=c.draft.entry, stop=c.draft.stop, size_mult=size_mult,
                                 state=_state, limits=limits, daily_loss=cfg.kill_switch)
            if verdict.ok and sizing.mode != "risk":
                # the limits passed; the size is the fixed notional at the reference entry (kept at the fill)
                notional = sizing.notional(_state.equity)
                qty = notional / c.draft.entry if notional > 0 and c.draft.entry > 0 else 0.0
                if not (qty > 0 and math.isfinite(qty)):
                    return RiskDecision(False, limit="size", detail=f"size 0 ({sizing.mode} notional {notional:.2f})")
                verdict = RiskDecision(True, quantity=qty)
            return verdict

        if gate_state is None:
            gate = no_gate
        else:
            gate = TrendGate(allow_long=bool(g_long[i]), allow_short=bool(g_short[i]), size_mult_long=float(g_ml[i]),
                             size_mult_short=float(g_ms[i]),
                             label=_gate_label(int(g_dir[i]), int(g_reg[i]), bool(g_ready[i])))
        decisions = arbitrate(candidates, now_s=(t_ns[i] + _MINUTE_NS) / 1e9, trend=gate, risk=risk, cfg=mcfg)
        for (g, dr), dec in zip(cand_drafts, decisions, strict=True):
            fate_rows.append((i, g.ghost_id, dr.side, dec.fate, dec.detail, dec.score))
            if dec.fate == TAKEN:
                if i + 1 < n:
                    pending = (g, dr, dec, len(fate_rows) - 1)
                else:
                    unfilled.append((dr.bar_time, g.ghost_id))

    # a trade still open at the end of the data closes at the last close, marked as such
    for p in opened:
        close(p, n - 1, closes[n - 1], END_OF_DATA)
    equity[n - 1] = cash_f

    if progress is not None:
        progress("walk", n, n)

    perf = {g.name: perf_cache.get(g.ghost_id) or closes_of[g.ghost_id].performance(capital_f, cfg.perf_freq)
            for g in ghosts}
    fates = _fates_frame(idx, {g.ghost_id: g.name for g in ghosts}, fate_rows, fate_parts)
    exposure = float(np.count_nonzero(np.cumsum(held[:n])[first:]) / (n - first))
    return BacktestResult(
        ghosts=ghosts, start_capital=capital, final_equity=cash, trades=tuple(trades), fates=fates,
        equity=pd.Series(equity[first:], index=idx[first:], name="equity"), performance=perf, disables=tuple(disables),
        kill_switch=kill, unfilled=tuple(unfilled), signals=_signals_table(ghosts, drafts), exposure=exposure,
    )


