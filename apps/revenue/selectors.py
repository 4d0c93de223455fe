from dataclasses import dataclass
from decimal import Decimal
from itertools import accumulate

import pandas as pd
from django.conf import settings

from apps.engine.performance import Performance, performance
from apps.ghosts.models import Ghost
from apps.revenue.models import RevenueTarget


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


def target_owners() -> list[TargetOwner]:
    """The portfolio first, then every ghost by name, each with its target (or None). Two queries."""
    targets = {t.ghost_id: t for t in RevenueTarget.objects.all()}
    rows = [TargetOwner(key="portfolio", label="Portfolio", ghost=None, target=targets.get(None))]
    for g in Ghost.objects.select_related("instrument").order_by("name"):
        rows.append(TargetOwner(key=str(g.pk), label=g.name, ghost=g, target=targets.get(g.pk)))
    return rows


def portfolio_progress() -> Progress:
    """The whole portfolio's net P&L over its target period (day when no target) against the target."""
    from apps.market.selectors import desk_now
    from apps.trading.selectors import period_start, pnl_since

    t = portfolio_target()
    period = t.period if t else "day"
    pnl = pnl_since(period_start(desk_now().date(), period)).total
    return Progress(amount=t.amount if t else None, period=period, pnl=pnl)



def _closed_pnls(ghost_ids: list[int]) -> dict[int, list[tuple]]:
    """Per ghost: (closed_at, net P&L) of its closed positions in closing order, from the ledger (one query)."""
    from apps.trading.models import Position

    out: dict[int, list[tuple]] = {gid: [] for gid in ghost_ids}
    rows = (
        Position.objects.filter(ghost_id__in=ghost_ids, status=Position.Status.CLOSED)
        .order_by("ghost_id", "closed_at", "id")
        .values_list("ghost_id", "closed_at", "gross_pnl", "fees")
    )
    for gid, t, g, f in rows:
        out[gid].append((t, float(g - f)))
    return out


def ghost_pnl_curve(ghost_id: int) -> list[float]:
    """Cumulative net P&L after each closed trade, starting at 0."""
    return [0.0, *accumulate(p for _, p in _closed_pnls([ghost_id])[ghost_id])]


def performance_by_ghost(ghost_ids: list[int], *, freq: str = "1D") -> dict[int, Performance]:
    """The engine's Performance of each ghost from its closed positions (the ledger) and its target period,
    in a fixed number of queries whatever the ghost count (the ghosts page shows them all).

    Equity curve = start capital + cumulative net P&L at each close (data time); returns are sampled per
    `freq` by the engine, never per trade.
    """
    from apps.trading.selectors import ghost_period_pnl

    closed = _closed_pnls(ghost_ids)
    targets = targets_by_ghost()
    period = ghost_period_pnl()
    capital = float(settings.HFT_START_CAPITAL)
    out = {}
    for gid in ghost_ids:
        trades = closed[gid]
        pnls = [p for _, p in trades]
        if trades:
            times = pd.DatetimeIndex([trades[0][0]] + [t for t, _ in trades])
            levels = [capital] + [capital + c for c in accumulate(pnls)]
        else:
            times, levels = pd.DatetimeIndex([], tz="UTC"), []
        target = targets.get(gid)
        out[gid] = performance(
            pnls,
            pd.Series(levels, index=times, dtype="float64"),
            freq=freq,
            period_pnl=float(period[gid].total) if gid in period else 0.0,
            target_amount=float(target.amount) if target else None,
        )
    return out


def ghost_performance(ghost_id: int, *, freq: str = "1D") -> Performance:
    """`performance_by_ghost` for one ghost."""
    return performance_by_ghost([ghost_id], freq=freq)[ghost_id]
