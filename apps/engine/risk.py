"""Risk rules, pure: the same checks guard backtests, paper and live (DESIGN §4, issue 5).

The prototype's risk managers were never called, compared a 2 % "risk" with notional, blocked every
second position for "concentration", and cleared the kill switch at midnight (prototype-notes §6).
Here:

- size = equity x risk_per_trade_pct % / stop distance x trend multiplier x confidence multiplier,
  capped at max_notional_pct % of equity in notional (apps.engine.sizing.position_size);
- a new entry is refused, with the limit named, when the kill switch is tripped, when open positions
  overall or for the ghost are at their caps, when today's trades reached max_trades_per_day, or when
  the size comes out zero;
- the daily loss limit is max_daily_loss_pct % of START-OF-DAY equity, on realised + unrealised P&L
  since the day began (UTC); reaching it trips the kill switch, which stays tripped until an operator
  resets it (`daily_loss_breached` only reports; resetting is never automatic);
- a ghost whose own drawdown (peak-to-now of its cumulative P&L, in % of start capital) reaches
  ghost_drawdown_stop_pct is disabled.

Across instruments (issue 11): max_open_positions counts the open positions of every instrument; the open
notional of every instrument (quantity x last price, in the account currency) is capped in total
(max_total_notional_pct) and per instrument (max_instrument_notional_pct), both in % of equity and off at 0.
The new position's own notional counts: a draft whose size would take the total past its cap is refused
(never shrunk to fit: the operator sees the cap that bound). Money is in the account currency: a
position quoted in USDT, USD or USDC counts 1:1 (the desk treats those as one dollar, and ignores the stable
coins' small deviations); any other quote currency is refused (`quote_rate` is None), because the ledger
books P&L in the quote currency and would add BTC to USDT.
"""

import dataclasses
import math

from apps.engine.sizing import position_size
from apps.engine.types import GhostConfig, check_range


@dataclasses.dataclass(frozen=True)
class RiskLimits(GhostConfig):
    """Risk limits; percentages are percent (1.0 = 1 %).

    - risk_per_trade_pct (% of equity; 1.0): lost if the stop is hit, before fees.
    - max_notional_pct (% of equity; 10.0): cap on one position's notional.
    - max_open_positions (positions; 3): open at once over all ghosts and instruments.
    - max_open_per_ghost (positions; 1): open at once per ghost.
    - max_trades_per_day (entries per UTC day; 50).
    - max_daily_loss_pct (% of start-of-day equity; 3.0): realised + unrealised; trips the kill switch.
    - ghost_drawdown_stop_pct (% of start capital; 5.0): a ghost's own drawdown that disables it.
    - flatten_on_kill (bool; false): when the kill switch trips, also close open positions at market.
    - max_total_notional_pct (% of equity; 0 = no cap): open notional over every instrument, the new entry included.
    - max_instrument_notional_pct (% of equity; 0 = no cap): open notional on one instrument, the new entry included.
    """

    KIND = "risk"

    risk_per_trade_pct: float = 1.0
    max_notional_pct: float = 10.0
    max_open_positions: int = 3
    max_open_per_ghost: int = 1
    max_trades_per_day: int = 50
    max_daily_loss_pct: float = 3.0
    ghost_drawdown_stop_pct: float = 5.0
    flatten_on_kill: bool = False
    # Off by default: with the defaults the open-positions cap x the position cap (3 x 10 %) already bounds the
    # total at 30 %, and a backtest (one instrument) decides exactly as before.
    max_total_notional_pct: float = 0.0
    max_instrument_notional_pct: float = 0.0

    def __post_init__(self) -> None:
        k = self.KIND
        check_range(k, "risk_per_trade_pct", self.risk_per_trade_pct, 0, 10, lo_open=True, unit="% of equity")
        check_range(k, "max_notional_pct", self.max_notional_pct, 0, 100, lo_open=True, unit="% of equity")
        check_range(k, "max_open_positions", self.max_open_positions, 1, 100, unit="positions")
        check_range(k, "max_open_per_ghost", self.max_open_per_ghost, 1, 1, unit="positions (one per ghost)")
        check_range(k, "max_trades_per_day", self.max_trades_per_day, 1, 10_000, unit="trades")
        check_range(k, "max_daily_loss_pct", self.max_daily_loss_pct, 0, 50, lo_open=True, unit="% of equity")
        check_range(k, "ghost_drawdown_stop_pct", self.ghost_drawdown_stop_pct, 0, 100, lo_open=True,
                    unit="% of start capital")
        # up to 10x equity: futures are margined, a total above 100 % is leverage the operator chose
        check_range(k, "max_total_notional_pct", self.max_total_notional_pct, 0, 1000,
                    unit="% of equity, 0 = no cap")
        check_range(k, "max_instrument_notional_pct", self.max_instrument_notional_pct, 0, 1000,
                    unit="% of equity, 0 = no cap")


