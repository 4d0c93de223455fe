"""Reads for the risk rules: the configured limits, the kill switch, and the state the rules judge."""

from datetime import timedelta

from django.conf import settings
from django.db.models import Count

from apps.engine.risk import Market, RiskLimits, RiskState, quote_rate
from apps.market.models import Instrument
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
    today = pnl_since(day_start, prices=prices, until=now.date())  # the data's day only (pnl_since's `until`)
    by_ghost = dict(
        Position.objects.filter(status=Position.Status.OPEN).values("ghost_id").order_by("ghost_id")
        .annotate(n=Count("id")).values_list("ghost_id", "n")
    )
    entries_today = Order.objects.filter(purpose=Order.Purpose.ENTRY, fills__filled_at__gte=day_start,
                                         fills__filled_at__lt=day_start + timedelta(days=1)).count()
    notional = open_notional_by_instrument(prices)
    return RiskState(
        equity=eq,
        day_start_equity=eq - float(today.total),
        open_positions=sum(by_ghost.values()),
        open_by_ghost=by_ghost,
        trades_today=entries_today,
        kill_switch=kill_switch().tripped,
        open_notional=sum(notional.values()),
        open_notional_by_instrument=notional,
        open_instruments=len(notional),
    )


def open_notional_by_instrument(prices: dict[int, float] | None = None) -> dict[int, float]:
    """Open notional per instrument in the account currency: quantity (base units) x the instrument's last price,
    or the entry price while its feed has none. A quote currency the desk does not convert counts 1:1 (no such
    position opens: the risk check refuses it), so a position opened before would still weigh on the caps."""
    prices = last_prices() if prices is None else prices
    out: dict[int, float] = {}
    account = settings.HFT_QUOTE_CURRENCY
    for p in Position.objects.filter(status=Position.Status.OPEN).only(
            "instrument_id", "quantity", "entry_price", "instrument__quote").select_related("instrument"):
        price = prices.get(p.instrument_id) or float(p.entry_price)
        rate = quote_rate(p.instrument.quote, account) or 1.0
        out[p.instrument_id] = out.get(p.instrument_id, 0.0) + float(p.quantity) * price * rate
    return out


def risk_market(instrument: Instrument) -> Market:
    """The instrument as the cross-instrument rules see it (apps.engine.risk.Market)."""
    return Market(instrument_id=instrument.pk, label=f"{instrument.symbol} on {instrument.exchange.code}",
                  quote=instrument.quote, account=settings.HFT_QUOTE_CURRENCY)
