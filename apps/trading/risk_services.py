"""Writes for risk: limits edited by operators, the kill switch tripped and reset, and the watch that
trips it on the daily loss limit and stops ghosts at their drawdown. Every change is audited and pushed."""

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from apps.alerts.services import alert_kill_switch
from apps.audit.services import audit_record
from apps.common.realtime import send_on_commit
from apps.engine.risk import RiskLimits, daily_loss_breached, daily_loss_text
from apps.engine.types import ConfigError
from apps.market.models import FeedStatus
from apps.market.selectors import last_prices
from apps.trading.events import PORTFOLIO_GROUP
from apps.trading.models import KillSwitch, Position, RiskSettings
from apps.trading.risk_selectors import risk_limits, risk_state


class RiskError(ValueError):
    """A refused risk change, with a message fit for the operator."""


def _reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise RiskError("a reason is required")
    if len(reason) > 500:
        raise RiskError("reason is too long (max 500 characters)")
    return reason


def kill_switch_payload(ks: KillSwitch) -> dict:
    return {
        "type": "killswitch.changed",
        "tripped": ks.tripped,
        "reason": ks.reason,
        "at": ks.changed_at.isoformat() if ks.changed_at else None,
        "by": ks.changed_by.username if ks.changed_by_id else "system",
    }


@transaction.atomic
def risk_limits_set(*, params: dict, actor, reason: str) -> RiskLimits:
    """Replace the limits after the engine's validation; a refused value saves nothing."""
    reason = _reason(reason)
    if not isinstance(params, dict):
        raise RiskError("limits must be a JSON object")
    try:
        limits = RiskLimits.from_params(params)
    except ConfigError as e:
        raise RiskError(str(e)) from None
    row, _ = RiskSettings.objects.select_for_update().get_or_create(pk=1)
    before = risk_limits().to_params()
    row.params = limits.to_params()
    row.save()
    audit_record(actor=actor, action="risk.limits_changed", obj=row, reason=reason, before=before, after=row.params)
    return limits


@transaction.atomic
def kill_switch_trip(*, actor, reason: str, flatten: bool | None = None, at: datetime | None = None) -> KillSwitch:
    """Trip the switch (idempotent). With `flatten` (default: the limits' flatten_on_kill) open positions are
    closed at the last price as manual exits."""
    reason = _reason(reason)
    ks, _ = KillSwitch.objects.select_for_update().get_or_create(pk=1)
    if ks.tripped:
        return ks
    ks.tripped, ks.reason, ks.changed_at = True, reason, at or timezone.now()
    ks.changed_by = actor if getattr(actor, "is_authenticated", False) else None
    ks.save()
    audit_record(actor=actor, action="killswitch.tripped", obj=ks, reason=reason, after={"tripped": True})
    send_on_commit(PORTFOLIO_GROUP, kill_switch_payload(ks))
    alert_kill_switch(ks=ks)  # after commit; never raises
    if flatten if flatten is not None else risk_limits().flatten_on_kill:
        transaction.on_commit(lambda: positions_flatten(reason=f"kill switch: {reason}"))
    return ks


@transaction.atomic
def kill_switch_reset(*, actor, reason: str) -> KillSwitch:
    """Only an operator resets the switch (views check the role); the reason is audited."""
    reason = _reason(reason)
    ks, _ = KillSwitch.objects.select_for_update().get_or_create(pk=1)
    if not ks.tripped:
        return ks
    ks.tripped, ks.reason, ks.changed_at, ks.changed_by = False, reason, timezone.now(), actor
    ks.save()
    audit_record(actor=actor, action="killswitch.reset", obj=ks, reason=reason, after={"tripped": False})
    send_on_commit(PORTFOLIO_GROUP, kill_switch_payload(ks))
    alert_kill_switch(ks=ks)  # after commit; never raises
    return ks


def positions_flatten(*, reason: str) -> list[Position]:
    """Close every open position at its instrument's last price (a market exit, slippage and fees apply), at that
    price's data time (the one clock: a sim or replay flatten lands on the trading day of the data it trades, as a
    manual close of one position does; the wall time was days off under a replay)."""
    from apps.trading.execution import position_exit

    prices = last_prices()
    traded_at = dict(FeedStatus.objects.exclude(last_trade_at=None).values_list("instrument_id", "last_trade_at"))
    closed = []
    for p in Position.objects.filter(status=Position.Status.OPEN):
        price = prices.get(p.instrument_id)
        if price is None:
            continue  # no price, no honest exit: stays open, visible on the dashboard
        at = max(traded_at.get(p.instrument_id) or timezone.now(), p.opened_at)  # never before its own entry
        done = position_exit(position_id=p.pk, price=price, at=at, reason="manual")
        if done is not None:
            closed.append(done)
    return closed


def risk_watch() -> str | None:
    """Trip the kill switch when today's loss reached the limit; returns the reason when it tripped."""
    state = risk_state()
    limits = risk_limits()
    if state.kill_switch or not daily_loss_breached(state, limits):
        return None
    text = daily_loss_text(state, limits)
    kill_switch_trip(actor=None, reason=text)
    return text

