"""Runtime services: the desk a fresh `make run` starts with (instrument, feed, ghosts)."""

from django.db import transaction


@transaction.atomic
def desk_ensure() -> str:
    """Default desk for `make run`: BTC/USDT with a feed and one enabled ghost of every desk kind (paper).

    Re-run on every start: a kind added to the engine since the last start gets its ghost; existing ghosts,
    their params and on/off state are left as the operators set them.
    """
    from django.conf import settings

    from apps.engine.registry import DESK_KINDS
    from apps.ghosts.models import Ghost
    from apps.ghosts.services import ghost_create
    from apps.market.models import Exchange, FeedStatus, Instrument

    ex, _ = Exchange.objects.get_or_create(code="binance", defaults={"name": "Binance"})
    inst, _ = Instrument.objects.get_or_create(
        exchange=ex, symbol="BTC/USDT", defaults={"base": "BTC", "quote": "USDT"}
    )
    fs, _ = FeedStatus.objects.get_or_create(instrument=inst, defaults={"source": settings.HFT_FEED})
    if fs.state == FeedStatus.State.STOPPED or fs.source != settings.HFT_FEED:
        fs.state, fs.source = FeedStatus.State.STARTING, settings.HFT_FEED
        fs.save(update_fields=["state", "source", "updated_at"])
    present = set(Ghost.objects.filter(instrument=inst).values_list("kind", flat=True))
    for kind in DESK_KINDS:  # lab-only kinds (the textbook fader) are not desk ghosts
        name = f"{kind.replace('_', '-')}-{inst.base.lower()}"
        if kind not in present and not Ghost.objects.filter(name=name).exists():
            ghost_create(name=name, kind=kind, instrument=inst, enabled=True)
    return f"{inst} feed={settings.HFT_FEED}, ghosts={Ghost.objects.filter(instrument=inst).count()}"
