import math
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from itertools import accumulate

import numpy as np
import pandas as pd
from django.conf import settings
from django.db.models import F, FloatField, Sum

from apps.engine.performance import (
    PERIODS_PER_YEAR,
    Performance,
    performance,
    sample_returns_daily,
    sharpe_ratio,
    sortino_ratio,
)
from apps.ghosts.models import Ghost
from apps.revenue.models import GhostLedger, PnlDay, RevenueTarget


@dataclass(frozen=True)
class Progress:
    amount: Decimal | None  # target per period, quote currency; None = no target set
    period: str
    pnl: Decimal  # realised + unrealised over the period, net of fees

    @property
    def percent(self) -> float | None:
        """P&L as a percentage of the target (can be negative or above 100)."""
        if not self.amount:
            return None
        return float(self.pnl / self.amount * 100)

    @property
    def bar_percent(self) -> float:
        """Width of the progress bar, clamped to 0..100."""
        p = self.percent
        return 0.0 if p is None else max(0.0, min(100.0, p))


def portfolio_target() -> RevenueTarget | None:
    return RevenueTarget.objects.filter(ghost__isnull=True).first()


def targets_by_ghost() -> dict[int, RevenueTarget]:
    return {t.ghost_id: t for t in RevenueTarget.objects.filter(ghost__isnull=False)}


@dataclass(frozen=True)
class TargetOwner:
    """One editable row of the targets page: the portfolio (ghost None) or one ghost."""

    key: str  # "portfolio" or the ghost id, as posted by the form
    label: str
    ghost: Ghost | None
    target: RevenueTarget | None


def target_owners(*, instrument_id: int | None = None) -> list[TargetOwner]:
    """The portfolio first, then every ghost by name (only the ghosts trading `instrument_id` when given: the
    targets page's instrument filter), each with its target (or None). Two queries."""
    targets = {t.ghost_id: t for t in RevenueTarget.objects.all()}
    rows = [TargetOwner(key="portfolio", label="Portfolio", ghost=None, target=targets.get(None))]
    ghosts = Ghost.objects.select_related("instrument").order_by("name")
    if instrument_id:
        ghosts = ghosts.filter(instrument_id=instrument_id)
    for g in ghosts:
        rows.append(TargetOwner(key=str(g.pk), label=g.name, ghost=g, target=targets.get(g.pk)))
    return rows


def portfolio_progress() -> Progress:
    """The whole portfolio's net P&L over its target period (day when no target) against the target."""
    from apps.market.selectors import desk_now
    from apps.trading.selectors import period_start, pnl_since

    t = portfolio_target()
    period = t.period if t else "day"
    today = desk_now().date()
    pnl = pnl_since(period_start(today, period), until=today).total
    return Progress(amount=t.amount if t else None, period=period, pnl=pnl)



def _ledgers(ghost_ids: list[int]) -> dict[int, GhostLedger]:
    """Each ghost's running curve figures; a row measured with another start capital is re-derived."""
    from apps.revenue.pnl_days import ghost_ledger_rebuild

    capital = settings.HFT_START_CAPITAL
    rows = {lg.ghost_id: lg for lg in GhostLedger.objects.filter(ghost_id__in=ghost_ids)}
    for gid, lg in rows.items():
        if lg.capital != capital:  # the drawdown fraction depends on it (HFT_START_CAPITAL changed)
            rows[gid] = ghost_ledger_rebuild(ghost_id=gid)
    return rows


def ghost_pnl_curve(ghost_id: int) -> list[float]:
    """Cumulative net P&L after each closed trade, starting at 0 (the whole per-trade curve: for tools and
    tests; pages and the review read `GhostLedger`'s running figures instead)."""
    from apps.trading.models import Position

    nets = (Position.objects.filter(ghost_id=ghost_id, status=Position.Status.CLOSED)
            .order_by("closed_at", "id").values_list("gross_pnl", "fees"))
    return [0.0, *accumulate(float(g - f) for g, f in nets)]


