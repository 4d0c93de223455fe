from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.db import transaction

from apps.alerts.services import alert_emit
from apps.audit.services import audit_record
from apps.common.realtime import send_on_commit
from apps.engine.performance import AutoDisableRules, rules_breached
from apps.engine.risk import ghost_drawdown_breached
from apps.ghosts.events import GHOSTS_GROUP
from apps.ghosts.models import Ghost
from apps.ghosts.services import ghost_set_enabled
from apps.revenue.models import Period, RevenueTarget
from apps.revenue.pnl_days import pnl_days_rebuild
from apps.revenue.selectors import ghost_max_drawdown_abs, ghost_performance, targets_by_ghost
from apps.trading.risk_selectors import risk_limits
from apps.trading.selectors import ghost_period_pnl

__all__ = ["pnl_days_rebuild", "revenue_target_set", "ghost_review", "parse_amount", "TargetError"]

# Above this a target is a typo, not an ambition: ten million quote units per period.
MAX_TARGET = Decimal("10000000")


class TargetError(ValueError):
    pass


def parse_amount(raw) -> Decimal:
    """A positive amount with at most two decimals; NaN, infinities, negatives and absurd values refused."""
    try:
        amount = Decimal(str(raw).strip())
    except (InvalidOperation, ValueError):
        raise TargetError("amount must be a number, e.g. 25.00") from None
    if not amount.is_finite():
        raise TargetError("amount must be a finite number")
    if amount <= 0:
        raise TargetError("amount must be positive")
    if amount > MAX_TARGET:
        raise TargetError(f"amount must be at most {MAX_TARGET:,}")
    if amount.as_tuple().exponent < -2:
        raise TargetError("amount can have at most two decimals")
    return amount.quantize(Decimal("0.01"))


@transaction.atomic
def revenue_target_set(*, ghost_id: int | None, amount, period: str, actor) -> RevenueTarget:
    """Create or update the target of a ghost (or of the portfolio when ghost_id is None), audited."""
    value = parse_amount(amount)
    if period not in Period.values:
        raise TargetError(f"period must be one of {', '.join(Period.values)}")
    ghost = Ghost.objects.get(pk=ghost_id) if ghost_id is not None else None
    # get_or_create, not "lock the row, else insert": the first target of an owner has no row to lock, so two
    # requests at once both inserted and the second hit one_target_per_owner on PostgreSQL. get_or_create's
    # insert waits for the other transaction, and on its IntegrityError reads (and locks) the committed row.
    target, created = RevenueTarget.objects.select_for_update().get_or_create(
        ghost=ghost, defaults={"amount": value, "period": period})
    before = {} if created else {"amount": str(target.amount), "period": target.period}
    target.amount, target.period = value, period
    if not created:
        target.save()
    audit_record(actor=actor, action="revenue_target.set", obj=target,
                 before=before, after={"amount": str(value), "period": period,
                                       "ghost": ghost.name if ghost else "portfolio"})
    return target



def ghost_review(*, ghost_id: int, at: datetime | None = None) -> list[str]:
    """Apply the ghost's auto-disable rules and the desk's per-ghost drawdown stop; disable it when one fires.

    Called after each of its closed trades (`at`: that close's data time, which the audit row keeps: the desk's
    clock, read once a second, can be minutes of data time later under the simulator) and by the periodic risk
    watch. The rule and the numbers go into
    the audit log and the ghost's status reason, an alert event reaches every browser, and the ghost stays
    off until an operator re-enables it with a reason.
    """
    ghost = Ghost.objects.get(pk=ghost_id)
    if not ghost.enabled:
        return []
    perf = ghost_performance(ghost_id)
    target = targets_by_ghost().get(ghost_id)
    period = ghost_period_pnl().get(ghost_id)
    reasons = rules_breached(
        perf,
        AutoDisableRules.from_params(ghost.auto_disable),
        period_pnl=float(period.total) if period else 0.0,
        target_amount=float(target.amount) if target else None,
    )
    # The engine's rule reads only the curve's largest peak-to-trough fall, which GhostLedger keeps per close:
    # a two-point curve with that fall stands in for the whole history (never loaded).
    fall = ghost_max_drawdown_abs(ghost_id)
    drawdown = ghost_drawdown_breached((0.0, -fall), float(settings.HFT_START_CAPITAL), risk_limits())
    if drawdown:
        reasons.append(drawdown)
    if reasons:
        text = ("auto-disabled: " + "; ".join(reasons))[:500]
        with transaction.atomic():
            ghost_set_enabled(ghost_id=ghost_id, enabled=False, actor=None, reason=text, data_time=at)
            send_on_commit(GHOSTS_GROUP, {"type": "alert", "level": "error", "ghost_id": ghost_id,
                                          "message": f"{ghost.name} {text}"})
            alert_emit(kind="auto_disable", title=f"{ghost.name} auto-disabled", body=text,
                       data={"ghost_id": ghost_id, "ghost": ghost.name, "reasons": reasons})
    return reasons
