"""Small ORM factories for dashboard and selector tests.

They write rows directly (no engine, no services) so a test can lay out any ledger it needs; the
rows still obey the models' constraints, and fees/P&L follow the same arithmetic as paper execution:
fee = price × qty × rate on each fill, gross = (exit − entry) × qty × side.
"""

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from apps.ghosts.models import Ghost, GhostStatus
from apps.market.models import Candle, Exchange, FeedStatus, Instrument
from apps.signals.models import Fate, Signal
from apps.trading.models import ExitReason, Fill, Order, Position

STEP = Decimal("0.00000001")
FEE_RATE = Decimal("0.001")  # binance taker, the Exchange model's default


def make_instrument(*, code: str = "binance", symbol: str = "BTC/USDT") -> Instrument:
    ex, _ = Exchange.objects.get_or_create(code=code, defaults={"name": code.title()})
    base, quote = symbol.split("/")
    inst, _ = Instrument.objects.get_or_create(
        exchange=ex, symbol=symbol, defaults={"base": base, "quote": quote}
    )
    return inst


def make_feed(
    *,
    instrument: Instrument,
    state: str = "connected",
    source: str = "sim",
    last_price: str | None = "65000",
    last_trade_at: datetime | None = None,
    **kw,
) -> FeedStatus:
    fs, _ = FeedStatus.objects.update_or_create(
        instrument=instrument,
        defaults={
            "state": state,
            "source": source,
            "last_price": last_price,
            "last_trade_at": last_trade_at,
            **kw,
        },
    )
    return fs


def make_ghost(
    *,
    name: str,
    instrument: Instrument,
    enabled: bool = True,
    status: str | None = None,
    status_reason: str = "",
    last_error: str = "",
) -> Ghost:
    status = status or (GhostStatus.ACTIVE if enabled else GhostStatus.DISABLED)
    return Ghost.objects.create(
        name=name,
        kind="spike_fader",
        instrument=instrument,
        enabled=enabled,
        status=status,
        status_reason=status_reason,
        last_error=last_error,
    )


_bar_offset = 0


def make_signal(
    *,
    ghost: Ghost,
    bar_time: datetime | None = None,
    side: str = "long",
    confidence: str = "0.7",
    entry: str = "100",
    fate: str = Fate.TAKEN,
    reason: str = "1.4% spike in 12 min, faded",
    fate_detail: str = "",
) -> Signal:
    global _bar_offset
    if bar_time is None:  # unique per ghost: the (ghost, bar_time) constraint
        _bar_offset += 1
        bar_time = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=_bar_offset)
    e = Decimal(entry)
    sign = 1 if side == "long" else -1
    return Signal.objects.create(
        ghost=ghost,
        instrument_id=ghost.instrument_id,
        bar_time=bar_time,
        side=side,
        confidence=Decimal(confidence),
        entry=e,
        stop=e * (1 - Decimal("0.01") * sign),
        target=e * (1 + Decimal("0.008") * sign),
        reason=reason,
        fate=fate,
        fate_detail=fate_detail,
    )


def make_position(
    *,
    ghost: Ghost,
    opened_at: datetime,
    side: str = "long",
    entry: str = "100",
    qty: str = "1",
    exit: str | None = None,
    closed_at: datetime | None = None,
    exit_reason: str = ExitReason.TARGET,
) -> Position:
    """A position with its signal, entry order + fill, and (when `exit` is given) exit order + fill."""
    e, q = Decimal(entry), Decimal(qty)
    sign = 1 if side == "long" else -1
    global _bar_offset
    _bar_offset += 1  # positions opened at the same instant still need distinct (ghost, bar_time) signals
    bar_time = opened_at - timedelta(minutes=1, microseconds=_bar_offset)
    signal = make_signal(ghost=ghost, bar_time=bar_time, side=side, entry=entry)
    entry_fee = (e * q * FEE_RATE).quantize(STEP)
    position = Position.objects.create(
        ghost=ghost,
        instrument_id=ghost.instrument_id,
        signal=signal,
        side=side,
        quantity=q,
        entry_price=e,
        stop=signal.stop,
        target=signal.target,
        opened_at=opened_at,
        fees=entry_fee,
    )
    order = Order.objects.create(
        position=position,
        instrument_id=ghost.instrument_id,
        client_order_id=f"hft-{signal.pk}-entry",
        purpose=Order.Purpose.ENTRY,
        side="buy" if sign > 0 else "sell",
        quantity=q,
        status=Order.Status.FILLED,
    )
    Fill.objects.create(order=order, price=e, quantity=q, fee=entry_fee, filled_at=opened_at)
    if exit is not None:
        x = Decimal(exit)
        closed_at = closed_at or opened_at + timedelta(minutes=5)
        exit_fee = (x * q * FEE_RATE).quantize(STEP)
        out = Order.objects.create(
            position=position,
            instrument_id=ghost.instrument_id,
            client_order_id=f"hft-{signal.pk}-exit",
            purpose=Order.Purpose.EXIT,
            side="sell" if sign > 0 else "buy",
            quantity=q,
            status=Order.Status.FILLED,
        )
        Fill.objects.create(order=out, price=x, quantity=q, fee=exit_fee, filled_at=closed_at)
        position.status, position.closed_at, position.exit_price = Position.Status.CLOSED, closed_at, x
        position.exit_reason = exit_reason
        position.gross_pnl = ((x - e) * q * sign).quantize(STEP)
        position.fees = entry_fee + exit_fee
        position.save()
        # As every close service does, in the same breath: pages read realised P&L from the day rows.
        from apps.revenue.pnl_days import pnl_days_add

        pnl_days_add(positions=[position])
    return position


def make_candles(
    *, instrument: Instrument, start: datetime, n: int, first: float = 65000.0, seed: int = 1
) -> list[Candle]:
    """A seeded random walk of consistent 1m bars (low <= open, close <= high)."""
    rng = random.Random(seed)
    price = first
    rows = []
    for i in range(n):
        o = price
        c = max(1.0, o * (1 + rng.gauss(0, 0.0015)))
        h = max(o, c) * (1 + abs(rng.gauss(0, 0.0006)))
        low = min(o, c) * (1 - abs(rng.gauss(0, 0.0006)))
        vol = Decimal(str(round(rng.uniform(5, 40), 4)))
        buy = (vol * Decimal(str(round(rng.uniform(0.3, 0.7), 2)))).quantize(Decimal("0.0001"))
        rows.append(
            Candle(
                instrument=instrument,
                open_time=start + timedelta(minutes=i),
                open=Decimal(f"{o:.2f}"),
                high=Decimal(f"{h:.2f}"),
                low=Decimal(f"{low:.2f}"),
                close=Decimal(f"{c:.2f}"),
                volume=vol,
                taker_buy_volume=buy,
                taker_sell_volume=vol - buy,
                trade_count=rng.randint(50, 400),
            )
        )
        price = c
    Candle.objects.bulk_create(rows)
    return rows