@dataclasses.dataclass(frozen=True)
class RiskState:
    """What the rules need to know right now; money in quote currency."""

    equity: float
    day_start_equity: float
    open_positions: int
    open_by_ghost: dict[int, int]
    trades_today: int
    kill_switch: bool
    # Open notional in the account currency (quantity x last price; entry price while no price is known), in
    # total and per instrument id. A backtest (one instrument) gives the total only.
    open_notional: float = 0.0
    open_notional_by_instrument: dict[int, float] = dataclasses.field(default_factory=dict)
    open_instruments: int = 0  # instruments holding the open positions, for the refusal's words


# Quote currencies counted 1:1 with a USD/USDT account (their deviation from the dollar is ignored).
DOLLARS = frozenset({"USD", "USDT", "USDC"})


def quote_rate(quote: str, account: str) -> float | None:
    """Account-currency units per unit of `quote`: 1.0 for the same currency or two dollars, else None
    (not converted: the caller refuses the entry and says why)."""
    q, a = quote.upper(), account.upper()
    if q == a or (q in DOLLARS and a in DOLLARS):
        return 1.0
    return None


@dataclasses.dataclass(frozen=True)
class Market:
    """The instrument a draft trades, as the cross-instrument rules need it."""

    instrument_id: int
    label: str  # "BTC/USDT on binance", for the refusal's words
    quote: str
    account: str = "USDT"


@dataclasses.dataclass(frozen=True)
class RiskDecision:
    """ok with a quantity (base units), or refused with the limit's name and operator text."""

    ok: bool
    quantity: float = 0.0
    limit: str = ""
    detail: str = ""


def risk_check(*, ghost_id: int, entry: float, stop: float, size_mult: float, state: RiskState,
               limits: RiskLimits, daily_loss: bool = True, market: Market | None = None) -> RiskDecision:
    """May this ghost open a position now, and how large (size_mult = trend x confidence multipliers)?

    `daily_loss=False` leaves the daily-loss limit out (a lab backtest with the kill switch off: the limit
    neither trips the switch nor blocks an entry); the desk always judges it. `market`: the instrument traded
    (the desk passes it; a backtest's one instrument is the whole book, so without it the per-instrument cap
    reads the total).
    """
    if state.kill_switch:
        return RiskDecision(False, limit="kill_switch", detail="kill switch is tripped: no new entries")
    rate = 1.0
    if market is not None:
        got = quote_rate(market.quote, market.account)
        if got is None:
            return RiskDecision(False, limit="currency",
                                detail=f"{market.label} is quoted in {market.quote}; P&L is kept in "
                                       f"{market.account} and {market.quote} is not converted: not traded")
        rate = got
    if state.open_positions >= limits.max_open_positions:
        where = f" on {state.open_instruments} instrument(s)" if state.open_instruments else ""
        return RiskDecision(False, limit="max_open_positions",
                            detail=f"{state.open_positions} positions open{where} >= limit "
                                   f"{limits.max_open_positions}")
    held = state.open_by_ghost.get(ghost_id, 0)
    if held >= limits.max_open_per_ghost:
        return RiskDecision(False, limit="max_open_per_ghost",
                            detail=f"ghost holds {held} open position(s) >= limit {limits.max_open_per_ghost}")
    if state.trades_today >= limits.max_trades_per_day:
        return RiskDecision(False, limit="max_trades_per_day",
                            detail=f"{state.trades_today} trades today >= limit {limits.max_trades_per_day}")
    if daily_loss and daily_loss_breached(state, limits):
        return RiskDecision(False, limit="max_daily_loss", detail=daily_loss_text(state, limits))
    qty = position_size(state.equity, entry, stop, risk_pct=limits.risk_per_trade_pct / 100,
                        max_notional_pct=limits.max_notional_pct / 100, size_mult=size_mult)
    if not (qty > 0 and math.isfinite(qty)):
        return RiskDecision(False, limit="size",
                            detail=f"size 0 (equity {state.equity:.2f}, entry {entry:g}, stop {stop:g}, "
                                   f"multiplier {size_mult:g})")
    refused = notional_refusal(qty * entry * rate, state=state, limits=limits, market=market)
    if refused is not None:
        return refused
    return RiskDecision(True, quantity=qty)


