from django.db import models
from django.db.models import Q

from apps.market.models import Instrument


class GhostKind(models.TextChoices):
    SPIKE_FADER = "spike_fader", "Volatility spike fader"


class GhostStatus(models.TextChoices):
    ACTIVE = "active"
    DISABLED = "disabled"
    DEGRADED = "degraded"  # enabled, but its last evaluation raised; recovers on a clean one


class Ghost(models.Model):
    """One configured strategy on one instrument. `params` is validated by the engine's config class."""

    name = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=32, choices=GhostKind.choices)
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="ghosts")
    params = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=GhostStatus.choices, default=GhostStatus.DISABLED)
    status_reason = models.TextField(blank=True)
    last_error = models.TextField(blank=True)  # traceback of the last failed evaluation, for operators
    last_evaluated_bar = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            # The explicit state machine: enabled <=> not disabled.
            models.CheckConstraint(
                condition=(Q(enabled=True) & Q(status__in=["active", "degraded"]))
                | (Q(enabled=False) & Q(status="disabled")),
                name="ghost_enabled_matches_status",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def group_name(self) -> str:
        return f"ghost.{self.pk}"