def _performance(totals: dict | None, days: list[tuple[date, float]], ledger: GhostLedger | None, capital: float,
                 *, freq: str, period_pnl: float, target_amount: float | None) -> Performance:
    """The engine's figures (apps.engine.performance) from one ghost's day rows and running figures.

    Win rate, profit factor and net P&L are sums over the days (`totals`); the daily returns are those of the
    curve sampled at each day's last close (`sample_returns_daily` over the points the per-trade curve has at
    day ends: capital at the first close, then each day's closing level); the max drawdown is the per-trade
    curve's, kept by `GhostLedger`. Only the "1D" sampling can be read off day rows.
    """
    if freq != "1D":
        raise ValueError("figures from day rows are sampled daily (freq='1D')")
    n = totals["n"] if totals else 0
    if n == 0:
        return performance([], pd.Series([], index=pd.DatetimeIndex([], tz="UTC"), dtype="float64"), freq=freq,
                           period_pnl=period_pnl, target_amount=target_amount)
    wins = totals["w"]
    gp, gl = float(totals["wn"]), float(-totals["ln"])
    if gl > 0:
        pf = gp / gl
    else:
        pf = math.inf if gp > 0 else math.nan
    nets = np.array([net for _, net in days], dtype=np.float64)
    day_ns = np.array([d for d, _ in days], dtype="datetime64[D]").astype("datetime64[ns]").astype(np.int64)
    levels = capital + np.cumsum(nets)
    returns = sample_returns_daily(np.concatenate(([day_ns[0]], day_ns)), np.concatenate(([capital], levels)))
    ppy = PERIODS_PER_YEAR[freq]
    return Performance(
        trades=n, wins=wins, win_rate=wins / n, gross_profit=gp, gross_loss=gl, profit_factor=pf,
        net_pnl=float(totals["g"] - totals["f"]), sharpe=sharpe_ratio(returns, ppy),
        sortino=sortino_ratio(returns, ppy), max_drawdown=ledger.max_dd if ledger else 0.0,
        target_progress=period_pnl / target_amount if target_amount and target_amount > 0 else math.nan,
        periods=len(returns),
    )


def performance_by_ghost(ghost_ids: list[int], *, freq: str = "1D",
                         period_pnl: dict[int, float] | None = None) -> dict[int, Performance]:
    """The engine's Performance of each ghost from its day rows, running figures and target period, in a
    fixed number of queries whatever the ghost count or the number of trades (the ghosts page shows them
    all; the signal manager scores every draft with them).

    Equity curve = start capital + cumulative net P&L at each close (data time); returns are sampled per
    day, never per trade. `period_pnl` (each ghost's P&L over its target period) when the caller has it already.
    """
    from apps.trading.selectors import ghost_period_pnl

    mine = PnlDay.objects.filter(ghost_id__in=ghost_ids)
    # Totals per ghost in Decimal (one row each); the daily nets as floats, the engine's unit for returns
    # (a ghost trading two instruments has two rows a day: summed here). Decimal conversion of thousands of
    # day rows was most of the page's time.
    totals = {r["ghost_id"]: r for r in mine.values("ghost_id").order_by("ghost_id").annotate(
        n=Sum("trades"), w=Sum("wins"), g=Sum("gross"), f=Sum("fees"), wn=Sum("win_net"), ln=Sum("loss_net"))}
    days: dict[int, list[tuple[date, float]]] = {gid: [] for gid in ghost_ids}
    for gid, day, net in (mine.values("ghost_id", "day").order_by("ghost_id", "day")
                          .annotate(net=Sum(F("gross") - F("fees"), output_field=FloatField()))
                          .values_list("ghost_id", "day", "net")):
        days[gid].append((day, net))
    ledgers = _ledgers(ghost_ids)
    targets = targets_by_ghost()
    if period_pnl is None:
        period_pnl = {gid: float(s.total) for gid, s in ghost_period_pnl().items()}
    capital = float(settings.HFT_START_CAPITAL)
    out = {}
    for gid in ghost_ids:
        target = targets.get(gid)
        out[gid] = _performance(
            totals.get(gid), days[gid], ledgers.get(gid), capital, freq=freq,
            period_pnl=period_pnl.get(gid, 0.0),
            target_amount=float(target.amount) if target else None,
        )
    return out


def ghost_performance(ghost_id: int, *, freq: str = "1D") -> Performance:
    """`performance_by_ghost` for one ghost."""
    return performance_by_ghost([ghost_id], freq=freq)[ghost_id]


def ghost_max_drawdown_abs(ghost_id: int) -> float:
    """The largest peak-to-trough fall of the ghost's cumulative net P&L, quote currency (0 without trades)."""
    lg = _ledgers([ghost_id]).get(ghost_id)
    return float(lg.max_dd_abs) if lg else 0.0
