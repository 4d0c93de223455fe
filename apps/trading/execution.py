"""One door to execution: paper or live, chosen by HFT_LIVE_TRADING, for entries and for exits.

Paper stays the default. With HFT_LIVE_TRADING=1 every NEW entry goes to the exchange through
`apps.trading.live_executor` (which refuses, with the reason recorded on the signal, when the exchange's keys are
not in the environment). Exits follow the POSITION's mode, not the flag: a paper position opened before
live trading was switched on is closed on paper, and a live position is never closed on paper (with the
flag off it is refused and logged, so the operator flattens it on the exchange).
"""

import logging
from datetime import datetime
from decimal import Decimal

from django.conf import settings

from apps.engine.exits import tick_check
from apps.trading.live_client import LiveTradingRefused
from apps.trading.live_executor import position_close_live, signal_execute_live
from apps.trading.models import Mode, Position
from apps.trading.services import position_close, signal_execute_paper

log = logging.getLogger(__name__)


def signal_execute(
    *, signal_id: int, price: Decimal, at: datetime, quantity: float | None = None
) -> Position | None:
    """Execute a pending signal at market: paper (the engine's fill model) or live (ccxt), same fates.

    `price` is the first price after the signal's bar closed (paper fills there plus slippage; live
    sizes with it and fills at the exchange's price). Safe to run twice in both modes.
    """
    if settings.HFT_LIVE_TRADING:
        return signal_execute_live(signal_id=signal_id, price=price, at=at, quantity=quantity)
    return signal_execute_paper(signal_id=signal_id, price=price, at=at, quantity=quantity)


def position_exit(*, position_id: int, price: float, at: datetime, reason: str) -> Position | None:
    """Close a position the way it was opened: paper positions through the fill model, live ones with a
    market order on the exchange. Returns None when it was already closed (or a live close was refused)."""
    mode = Position.objects.values_list("mode", flat=True).get(pk=position_id)
    if mode != Mode.LIVE:
        return position_close(position_id=position_id, price=price, at=at, reason=reason)
    try:
        return position_close_live(position_id=position_id, price=price, at=at, reason=reason)
    except LiveTradingRefused as exc:
        log.error("live position %s hit its %s at %s but cannot be closed: %s", position_id, reason, price, exc)
        return None


def positions_check_price(
    *, instrument_id: int, price: float, at: datetime, open_positions: list[Position] | None = None
) -> list[Position]:
    """Apply time stop, stop and target of every open position on this instrument to one price update
    (`apps.engine.exits.tick_check`: a due time stop exits at this price; a stop at this price; a target at
    its level).

    The feed passes its cached list to avoid a query per trade; each close re-locks and re-checks.
    Exits go through the execution door, so a live position is closed on the exchange, never on paper.
    """
    positions = (
        open_positions
        if open_positions is not None
        else list(Position.objects.filter(instrument_id=instrument_id, status=Position.Status.OPEN))
    )
    closed = []
    for p in positions:
        # A due time stop wins at this price, before any level (apps.engine.exits.tick_check).
        hit = tick_check(1 if p.side == "long" else -1, float(p.stop), float(p.target), price,
                         time_due=p.time_stop_at is not None and at >= p.time_stop_at)
        if hit is not None:
            done = position_exit(position_id=p.pk, price=hit[0], at=at, reason=hit[1])
            if done is not None:
                closed.append(done)
    return closed
