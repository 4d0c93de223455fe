"""MarketSimulator: deterministic, calibrated to real BTC/USDT figures, spikes and liquidations as specified.

The calibration figures are constants in apps.market.sim, measured by benchmarks/calibrate_sim.py on
the real files (the module docstring lists them); these tests hold the simulator to them.
"""

import math
import pickle

import numpy as np
import pandas as pd
import pytest

from apps.engine.bars import bars_from_records
from apps.engine.spike_fader import SpikeFaderConfig, evaluate
from apps.market import sim as simmod
from apps.market.bar_builder import BarBuilder
from apps.market.sim import MarketSimulator
from tests.datafiles import _flush_redis, services_use_test_redis  # noqa: F401

DAY_MS = 86_400_000
HOUR_MS = 3_600_000


def run(days: float, **kw) -> tuple[MarketSimulator, list, list, pd.DataFrame]:
    s = MarketSimulator(**kw)
    trades, liqs = s.advance(s.now_ms + int(days * DAY_MS))
    b = BarBuilder(has_liquidations=True)
    records = [bar for t in trades for bar in b.add_trade(t)]
    for liq in liqs:  # bars were already closed; liquidations are checked separately
        assert liq.side in ("long", "short")
    records += b.flush(s.now_ms + 60_000)
    return s, trades, liqs, bars_from_records(records)


def minute_figures(bars: pd.DataFrame) -> dict[str, float]:
    r = np.log(bars["close"]).diff().dropna()
    return {"std": float(r.std()), "robust": float(1.4826 * (r - r.median()).abs().median()),
            "vol_mean": float(bars["volume"].mean()), "vol_median": float(bars["volume"].median())}


@pytest.fixture(scope="module")
def default_run():
    return run(3, seed=7, trades_per_minute=5)


# -- determinism -------------------------------------------------------------------------------------------

def test_same_seed_same_stream_however_advance_is_chunked() -> None:
    a = MarketSimulator(seed=42, trades_per_minute=20)
    b = MarketSimulator(seed=42, trades_per_minute=20)
    end = a.now_ms + 2 * HOUR_MS
    ta, la = a.advance(end)
    tb, lb = [], []
    rng = np.random.default_rng(0)
    t = b.now_ms
    while t < end:  # a wall-clock driver: irregular steps
        t = min(t + int(rng.integers(1, 90_000)), end)
        x, y = b.advance(t)
        tb += x
        lb += y
    assert pickle.dumps(ta) == pickle.dumps(tb) and pickle.dumps(la) == pickle.dumps(lb)
    assert len(ta) > 1000 and len(la) > 0
    c = MarketSimulator(seed=43, trades_per_minute=20)
    tc, _ = c.advance(c.now_ms + 2 * HOUR_MS)
    assert pickle.dumps(tc) != pickle.dumps(ta)


def test_advance_returns_each_event_once_in_time_order() -> None:
    s = MarketSimulator(seed=1, trades_per_minute=10)
    t1, _ = s.advance(s.now_ms + 90_000)
    assert all(t.ts_ms <= simmod.DEFAULT_START_MS + 90_000 for t in t1)
    t2, _ = s.advance(simmod.DEFAULT_START_MS + 50_000)  # going back in time: nothing new
    assert t2 == []
    t3, _ = s.advance(simmod.DEFAULT_START_MS + 600_000)
    ts = [t.ts_ms for t in t1 + t3]
    assert ts == sorted(ts) and len({t.id for t in t1 + t3}) == len(ts)
    assert all(t.side in ("buy", "sell") and t.amount > 0 and t.price > 0 for t in t1 + t3)
    assert all(round(t.price, 2) == t.price for t in t3)  # on the 0.01 tick grid


@pytest.mark.parametrize("kw", [{"seed": "7"}, {"start_price": 0}, {"spikes_per_day": -1},
                                {"trades_per_minute": math.nan}, {"volume_median": 20.0},
                                {"spike_pct": (3.0, 1.5)}, {"taker_buy_share": 1.2}])
def test_bad_parameters_raise(kw: dict) -> None:
    with pytest.raises(ValueError):
        MarketSimulator(**kw)


# -- calibration -------------------------------------------------------------------------------------------

