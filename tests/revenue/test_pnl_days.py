"""The materialised P&L (apps.revenue.pnl_days) against the ledger it is derived from.

Expected values are summed here straight from the positions (and the fills, for equity), never through the
selectors under test: after paper closes over several days, ghosts and instruments, a kill-switch flatten,
a back-dated close and a rebuild, every day row equals the sums over its positions to the cent.
"""

import importlib
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from django.apps import apps as django_apps
from django.conf import settings
from django.db.models import Sum

from apps.engine.performance import performance
from apps.engine.types import Draft
from apps.ghosts.services import ghost_create
from apps.market.models import FeedStatus, Instrument
from apps.revenue.models import GhostLedger, PnlDay
from apps.revenue.pnl_days import pnl_days_rebuild
from apps.revenue.selectors import ghost_performance, ghost_pnl_curve, performance_by_ghost
from apps.revenue.services import ghost_review
from apps.signals.services import signal_record
from apps.trading import selectors
from apps.trading.models import Fill, Position
from apps.trading.risk_services import positions_flatten
from apps.trading.services import position_close, signal_execute_paper

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
T0 = datetime(2026, 1, 5, 22, 0, tzinfo=UTC)  # late in the UTC day: closes spill over midnight
CENT = Decimal("0.01")


def _draft(side: int, entry: float, bar_time: datetime) -> Draft:
    return Draft(side=side, confidence=0.7, priority=2, entry=entry, stop=entry * (1 - side * 0.02),
                 target=entry * (1 + side * 0.02), size_mult=1.0, max_hold_s=0.0, reason="test",
                 bar_time=pd.Timestamp(bar_time))


def trade(ghost, *, minute: int, side: int, entry: float, exit_: float, hold_min: int = 30,
          reason: str = "stop") -> Position:
    """A paper round trip through the services: signal, fill, close."""
    bar = T0 + timedelta(minutes=minute)
    signal, _ = signal_record(ghost=ghost, bar_time=bar, draft=_draft(side, entry, bar))
    pos = signal_execute_paper(signal_id=signal.pk, price=Decimal(repr(entry)), at=bar + timedelta(minutes=1))
    assert pos is not None
    closed = position_close(position_id=pos.pk, price=exit_, at=bar + timedelta(minutes=1 + hold_min), reason=reason)
    assert closed is not None
    return closed


def expected_days() -> dict[tuple, dict]:
    """(ghost, instrument, UTC date of the close) -> sums over the closed positions, in Decimal."""
    out: dict[tuple, dict] = defaultdict(lambda: {"trades": 0, "wins": 0, "gross": Decimal(0), "fees": Decimal(0),
                                                  "win_net": Decimal(0), "loss_net": Decimal(0)})
    for p in Position.objects.filter(status="closed"):
        d = out[(p.ghost_id, p.instrument_id, p.closed_at.astimezone(UTC).date())]
        net = p.gross_pnl - p.fees
        d["trades"] += 1
        d["gross"] += p.gross_pnl
        d["fees"] += p.fees
        d["wins"] += net > 0
        d["win_net"] += net if net > 0 else 0
        d["loss_net"] += net if net < 0 else 0
    return out


def stored_days() -> dict[tuple, dict]:
    return {(r.ghost_id, r.instrument_id, r.day): {"trades": r.trades, "wins": r.wins, "gross": r.gross,
                                                   "fees": r.fees, "win_net": r.win_net, "loss_net": r.loss_net}
            for r in PnlDay.objects.all()}


def assert_rows_equal_ledger() -> None:
    want, got = expected_days(), stored_days()
    assert want, "no closed positions: nothing was tested"
    assert set(got) == set(want)
    for key, w in want.items():
        g = got[key]
        assert (g["trades"], g["wins"]) == (w["trades"], w["wins"]), key
        for f in ("gross", "fees", "win_net", "loss_net"):
            assert g[f].quantize(CENT) == w[f].quantize(CENT), (key, f, g[f], w[f])
    # The running figures: the engine's max drawdown over the per-trade curve, and the largest absolute fall.
    cap = float(settings.HFT_START_CAPITAL)
    for lg in GhostLedger.objects.all():
        curve = ghost_pnl_curve(lg.ghost_id)
        levels = np.array([cap + c for c in curve])
        peak = np.maximum.accumulate(levels)
        assert lg.trades == len(curve) - 1
        assert lg.max_dd == pytest.approx(float(((peak - levels) / peak).max()), abs=1e-12)
        assert float(lg.max_dd_abs) == pytest.approx(float((peak - levels).max()), abs=1e-6)
        assert float(lg.cum_net) == pytest.approx(curve[-1], abs=1e-6)