def notional_refusal(notional: float, *, state: RiskState, limits: RiskLimits,
                     market: Market | None = None) -> RiskDecision | None:
    """The refusal when a new position of `notional` (account currency) would take the open notional past the
    total or the instrument's cap; None when it fits (or the caps are off)."""
    unit = f" {market.account}" if market is not None else ""
    if limits.max_total_notional_pct > 0:
        cap = state.equity * limits.max_total_notional_pct / 100
        if state.open_notional + notional > cap:
            return RiskDecision(False, limit="max_total_notional",
                                detail=f"open notional {state.open_notional:.2f} + this {notional:.2f} = "
                                       f"{state.open_notional + notional:.2f}{unit} over every instrument "
                                       f"> limit {limits.max_total_notional_pct:g}% of equity ({cap:.2f})")
    if limits.max_instrument_notional_pct > 0:
        held = (state.open_notional_by_instrument.get(market.instrument_id, 0.0) if market is not None
                else state.open_notional)
        cap = state.equity * limits.max_instrument_notional_pct / 100
        if held + notional > cap:
            where = f" on {market.label}" if market is not None else ""
            return RiskDecision(False, limit="max_instrument_notional",
                                detail=f"open notional{where} {held:.2f} + this {notional:.2f} = "
                                       f"{held + notional:.2f}{unit} > limit "
                                       f"{limits.max_instrument_notional_pct:g}% of equity ({cap:.2f})")
    return None


def daily_loss_breached(state: RiskState, limits: RiskLimits) -> bool:
    """True when equity has fallen max_daily_loss_pct % or more below the start of the day."""
    return daily_loss_hit(state.equity, state.day_start_equity, limits)


def daily_loss_hit(equity: float, day_start_equity: float, limits: RiskLimits) -> bool:
    """daily_loss_breached from the two figures (a backtest judges it on bars where it needs no RiskState)."""
    if not (day_start_equity > 0):
        return False
    return day_start_equity - equity >= day_start_equity * limits.max_daily_loss_pct / 100


def daily_loss_text(state: RiskState, limits: RiskLimits) -> str:
    loss = state.day_start_equity - state.equity
    return (f"daily loss {loss:.2f} = {loss / state.day_start_equity:.2%} of start-of-day equity "
            f"{state.day_start_equity:.2f} >= limit {limits.max_daily_loss_pct:g}%")


def ghost_drawdown_breached(pnl_curve: list[float] | tuple[float, ...], start_capital: float,
                            limits: RiskLimits) -> str | None:
    """Operator text when the ghost's cumulative P&L fell ghost_drawdown_stop_pct % of capital from its peak."""
    if not pnl_curve or not start_capital > 0:
        return None
    peak = dd = 0.0
    for p in pnl_curve:
        peak = max(peak, p)
        dd = max(dd, peak - p)
    if dd >= start_capital * limits.ghost_drawdown_stop_pct / 100:
        return (f"ghost drawdown {dd:.2f} = {dd / start_capital:.2%} of capital {start_capital:.2f} "
                f">= stop {limits.ghost_drawdown_stop_pct:g}%")
    return None
