from dataclasses import dataclass
from decimal import Decimal

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
