from django.db.models import OuterRef, QuerySet, Subquery

from apps.signals.models import Signal


def recent_signals(
    *, limit: int = 50, ghost_id: int | None = None, instrument_id: int | None = None
) -> list[Signal]:
    """The newest signals, optionally of one ghost or one instrument (each rides its own index)."""
    qs = Signal.objects.select_related("ghost").order_by("-bar_time", "-id")
    if ghost_id:
        qs = qs.filter(ghost_id=ghost_id)
    if instrument_id:
        qs = qs.filter(instrument_id=instrument_id)
    return list(qs[:limit])


def last_signal_by_ghost() -> dict[int, Signal]:
    """Each ghost's newest signal, in two queries whatever the ghost count or history length.

    A correlated subquery per ghost rides the (ghost, bar_time) unique index; scanning the newest N
    signals instead would lose a quiet ghost's last signal behind a busy one's.
    """
    from apps.ghosts.models import Ghost

    newest = Signal.objects.filter(ghost=OuterRef("pk")).order_by("-bar_time", "-id").values("id")[:1]
    ids = [i for i in Ghost.objects.annotate(last_id=Subquery(newest)).values_list("last_id", flat=True) if i]
    return {s.ghost_id: s for s in Signal.objects.filter(pk__in=ids).select_related("ghost")}


def signals_for_chart(*, instrument_id: int, since) -> QuerySet[Signal]:
    return Signal.objects.filter(instrument_id=instrument_id, bar_time__gte=since).order_by("bar_time")
