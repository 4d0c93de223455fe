"""The ghosts task is safe to run twice for one bar: one signal, one order, one fill."""

from datetime import timedelta
from decimal import Decimal

import numpy as np
import pytest
from django.core.cache import cache

from apps.market.models import Candle
from apps.market.prices import price_set
from apps.runtime.evaluation import bar_evaluate, summary_key
from apps.signals.models import Fate, Signal
from apps.trading.models import Fill, Order, Position
from tests.datafiles import synthetic_bars

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def store_spike_series(instrument) -> Candle:
    """300 quiet 1m bars at ~100, then a 2 % up-move within 15 minutes on triple volume; the last bar
    is the first to cross the spike fader's 1.2 % threshold, so it is the one that fires."""
    rng = np.random.default_rng(3)
    quiet = 100 + rng.normal(0, 0.02, 285)
    ramp = np.linspace(100.07, 100.9, 14)  # < 1.2 % until the last bar
    closes = np.concatenate([quiet, ramp, [102.0]])
    volumes = np.concatenate([np.full(285, 10.0), np.full(15, 30.0)])
    bars = synthetic_bars(closes, volumes, start="2026-01-05 00:00")
    rows = []
    for t, r in bars.iterrows():
        vol = Decimal(f"{r.volume:.4f}")
        rows.append(Candle(
            instrument=instrument, open_time=t.to_pydatetime(),
            open=Decimal(f"{r.open:.4f}"), high=Decimal(f"{r.high:.4f}"), low=Decimal(f"{r.low:.4f}"),
            close=Decimal(f"{r.close:.4f}"), volume=vol, taker_buy_volume=vol / 2, taker_sell_volume=vol / 2,
            trade_count=100,
        ))
    Candle.objects.bulk_create(rows)
    return rows[-1]


def test_bar_evaluate_twice_creates_one_signal_order_fill(desk):
    inst = desk["instrument"]
    last = store_spike_series(inst)
    bar_close_ms = int(last.open_time.timestamp() * 1000) + 60_000
    price_set(inst.pk, 101.95, bar_close_ms + 250)

    created = bar_evaluate(instrument_id=inst.pk, bar_time=last.open_time)
    assert len(created) == 1, "the synthetic spike must fire the spike fader"
    signal = Signal.objects.get()
    assert signal.side == "short" and signal.bar_time == last.open_time  # a fader sells an up-spike
    signal.refresh_from_db()
    assert signal.fate == Fate.TAKEN

    assert bar_evaluate(instrument_id=inst.pk, bar_time=last.open_time) == []
    assert (Signal.objects.count(), Position.objects.count(), Order.objects.count(), Fill.objects.count()) == (
        1, 1, 1, 1)
    fill = Fill.objects.get()
    assert fill.filled_at == last.open_time + timedelta(minutes=1, milliseconds=250)


def test_bar_evaluate_without_fresh_price_marks_stale(desk):
    inst = desk["instrument"]
    last = store_spike_series(inst)
    bar_close_ms = int(last.open_time.timestamp() * 1000) + 60_000
    price_set(inst.pk, 101.0, bar_close_ms - 30_000)  # a price from inside the bar is not after its close
    assert len(bar_evaluate(instrument_id=inst.pk, bar_time=last.open_time)) == 1
    assert Signal.objects.get().fate == Fate.STALE and not Fill.objects.exists()


def test_toggle_takes_effect_at_the_next_evaluation(desk, make_user):
    """Disabled by an operator: the very next bar evaluation skips the ghost; re-enabled: it trades again."""
    from apps.ghosts.services import ghost_set_enabled

    inst, ghost = desk["instrument"], desk["ghost"]
    last = store_spike_series(inst)
    price_set(inst.pk, 101.95, int(last.open_time.timestamp() * 1000) + 60_250)
    op = make_user("olga", "operator")
    ghost_set_enabled(ghost_id=ghost.pk, enabled=False, actor=op, reason="pause for review")
    assert bar_evaluate(instrument_id=inst.pk, bar_time=last.open_time) == []
    assert not Signal.objects.exists()
    ghost_set_enabled(ghost_id=ghost.pk, enabled=True, actor=op, reason="resume")
    assert len(bar_evaluate(instrument_id=inst.pk, bar_time=last.open_time)) == 1
    assert Signal.objects.get().fate == Fate.TAKEN


def test_a_raising_ghost_is_degraded_with_traceback_and_recovers(desk, monkeypatch):
    from apps.engine import registry
    from apps.ghosts.models import Ghost, GhostStatus

    inst, ghost = desk["instrument"], desk["ghost"]
    last = store_spike_series(inst)
    spec = registry.GHOSTS["spike_fader"]

    def broken(bars, cfg):
        raise ZeroDivisionError("boom in the ghost")

    monkeypatch.setitem(registry.GHOSTS, "spike_fader", spec.__class__(**{**spec.__dict__, "evaluate": broken}))
    assert bar_evaluate(instrument_id=inst.pk, bar_time=last.open_time) == []
    ghost = Ghost.objects.get(pk=ghost.pk)
    assert ghost.status == GhostStatus.DEGRADED and ghost.enabled
    assert "ZeroDivisionError: boom in the ghost" in ghost.status_reason and "Traceback" in ghost.last_error
    monkeypatch.setitem(registry.GHOSTS, "spike_fader", spec)
    bar_evaluate(instrument_id=inst.pk, bar_time=last.open_time)
    assert Ghost.objects.get(pk=ghost.pk).status == GhostStatus.ACTIVE


def test_the_ghosts_state_summary_is_stored_and_a_failing_summary_does_not_degrade(desk, monkeypatch):
    from apps.engine import registry
    from apps.ghosts.events import ghost_payload
    from apps.ghosts.models import Ghost, GhostStatus

    inst, ghost = desk["instrument"], desk["ghost"]
    last = store_spike_series(inst)
    spec = registry.GHOSTS["spike_fader"]

    def summary(bars, cfg):
        return {"last close": f"{bars['close'].iloc[-1]:.2f}", "bars": len(bars)}

    monkeypatch.setitem(registry.GHOSTS, "spike_fader", spec.__class__(**{**spec.__dict__, "summary": summary}))
    bar_evaluate(instrument_id=inst.pk, bar_time=last.open_time)
    ghost = Ghost.objects.get(pk=ghost.pk)
    assert [label for label, _ in ghost.state_items] == ["last close", "bars"]  # the summary's order
    state = dict(ghost.state_items)
    assert state["last close"] == f"{float(last.close):.2f}"
    assert int(state["bars"]) >= registry.warmup_minutes_for("spike_fader", {})
    assert ghost_payload(ghost, type_="ghost.status", actor="system")["state"] == [list(p) for p in ghost.state_items]

    def broken_summary(bars, cfg):
        raise KeyError("no such column")

    monkeypatch.setitem(registry.GHOSTS, "spike_fader", spec.__class__(**{**spec.__dict__, "summary": broken_summary}))
    bar_evaluate(instrument_id=inst.pk, bar_time=last.open_time)  # within SUMMARY_EVERY_S: not summarised
    cache.delete(summary_key(ghost.pk))
    bar_evaluate(instrument_id=inst.pk, bar_time=last.open_time)  # summarised, and it raises
    after = Ghost.objects.get(pk=ghost.pk)
    assert after.status == GhostStatus.ACTIVE and after.state == ghost.state  # kept, not wiped
