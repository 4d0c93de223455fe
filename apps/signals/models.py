from django.db import models

from apps.common.fields import price_field
from apps.ghosts.models import Ghost
from apps.market.models import Instrument


class Side(models.TextChoices):
    LONG = "long"
    SHORT = "short"


class Fate(models.TextChoices):
    PENDING = "pending"
    TAKEN = "taken"
    OUTSCORED = "outscored"
    BLOCKED_TREND = "blocked_trend"
    BLOCKED_RISK = "blocked_risk"
    POSITION_OPEN = "position_open"  # the ghost already holds a position; recorded, not reversed
    GHOST_DISABLED = "ghost_disabled"
    STALE = "stale"
    CONFLICT = "conflict"  # two strong drafts disagreed on side within the manager's margin: none traded


class Signal(models.Model):
    """A ghost's draft for one closed bar, and what became of it."""

    ghost = models.ForeignKey(Ghost, on_delete=models.CASCADE, related_name="signals")
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="signals")
    bar_time = models.DateTimeField()  # open time of the bar the signal was computed on
    side = models.CharField(max_length=8, choices=Side.choices)
    confidence = models.DecimalField(max_digits=5, decimal_places=4)
    priority = models.PositiveSmallIntegerField(default=1)
    entry = price_field()  # reference price (the bar close); the fill sets the real entry
    stop = price_field()
    target = price_field()
    size_multiplier = models.DecimalField(max_digits=6, decimal_places=4, default=1)
    max_hold_seconds = models.PositiveIntegerField(null=True, blank=True)  # time stop, in data time
    reason = models.TextField()
    fate = models.CharField(max_length=16, choices=Fate.choices, default=Fate.PENDING)
    fate_detail = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-bar_time", "-id"]
        # Recent signals (overview, state.json) newest first across ghosts: an index in that order reads the
        # newest 50 instead of sorting the table. One ghost's signals ride the (ghost, bar_time) unique index.
        # One instrument's signals (the overview filtered by instrument, issue 11): (instrument, bar_time, id).
        indexes = [
            models.Index(fields=["bar_time", "id"], name="signal_bar_time_id"),
            models.Index(fields=["instrument", "bar_time", "id"], name="signal_instr_bar_time_id"),
        ]
        constraints = [
            # Evaluating one bar twice must never create a second signal.
            models.UniqueConstraint(fields=["ghost", "bar_time"], name="signal_one_per_ghost_bar"),
            models.CheckConstraint(
                condition=models.Q(confidence__gte=0, confidence__lte=1), name="signal_confidence_0_1"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.ghost} {self.side} @ {self.bar_time:%H:%M} ({self.fate})"
