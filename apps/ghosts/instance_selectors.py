"""Reads for the Instruments page's ghost instances (issue 11)."""

from django.apps import apps
from django.db.models import Exists, OuterRef, QuerySet

from apps.ghosts.models import Ghost


def ghost_instances() -> QuerySet[Ghost]:
    """Every ghost with its instrument and `has_trades` (an EXISTS per ghost, never a count over the ledger).
    The Position model is looked up by name: ghosts do not import trading (trading imports ghosts)."""
    position = apps.get_model("trading", "Position")
    return (Ghost.objects.select_related("instrument__exchange")
            .annotate(has_trades=Exists(position.objects.filter(ghost=OuterRef("pk"))))
            .order_by("instrument_id", "name"))
