from dataclasses import dataclass

from django.db.models import QuerySet

from apps.ghosts.models import Ghost
from apps.revenue.selectors import Progress, targets_by_ghost
from apps.signals.models import Signal
from apps.signals.selectors import last_signal_by_ghost
from apps.trading.selectors import ghost_period_pnl


def ghosts() -> QuerySet[Ghost]:
    return Ghost.objects.select_related("instrument__exchange").order_by("name")


def enabled_ghosts_for(*, instrument_id: int) -> QuerySet[Ghost]:
    return Ghost.objects.filter(instrument_id=instrument_id, enabled=True).order_by("id")


TREND_KIND = "trend_filter"


def trend_config_for(instrument_id: int):
    """The trend gate's config: the params of the instrument's trend filter ghost. The gate applies whether that
    ghost trades or not (disabling it stops its own drafts, not its veto); an instrument without a trend
    filter ghost has no gate (None), which the fate texts say."""
    from apps.engine.registry import GHOSTS

    spec = GHOSTS.get(TREND_KIND)
    if spec is None:
        return None
    params = (
        Ghost.objects.filter(instrument_id=instrument_id, kind=TREND_KIND).values_list("params", flat=True).first()
    )
    return None if params is None else spec.config_cls.from_params(params)


def warmup_minutes_needed(*, instrument_id: int) -> int:
    """Minutes of history the live window needs: the longest warm-up of the instrument's enabled ghosts
    and of its trend gate (which judges every draft even while the trend ghost itself is off)."""
    from apps.engine.registry import GHOSTS, warmup_minutes_for

    warmups = [warmup_minutes_for(g.kind, g.params) for g in enabled_ghosts_for(instrument_id=instrument_id)
               if g.kind in GHOSTS]
    trend_cfg = trend_config_for(instrument_id)
    if trend_cfg is not None:
        warmups.append(warmup_minutes_for(TREND_KIND, trend_cfg))
    return max(warmups, default=0)


@dataclass(frozen=True)
class GhostRow:
    ghost: Ghost
    progress: Progress
    last_signal: Signal | None


def ghost_rows() -> list[GhostRow]:
    """Everything the ghosts page shows, in a fixed number of queries whatever the ghost count."""
    targets = targets_by_ghost()
    pnl = ghost_period_pnl()
    last = last_signal_by_ghost()
    rows = []
    for g in ghosts():
        t = targets.get(g.pk)
        rows.append(
            GhostRow(
                ghost=g,
                progress=Progress(
                    amount=t.amount if t else None,
                    period=t.period if t else "day",
                    pnl=pnl[g.pk].total if g.pk in pnl else 0,
                ),
                last_signal=last.get(g.pk),
            )
        )
    return rows
