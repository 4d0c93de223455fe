from django.db import models
from django.db.models import Q, Value
from django.db.models.functions import Coalesce

from apps.ghosts.models import Ghost


class Period(models.TextChoices):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class RevenueTarget(models.Model):
    """Net P&L a ghost (or, with ghost NULL, the whole portfolio) should earn per period, in quote currency."""

    ghost = models.ForeignKey(Ghost, null=True, blank=True, on_delete=models.CASCADE, related_name="targets")
    amount = models.DecimalField(max_digits=14, decimal_places=2)
    period = models.CharField(max_length=8, choices=Period.choices, default=Period.DAY)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="target_amount_positive"),
            # One target per ghost and one for the portfolio (NULLs are distinct in a plain unique index).
            models.UniqueConstraint(Coalesce("ghost", Value(0)), name="one_target_per_owner"),
        ]

    def __str__(self) -> str:
        return f"{self.ghost or 'portfolio'}: {self.amount}/{self.period}"