def ledger_equity() -> Decimal:
    """The old definition, straight from the ledger: start + realised gross - every fee paid + open marks."""
    gross = Position.objects.filter(status="closed").aggregate(s=Sum("gross_pnl"))["s"] or Decimal(0)
    fees = Fill.objects.aggregate(s=Sum("fee"))["s"] or Decimal(0)
    prices = {fs.instrument_id: float(fs.last_price) for fs in FeedStatus.objects.exclude(last_price=None)}
    marks = sum((selectors.unrealised(p, prices.get(p.instrument_id)) for p in Position.objects.filter(status="open")),
                Decimal(0))
    return settings.HFT_START_CAPITAL + gross - fees + marks


@pytest.fixture
def book(desk):
    """Two ghosts on BTC, one on ETH; wins, losses and a break-even trade over three UTC days."""
    eth = Instrument.objects.create(exchange=desk["exchange"], symbol="ETH/USDT", base="ETH", quote="USDT")
    FeedStatus.objects.create(instrument=eth, source="sim", last_price=Decimal("3000"))
    FeedStatus.objects.filter(instrument=desk["instrument"]).update(last_price=Decimal("101"))
    g1 = desk["ghost"]
    g2 = ghost_create(name="fader-btc-2", kind="spike_fader", instrument=desk["instrument"], enabled=True)
    g3 = ghost_create(name="fader-eth", kind="spike_fader", instrument=eth, enabled=True)
    m = 0
    for i, (side, entry, exit_) in enumerate([(1, 100.0, 103.0), (1, 100.0, 98.5), (-1, 100.0, 97.0),
                                              (1, 100.0, 100.0), (-1, 100.0, 104.0), (1, 100.0, 99.0)]):
        for g, scale in ((g1, 1.0), (g2, 1.01), (g3, 30.0)):
            trade(g, minute=m, side=side, entry=entry * scale, exit_=exit_ * scale, hold_min=30 + 5 * i)
            m += 1
        m += 700  # the next round closes on the next UTC day
    return {"ghosts": [g1, g2, g3], "eth": eth}


def test_paper_closes_fill_the_day_rows_to_the_cent(book):
    assert len({d for (_, _, d) in stored_days()}) >= 3  # closes on several UTC days
    assert_rows_equal_ledger()
    assert selectors.equity().quantize(CENT) == ledger_equity().quantize(CENT)


def test_kill_switch_flatten_counts_its_closes(book):
    g1, g2, g3 = book["ghosts"]
    for g, px in ((g1, 101.0), (g2, 102.0), (g3, 3010.0)):
        bar = T0 + timedelta(days=5)
        signal, _ = signal_record(ghost=g, bar_time=bar, draft=_draft(1, px, bar))
        assert signal_execute_paper(signal_id=signal.pk, price=Decimal(repr(px)), at=bar + timedelta(minutes=1))
    before = selectors.equity()
    assert before.quantize(CENT) == ledger_equity().quantize(CENT)
    closed = positions_flatten(reason="kill switch: test")
    assert len(closed) == 3 and not Position.objects.filter(status="open").exists()
    assert_rows_equal_ledger()
    assert selectors.equity().quantize(CENT) == ledger_equity().quantize(CENT)


def test_back_dated_close_rebuilds_the_running_figures(book):
    g1 = book["ghosts"][0]
    # A replay of older data: a close days before the ghost's last one, a deep loss in the middle of the curve.
    bar = T0 - timedelta(days=3)
    signal, _ = signal_record(ghost=g1, bar_time=bar, draft=_draft(1, 100.0, bar))
    pos = signal_execute_paper(signal_id=signal.pk, price=Decimal("100"), at=bar + timedelta(minutes=1))
    position_close(position_id=pos.pk, price=90.0, at=bar + timedelta(minutes=20), reason="stop")
    assert_rows_equal_ledger()


