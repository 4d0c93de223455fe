"""One door to execution: paper or live, chosen by HFT_LIVE_TRADING, for entries and for exits.

Paper stays the default. With HFT_LIVE_TRADING=1 every NEW entry goes to the exchange through
`apps.trading.live_executor` (which refuses, with the reason recorded on the signal, when the exchange's keys are
not in the environment). Exits follow the POSITION's mode, not the flag: a paper position opened before
live trading was switched on is closed on paper, and a live position is never closed on paper (with the
flag off it is refused and logged, so the operator flattens it on the exchange).
"""

import logging
from datetime import UTC, datetime
from decimal import Decimal

from django.conf import settings
from django.db import transaction

from apps.alerts.models import AlertEvent
from apps.alerts.services import alert_emit
from apps.audit.services import audit_record
from apps.engine.exits import tick_check
from apps.market.prices import price_get
from apps.market.selectors import feed_statuses
from apps.trading.live_client import LiveTradingRefused
from apps.trading.live_executor import position_close_live, signal_execute_live
from apps.trading.models import ExitReason, Mode, Position
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


class ManualCloseRefused(Exception):
    """An operator's close of one position was refused; the message says why, for the page."""


class PositionAlreadyClosed(ManualCloseRefused):
    pass


MANUAL_REASON_MAX = 500


def position_close_manual(*, position_id: int, reason: str, user) -> Position:
    """An operator closes ONE open position at its feed's last price, through the same door as every other exit
    (`position_exit`: paper through the fill model, live with a market order), with exit reason "manual".

    The close itself pushes the fill to every browser and raises the fill alert (exit reason "manual", net P&L);
    the audit row `position.closed_manually` keeps who and why. The exit's time is the data time of the price
    taken (the desk's one clock: a sim or replay close lands on the trading day of the data it trades).
    Refused (ManualCloseRefused, nothing written) without a reason, when the position is already closed, or
    without a fresh price: none cached, the feed not connected/lagging (down, stopped, erroring), or a price
    older than the position itself. Raises Position.DoesNotExist for an unknown id.
    """
    reason = (reason or "").strip()
    if not reason:
        raise ManualCloseRefused("a reason is required: it is written to the audit log")
    if "\x00" in reason:  # PostgreSQL refuses NUL in text
        raise ManualCloseRefused("the reason must not contain null characters")
    if len(reason) > MANUAL_REASON_MAX:
        raise ManualCloseRefused(f"the reason is too long (max {MANUAL_REASON_MAX} characters)")
    position = Position.objects.select_related("instrument").get(pk=position_id)
    if position.status != Position.Status.OPEN:
        raise PositionAlreadyClosed(f"position {position_id} is already closed")
    label = str(position.instrument)
    feed = feed_statuses().filter(instrument_id=position.instrument_id).first()
    # feed_statuses marks a feed whose runner stopped beating as "down": its cached price would be a lie.
    if feed is None or feed.state not in ("connected", "lagging"):
        state = "no feed" if feed is None else f"feed {feed.state}"
        raise ManualCloseRefused(f"no fresh price for {label} ({state}): start its feed, then close")
    cached = price_get(position.instrument_id)
    if cached is None:
        raise ManualCloseRefused(f"no fresh price for {label}: the feed has not traded yet")
    price, ts_ms = cached
    at = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    if at < position.opened_at:
        raise ManualCloseRefused(f"no fresh price for {label}: the last one is older than the position")

    def record(done: Position) -> None:
        audit_record(actor=user, action="position.closed_manually", obj=done, reason=reason, data_time=at,
                     after={"price": str(done.exit_price), "net_pnl": str(done.net_pnl), "mode": done.mode,
                            "data_time": at.isoformat()})
        # The exit's own fill alert says what filled; this one says who closed it and why (like the kill switch's).
        by = user.get_username() if getattr(user, "is_authenticated", False) else "system"
        alert_emit(kind=AlertEvent.FILL, title=f"Position #{done.pk} closed by {by}"[:200],
                   body=f"{done.ghost.name} {done.side} {label} closed by {by}: {reason}",
                   data={"position_id": done.pk, "by": by, "reason": reason, "exit_reason": done.exit_reason,
                         "price": done.exit_price, "net_pnl": done.net_pnl, "manual": True})

    if position.mode != Mode.LIVE:
        # Paper: the close and its audit row commit together (position_close locks and re-checks the status).
        with transaction.atomic():
            done = position_exit(position_id=position_id, price=price, at=at, reason=ExitReason.MANUAL)
            if done is None:
                raise PositionAlreadyClosed(f"position {position_id} is already closed")
            record(done)
        return done
    # Live: no database transaction held open across the exchange's round trip; the live records audit the fill.
    try:
        done = position_exit(position_id=position_id, price=price, at=at, reason=ExitReason.MANUAL)
    except Exception as exc:  # the exchange's error, for the operator; the position stays open
        log.exception("manual close of live position %s failed", position_id)
        raise ManualCloseRefused(f"the exchange did not close position {position_id}: {type(exc).__name__}: "
                                 f"{str(exc)[:200]}") from exc
    if done is None:
        if Position.objects.filter(pk=position_id, status=Position.Status.CLOSED).exists():
            raise PositionAlreadyClosed(f"position {position_id} is already closed")
        raise ManualCloseRefused(f"the live close of position {position_id} was refused (see the log): "
                                 "live trading is off or the exchange keys are missing")
    record(done)
    return done
