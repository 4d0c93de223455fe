from django.db import models
from django.db.models import Q, Value
from django.db.models.functions import Coalesce

from apps.common.fields import money_field
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


class PnlDay(models.Model):
    """Realised P&L of one ghost on one instrument on one trading day: the UTC date of the positions' close
    (data time, `Position.closed_at`). Written by `apps.revenue.pnl_days.pnl_days_add` in the transaction
    that closes the position, so pages read a few hundred of these rows instead of summing the whole ledger.
    `pnl_days_rebuild` re-derives them from the ledger (the positions), which stays the truth.
    """

    ghost = models.ForeignKey(Ghost, on_delete=models.CASCADE, related_name="pnl_days")
    instrument = models.ForeignKey("market.Instrument", on_delete=models.CASCADE, related_name="pnl_days")
    day = models.DateField()
    trades = models.PositiveIntegerField(default=0)  # positions closed that day
    wins = models.PositiveIntegerField(default=0)  # of them with net P&L (after fees) > 0
    gross = money_field(default=0)  # sum of gross_pnl
    fees = money_field(default=0)  # sum of the positions' fees (entry + exit)
    win_net = money_field(default=0)  # sum of net P&L of the winning trades (>= 0)
    loss_net = money_field(default=0)  # sum of net P&L of the losing trades (<= 0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["ghost", "instrument", "day"], name="one_pnl_day_per_ghost_instrument"),
        ]
        # Period sums over every ghost ("today", "this week") filter on the day alone.
        indexes = [models.Index(fields=["day"], name="revenue_pnlday_day")]

    def __str__(self) -> str:
        return f"{self.ghost_id}/{self.instrument_id} {self.day}: {self.trades} trades, net {self.net}"

    @property
    def net(self):
        return self.gross - self.fees


class GhostLedger(models.Model):
    """Running figures of one ghost's closed-trade equity curve (start capital + cumulative net P&L after each
    close, in closing order), kept with each close: the peak and the deepest fall so far. The max drawdown
    is a property of the whole per-trade curve and cannot be re-added from daily rows, so it lives here.

    A close older than the last one counted (a back-dated replay) re-derives the ghost's row from its
    positions; so does a change of start capital (the drawdown fraction depends on it).
    """

    ghost = models.OneToOneField(Ghost, on_delete=models.CASCADE, related_name="ledger", primary_key=True)
    trades = models.PositiveIntegerField(default=0)
    cum_net = money_field(default=0)  # net P&L of every closed trade
    peak_net = money_field(default=0)  # highest cum_net so far (0 before the first trade)
    max_dd_abs = money_field(default=0)  # largest peak-to-trough fall of cum_net, quote currency
    max_dd = models.FloatField(default=0.0)  # the same as a fraction of the peak equity (capital + peak)
    capital = money_field(default=0)  # the start capital max_dd was measured with
    last_closed_at = models.DateTimeField(null=True, blank=True)
    last_position_id = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.ghost_id}: {self.trades} trades, net {self.cum_net}, max dd {self.max_dd:.2%}"
