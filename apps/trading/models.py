from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.common.fields import money_field, price_field, qty_field
from apps.ghosts.models import Ghost
from apps.market.models import Instrument
from apps.signals.models import Side, Signal


class Mode(models.TextChoices):
    PAPER = "paper"
    LIVE = "live"


class ExitReason(models.TextChoices):
    STOP = "stop"
    TARGET = "target"
    TIME = "time"
    END_OF_DATA = "end_of_data"
    MANUAL = "manual"


class Position(models.Model):
    """One round trip opened from one signal. P&L figures are derived from its fills (the ledger)."""

    class Status(models.TextChoices):
        OPEN = "open"
        CLOSED = "closed"

    ghost = models.ForeignKey(Ghost, on_delete=models.PROTECT, related_name="positions")
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="positions")
    signal = models.OneToOneField(Signal, on_delete=models.PROTECT, related_name="position")
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.PAPER)
    side = models.CharField(max_length=8, choices=Side.choices)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    quantity = qty_field()
    entry_price = price_field()
    stop = price_field()
    target = price_field()
    time_stop_at = models.DateTimeField(null=True, blank=True)  # data time
    opened_at = models.DateTimeField()  # data time of the entry fill
    closed_at = models.DateTimeField(null=True, blank=True)
    exit_price = price_field(null=True, blank=True)
    exit_reason = models.CharField(max_length=16, choices=ExitReason.choices, blank=True)
    gross_pnl = money_field(null=True, blank=True)  # (exit - entry) * qty * sign, set at close
    fees = money_field(default=0)  # entry + exit fees, quote currency
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-opened_at", "-id"]
        # The trades page and its CSV walk (opened_at, id) newest first by keyset, optionally narrowed by
        # ghost, side or status (outcome): each filter gets an index that keeps that order, so a page is an
        # index range read of 51 rows, never a sort or a scan of the table (tests/dashboard/test_trades_explain).
        # closed_at: period P&L (closed since the start of a day/week/month).
        indexes = [
            models.Index(fields=["opened_at", "id"], name="position_opened_id"),
            models.Index(fields=["ghost", "opened_at", "id"], name="position_ghost_opened_id"),
            # The trades page and CSV filtered by instrument (issue 11): a range read, not a scan of every trade.
            models.Index(fields=["instrument", "opened_at", "id"], name="position_instr_opened_id"),
            models.Index(fields=["side", "opened_at", "id"], name="position_side_opened_id"),
            models.Index(fields=["status", "opened_at", "id"], name="position_status_opened_id"),
            models.Index(fields=["closed_at"], name="position_closed_at"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["ghost"], condition=Q(status="open"), name="one_open_position_per_ghost"
            ),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="position_quantity_positive"),
            models.CheckConstraint(
                condition=Q(status="open", closed_at__isnull=True)
                | Q(status="closed", closed_at__isnull=False, exit_price__isnull=False),
                name="position_closed_has_exit",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.ghost} {self.side} {self.quantity} @ {self.entry_price} ({self.status})"

    @property
    def net_pnl(self):
        return None if self.gross_pnl is None else self.gross_pnl - self.fees


class Order(models.Model):
    class Purpose(models.TextChoices):
        ENTRY = "entry"
        EXIT = "exit"
        # Live only: the protective stop resting on the exchange (apps.trading.live_protect). One row per
        # position, re-pointed at the newest exchange order when the stop moves; a stop fill closes the position.
        PROTECT = "protect"

    class Status(models.TextChoices):
        NEW = "new"  # placed, no fill known yet (a protective stop: resting on the exchange)
        FILLED = "filled"
        REJECTED = "rejected"
        CANCELLED = "cancelled"  # a protective stop cancelled by the desk (exit, or moved and not replaced)

    position = models.ForeignKey(Position, on_delete=models.PROTECT, related_name="orders")
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="orders")
    client_order_id = models.CharField(max_length=64, unique=True)  # derived from the signal id
    purpose = models.CharField(max_length=8, choices=Purpose.choices)
    side = models.CharField(max_length=4, choices=[("buy", "buy"), ("sell", "sell")])
    quantity = qty_field()
    mode = models.CharField(max_length=8, choices=Mode.choices, default=Mode.PAPER)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.NEW)
    trigger_price = price_field(null=True, blank=True)  # a protective stop's trigger price on the exchange
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["position", "purpose"], name="one_order_per_position_purpose"),
        ]

    def __str__(self) -> str:
        return f"{self.client_order_id} {self.side} {self.quantity} ({self.status})"


class Fill(models.Model):
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="fills")
    price = price_field()
    quantity = qty_field()
    fee = money_field()  # quote currency, charged on the filled notional
    filled_at = models.DateTimeField(db_index=True)  # data time
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-filled_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(price__gt=0, quantity__gt=0, fee__gte=0), name="fill_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.order.client_order_id} {self.quantity} @ {self.price}"


class RiskSettings(models.Model):
    """The desk's risk limits (one row, pk=1). `params` is validated by apps.engine.risk.RiskLimits."""

    params = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(pk=1), name="risk_settings_singleton")]

    def __str__(self) -> str:
        return "risk limits"


class KillSwitch(models.Model):
    """Blocks every new entry while tripped (one row, pk=1). Only an operator resets it: never at midnight."""

    tripped = models.BooleanField(default=False)
    reason = models.TextField(blank=True)
    changed_at = models.DateTimeField(null=True, blank=True)
    changed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(pk=1), name="kill_switch_singleton")]

    def __str__(self) -> str:
        return f"kill switch {'TRIPPED' if self.tripped else 'armed'}"