def test_rebuild_restores_rows_equal_to_the_incremental_ones(book):
    incremental = stored_days()
    ledgers = {lg.ghost_id: (lg.trades, lg.cum_net, lg.max_dd_abs) for lg in GhostLedger.objects.all()}
    PnlDay.objects.update(gross=0, trades=99)  # damaged
    PnlDay.objects.first().delete()
    GhostLedger.objects.all().delete()
    assert pnl_days_rebuild() == len(incremental)
    assert_rows_equal_ledger()
    rebuilt = stored_days()
    for key, row in incremental.items():
        assert {k: v.quantize(CENT) if isinstance(v, Decimal) else v for k, v in rebuilt[key].items()} == \
               {k: v.quantize(CENT) if isinstance(v, Decimal) else v for k, v in row.items()}
    for lg in GhostLedger.objects.all():
        trades, cum, dd = ledgers[lg.ghost_id]
        assert lg.trades == trades and lg.cum_net.quantize(CENT) == cum.quantize(CENT)
        assert lg.max_dd_abs.quantize(CENT) == dd.quantize(CENT)


def test_the_data_migration_builds_the_same_rows(book):
    incremental = stored_days()
    PnlDay.objects.all().delete()
    GhostLedger.objects.all().delete()
    migration = importlib.import_module("apps.revenue.migrations.0003_pnl_days_from_ledger")
    migration.build(django_apps, None)
    assert set(stored_days()) == set(incremental)
    assert_rows_equal_ledger()
    migration.unbuild(django_apps, None)
    assert not PnlDay.objects.exists() and not GhostLedger.objects.exists()


def test_performance_from_rows_equals_the_engine_on_every_trade(book):
    """The ghosts page's figures from day rows = the engine's `performance` over each trade and the curve."""
    cap = float(settings.HFT_START_CAPITAL)
    ids = [g.pk for g in book["ghosts"]]
    batch = performance_by_ghost(ids)
    for gid in ids:
        rows = list(Position.objects.filter(ghost_id=gid, status="closed").order_by("closed_at", "id"))
        pnls = [float(p.gross_pnl - p.fees) for p in rows]
        times = pd.DatetimeIndex([rows[0].closed_at] + [p.closed_at for p in rows])
        curve = pd.Series([cap] + list(cap + np.cumsum(pnls)), index=times, dtype="float64")
        want = performance(pnls, curve, freq="1D")
        got = batch[gid]
        assert got == ghost_performance(gid)
        for f in ("trades", "wins", "periods"):
            assert getattr(got, f) == getattr(want, f), f
        for f in ("win_rate", "gross_profit", "gross_loss", "profit_factor", "net_pnl", "sharpe", "sortino",
                  "max_drawdown"):
            assert getattr(got, f) == pytest.approx(getattr(want, f), rel=1e-9, abs=1e-9), f


def test_review_judges_the_drawdown_from_the_running_figures(book, settings):
    from apps.trading.models import RiskSettings

    g1 = book["ghosts"][0]
    fall = float(GhostLedger.objects.get(ghost=g1).max_dd_abs)
    assert fall > 0
    # A stop just under the ghost's worst fall disables it; the reason names the fall.
    pct = fall / float(settings.HFT_START_CAPITAL) * 100 * 0.99
    RiskSettings.objects.update_or_create(pk=1, defaults={"params": {"ghost_drawdown_stop_pct": pct}})
    reasons = ghost_review(ghost_id=g1.pk)
    assert any(f"ghost drawdown {fall:.2f}" in r for r in reasons), reasons


def test_the_rebuild_command(book):
    import io

    from django.core.management import call_command

    PnlDay.objects.all().delete()
    out = io.StringIO()
    call_command("pnl_days_rebuild", stdout=out)
    assert f"{len(expected_days())} day rows, 18 closed trades" in out.getvalue()
    assert_rows_equal_ledger()
