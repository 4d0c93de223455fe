"""Build the day rows and the ghosts' running figures from the positions already closed (issue 13).

Self-contained on the historical models (the service, apps.revenue.pnl_days.pnl_days_rebuild, may change
later; a migration must not): one pass over the closed positions in each ghost's closing order.
"""

from collections import defaultdict
from datetime import UTC
from decimal import Decimal

from django.conf import settings
from django.db import migrations

ZERO = Decimal(0)


def build(apps, schema_editor):
    Position = apps.get_model("trading", "Position")
    PnlDay = apps.get_model("revenue", "PnlDay")
    GhostLedger = apps.get_model("revenue", "GhostLedger")
    capital = settings.HFT_START_CAPITAL
    days: dict = defaultdict(lambda: {"trades": 0, "wins": 0, "gross": ZERO, "fees": ZERO, "win_net": ZERO,
                                      "loss_net": ZERO})
    ledgers: dict = {}
    rows = (Position.objects.filter(status="closed").order_by("ghost_id", "closed_at", "id")
            .values_list("ghost_id", "instrument_id", "closed_at", "id", "gross_pnl", "fees"))
    for ghost_id, instrument_id, closed_at, pk, gross, fees in rows.iterator(chunk_size=5000):
        net = gross - fees
        d = days[(ghost_id, instrument_id, closed_at.astimezone(UTC).date())]
        d["trades"] += 1
        d["gross"] += gross
        d["fees"] += fees
        if net > 0:
            d["wins"] += 1
            d["win_net"] += net
        elif net < 0:
            d["loss_net"] += net
        lg = ledgers.setdefault(ghost_id, {"trades": 0, "cum_net": ZERO, "peak_net": ZERO, "max_dd_abs": ZERO,
                                           "max_dd": 0.0})
        lg["trades"] += 1
        lg["cum_net"] += net
        lg["peak_net"] = max(lg["peak_net"], lg["cum_net"])
        fall = lg["peak_net"] - lg["cum_net"]
        lg["max_dd_abs"] = max(lg["max_dd_abs"], fall)
        if capital + lg["peak_net"] > 0:
            lg["max_dd"] = max(lg["max_dd"], float(fall / (capital + lg["peak_net"])))
        lg["last_closed_at"], lg["last_position_id"] = closed_at, pk
    PnlDay.objects.bulk_create(
        [PnlDay(ghost_id=g, instrument_id=i, day=day, **v) for (g, i, day), v in days.items()], batch_size=2000)
    GhostLedger.objects.bulk_create([GhostLedger(ghost_id=g, capital=capital, **v) for g, v in ledgers.items()],
                                    batch_size=2000)


def unbuild(apps, schema_editor):
    apps.get_model("revenue", "PnlDay").objects.all().delete()
    apps.get_model("revenue", "GhostLedger").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [
        ("revenue", "0002_pnl_days"),
        ("trading", "0004_indexes_for_keyset"),
    ]

    operations = [migrations.RunPython(build, unbuild)]
