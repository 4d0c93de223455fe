from decimal import Decimal, InvalidOperation

from django.db import transaction

from apps.audit.services import audit_record
from apps.ghosts.models import Ghost
from apps.revenue.models import Period, RevenueTarget

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
    target = RevenueTarget.objects.select_for_update().filter(ghost=ghost).first()
    before = {"amount": str(target.amount), "period": target.period} if target else {}
    if target is None:
        target = RevenueTarget(ghost=ghost)
    target.amount, target.period = value, period
    target.save()
    audit_record(actor=actor, action="revenue_target.set", obj=target,
                 before=before, after={"amount": str(value), "period": period,
                                       "ghost": ghost.name if ghost else "portfolio"})
    return target
