from django.db import models
from django.db.models import Q

from apps.market.models import Instrument


def ghost_kind_choices() -> list[tuple[str, str]]:
    """Every ghost the engine registers; a callable, so adding a ghost to the registry needs no migration."""
    from apps.engine.registry import GHOSTS

    return [(kind, spec.title) for kind, spec in GHOSTS.items()]


class GhostStatus(models.TextChoices):
    ACTIVE = "active"
    DISABLED = "disabled"
    DEGRADED = "degraded"  # enabled, but its last evaluation raised; recovers on a clean one


class Ghost(models.Model):
    """One configured strategy on one instrument. `params` is validated by the engine's config class."""

    name = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=32, choices=ghost_kind_choices)
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="ghosts")
    params = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=GhostStatus.choices, default=GhostStatus.DISABLED)
    status_reason = models.TextField(blank=True)
    last_error = models.TextField(blank=True)  # traceback of the last failed evaluation, for operators
    last_evaluated_bar = models.DateTimeField(null=True, blank=True)
    auto_disable = models.JSONField(default=dict, blank=True)  # apps.engine.performance.AutoDisableRules params
    # the engine's state summary after the last evaluation, as [[label, value], ...] in the engine's order (a JSON
    # object would lose it on PostgreSQL: jsonb stores keys shortest first); read it through `state_items`
    state = models.JSONField(default=dict, blank=True)
    # where the current params came from when a study applied them: {study_id, trial_id, fold, at, by}; set by
    # apps.research.services.study_apply, cleared by any other params change (ghost_update_params)
    params_source = models.JSONField(null=True, blank=True)
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

    @property
    def state_items(self) -> list[tuple[str, str]]:
        """The state summary's (label, value) pairs in the engine's order; a row stored before the pairs (a JSON
        object) gives its keys as the database returns them, until the next evaluation rewrites it."""
        if isinstance(self.state, dict):
            return [(str(k), str(v)) for k, v in self.state.items()]
        return [(str(k), str(v)) for k, v in self.state or []]