def test_calibration_without_spikes() -> None:
    """Background market: return std, robust std, mean and median volume within x1.25 of the real file."""
    _, trades, _, bars = run(3, seed=11, spikes_per_day=0, trades_per_minute=5)
    f = minute_figures(bars)
    assert len(bars) == 3 * 1440
    for got, real in ((f["std"], simmod.CAL_RETURN_STD), (f["robust"], simmod.CAL_RETURN_STD_ROBUST),
                      (f["vol_mean"], simmod.CAL_VOLUME_MEAN), (f["vol_median"], simmod.CAL_VOLUME_MEDIAN)):
        assert 1 / 1.25 <= got / real <= 1.25, (f, got, real)
    share = bars["taker_buy_volume"].sum() / bars["volume"].sum()
    assert abs(share - simmod.CAL_TAKER_BUY_SHARE) < 0.03


def test_calibration_with_default_spikes(default_run) -> None:
    """24 spikes a day: mean volume still within x1.25, robust return std within x1.75 (documented)."""
    _, _, _, bars = default_run
    f = minute_figures(bars)
    assert 1 / 1.25 <= f["vol_mean"] / simmod.CAL_VOLUME_MEAN <= 1.25, f
    assert 1 / 1.75 <= f["robust"] / simmod.CAL_RETURN_STD_ROBUST <= 1.75, f
    assert f["std"] > simmod.CAL_RETURN_STD  # spikes fatten the tails, as intended


# -- spikes and liquidations --------------------------------------------------------------------------------

def test_spikes_at_the_configured_rate(default_run) -> None:
    s, _, _, bars = default_run
    expected = 24 * 3
    assert 0.7 * expected <= len(s.spikes) <= 1.3 * expected
    assert all(0.015 <= sp.magnitude <= 0.03 and 2 <= (sp.end_ms - sp.start_ms) // 60_000 <= 8
               for sp in s.spikes)
    close = bars["close"]
    moved = 0
    for sp in s.spikes:
        t0 = pd.Timestamp(sp.start_ms - 60_000, unit="ms", tz="UTC")
        t1 = pd.Timestamp(sp.end_ms - 60_000, unit="ms", tz="UTC")
        if t0 in close.index and t1 in close.index:
            moved += sp.direction * (close[t1] / close[t0] - 1) >= 0.01
    assert moved >= 0.8 * len(s.spikes)  # the price really moves >= 1 % in the spike's direction
    few = MarketSimulator(seed=7, spikes_per_day=6, trades_per_minute=2)
    few.advance(few.now_ms + 2 * DAY_MS)
    assert 5 <= len(few.spikes) <= 20  # 12 expected
    none = MarketSimulator(seed=7, spikes_per_day=0, trades_per_minute=2)
    none.advance(none.now_ms + DAY_MS // 2)
    assert none.spikes == []


def test_liquidations_accompany_spikes_on_the_squeezed_side(default_run) -> None:
    s, trades, liqs, _ = default_run
    assert liqs
    spans = [(sp.start_ms, sp.end_ms, sp.direction) for sp in s.spikes]
    inside = [(liq, d) for liq in liqs for (a, b, d) in spans if a <= liq.ts_ms < b]
    assert len(inside) >= 0.8 * len(liqs)
    squeezed = sum((liq.side == "short") == (d > 0) for liq, d in inside)
    assert squeezed >= 0.9 * len(inside)  # up-spikes liquidate shorts, down-spikes longs
    seconds = [liq.ts_ms // 1000 for liq in liqs]
    assert len(seconds) == len(set(seconds))  # at most one per second, like Binance's throttled stream
    # the aggressors push the spike: taker buys dominate up-spike minutes
    up = [(a, b) for a, b, d in spans if d > 0]
    buy = sum(t.amount for t in trades if t.side == "buy" and any(a <= t.ts_ms < b for a, b in up))
    tot = sum(t.amount for t in trades if any(a <= t.ts_ms < b for a, b in up))
    assert buy / tot > 0.7


def test_the_spike_fader_sees_the_simulated_spikes(default_run) -> None:
    s, _, _, bars = default_run
    drafts = evaluate(bars, SpikeFaderConfig())
    sig = drafts[drafts["side"] != 0]
    assert len(sig) >= 0.3 * len(s.spikes)
    starts = np.array([sp.start_ms for sp in s.spikes])
    sig_ms = sig.index.as_unit("ms").asi8
    near = [np.any((starts <= t) & (t - starts <= 20 * 60_000)) for t in sig_ms]
    assert np.mean(near) >= 0.9  # signals come from the spikes, not from noise
