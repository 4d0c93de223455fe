"""Reads for the risk rules: the configured limits, the kill switch, and the state the rules judge."""

from django.db.models import Count

from apps.engine.risk import RiskLimits, RiskState
from apps.market.selectors import desk_now, last_prices
from apps.trading.models import KillSwitch, Order, Position, RiskSettings
from apps.trading.selectors import equity, period_start, pnl_since


def risk_limits() -> RiskLimits:
    """The desk's limits (engine defaults until an operator saves some)."""
    row = RiskSettings.objects.filter(pk=1).first()
    return RiskLimits.from_params(row.params if row else {})


def kill_switch() -> KillSwitch:
    return KillSwitch.objects.filter(pk=1).first() or KillSwitch(pk=1, tripped=False)


def risk_state() -> RiskState:
    """Equity now and at the start of the (data-time) UTC day, open positions, entries today, the switch.

    Start-of-day equity = equity now - today's P&L (realised on positions closed today + unrealised of the
    open ones, net of fees), so the daily loss compares like with like.
    """
    prices = last_prices()
    now = desk_now()
    day_start = period_start(now.date(), "day")
    eq = float(equity())
    today = pnl_since(day_start, prices=prices)
    by_ghost = dict(
        Position.objects.filter(status=Position.Status.OPEN).values("ghost_id").order_by("ghost_id")
        .annotate(n=Count("id")).values_list("ghost_id", "n")
    )
    entries_today = Order.objects.filter(purpose=Order.Purpose.ENTRY, fills__filled_at__gte=day_start).count()
    return RiskState(
        equity=eq,
        day_start_equity=eq - float(today.total),
        open_positions=sum(by_ghost.values()),
        open_by_ghost=by_ghost,
        trades_today=entries_today,
        kill_switch=kill_switch().tripped,
    )
