"""The whole-system backtest (apps.engine.backtest) on hand-built bars and drafts.

Drafts are written by hand (drafts_frame) so each case isolates one rule: the fates the manager gives,
the fill at the next open, stop first, fees both ways, the kill switch that never resets by itself, the
auto-disable rules. Expected figures are worked out here from the rules (DESIGN §4, issue 5), not read
back from the code. A property test on random walks with random drafts rebuilds the equity curve from
the trades list and checks the ledger identity to the cent.
"""

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.engine.backtest import KILL_SWITCH, BacktestConfig, GhostSetup, run_backtest
from apps.engine.exits import END_OF_DATA, STOP, TARGET, TIME
from apps.engine.fills import FillModel
from apps.engine.manager import BLOCKED_RISK, BLOCKED_TREND, CONFLICT, GHOST_DISABLED, OUTSCORED, TAKEN
from apps.engine.performance import AutoDisableRules
from apps.engine.risk import RiskLimits
from apps.engine.types import drafts_frame, idle_draft_arrays
from tests.datafiles import _flush_redis, services_use_test_redis  # noqa: F401

FM = FillModel(taker_fee=0.001, maker_fee=0.001, slippage_bps=5.0)
CFG = BacktestConfig(fill_model=FM)
CENT = Decimal("0.01")


def bars_of(*ohlc: tuple[float, float, float, float], start: str = "2025-03-01 10:00",
            freq: str = "1min") -> pd.DataFrame:
    idx = pd.date_range(start, periods=len(ohlc), freq=freq, tz="UTC", name="open_time")
    return pd.DataFrame(np.asarray(ohlc, dtype=float), columns=["open", "high", "low", "close"], index=idx)


def flat(n: int, price: float = 100.0, start: str = "2025-03-01 10:00", freq: str = "1min") -> list:
    return [(price, price + 0.1, price - 0.1, price)] * n


def drafts(bars: pd.DataFrame, rows: dict[int, dict]) -> pd.DataFrame:
    """A drafts frame on bars.index with the given {bar position: fields} rows (side, entry, stop, ...)."""
    out = idle_draft_arrays(len(bars))
    for pos, f in rows.items():
        out["side"][pos] = f["side"]
        out["confidence"][pos] = f.get("confidence", 0.7)
        out["priority"][pos] = f.get("priority", 2)
        for k in ("entry", "stop", "target"):
            out[k][pos] = f[k]
        out["size_mult"][pos] = f.get("size_mult", 1.0)
        out["max_hold_s"][pos] = f.get("max_hold_s", 3600.0)
        out["reason"][pos] = f.get("reason", "hand-built")
    return drafts_frame(bars.index, **out)


def ghost(gid: int, **kw) -> GhostSetup:
    return GhostSetup(ghost_id=gid, name=kw.pop("name", f"g{gid}"), kind=kw.pop("kind", "spike_fader"), **kw)


LONG = {"side": 1, "entry": 100.0, "stop": 99.0, "target": 102.0}
SHORT = {"side": -1, "entry": 100.0, "stop": 101.0, "target": 98.0}


def equity_from_trades(res, bars: pd.DataFrame) -> np.ndarray:
    """The equity curve rebuilt from the trades list alone: realised net P&L once a trade exited, the
    entry fee and the mark at each close while it is open."""
    idx, closes = bars.index, bars["close"].to_numpy()
    eq = np.full(len(bars), float(res.start_capital))
    for t in res.trades:
        i0, i1 = idx.get_loc(t.entry_time), idx.get_loc(t.exit_time)
        open_span = slice(i0, i1)  # open at these closes; realised from the exit bar on
        eq[open_span] += -float(t.entry_fee) + t.side * float(t.qty) * (closes[open_span] - float(t.entry_price))
        eq[i1:] += float(t.net_pnl)
    return eq


def check_ledger(res, bars: pd.DataFrame) -> None:
    total = sum((t.net_pnl for t in res.trades), Decimal(0))
    assert res.final_equity == res.start_capital + total  # exact, Decimal
    assert round(Decimal(repr(float(res.equity.iloc[-1]))), 2) == res.final_equity.quantize(CENT)
    np.testing.assert_allclose(res.equity.to_numpy(), equity_from_trades(res, bars), rtol=0, atol=1e-6)
    for t in res.trades:
        assert t.entry_fee > 0 and t.exit_fee > 0
        assert t.entry_time >= t.signal_time + pd.Timedelta(minutes=1)  # never before the signal bar closed


# -- fills ---------------------------------------------------------------------------------------------

def test_entry_fills_at_next_open_with_slippage_fees_both_ways_and_target() -> None:
    bars = bars_of((100, 100.1, 99.9, 100), (100, 100.1, 99.9, 100), (100.5, 100.8, 100.4, 100.6),
                   (100.6, 103.0, 100.5, 102.9), (102.9, 103, 102.8, 103))
    res = run_backtest(bars, [ghost(1)], CFG, drafts={1: drafts(bars, {1: LONG})})
    (t,) = res.trades
    fill = 100.5 * 1.0005  # bar 2's open + 5 bps, paid by the buyer
    assert t.entry_time == bars.index[2] and float(t.entry_price) == pytest.approx(fill, abs=1e-8)
    # size: 1 % of 10 000 over the 1.0 reference stop distance = 100 BTC, capped at 10 % notional = 1000 / 100
    # decided at the 100 close; the fill keeps that 1 000 notional: qty = 1000 / fill (sized from the FILL)
    qty = round(1000 / fill, 8)
    assert float(t.qty) == pytest.approx(qty, abs=1e-12) and float(t.qty) * fill == pytest.approx(1000, abs=1e-6)
    target = 102.0 * fill / 100.0  # the 2 % target re-anchored on the fill; bar 3's high 103 reaches it
    assert t.reason == TARGET and t.exit_time == bars.index[3]
    assert float(t.exit_price) == pytest.approx(target, abs=1e-8)  # a resting limit: no slippage
    assert float(t.entry_fee) == pytest.approx(0.001 * fill * qty, abs=1e-8)
    assert float(t.exit_fee) == pytest.approx(0.001 * target * qty, abs=1e-8)
    assert float(t.net_pnl) == pytest.approx(qty * (target - fill) - 0.001 * qty * (fill + target), abs=1e-7)
    assert list(res.fates["fate"]) == [TAKEN]
    check_ledger(res, bars)


def test_bar_holding_stop_and_target_exits_at_the_stop_with_slippage() -> None:
    bars = bars_of((100, 100.1, 99.9, 100), (100, 100.1, 99.9, 100), (100, 103, 98, 100), (100, 100, 100, 100))
    res = run_backtest(bars, [ghost(1)], CFG, drafts={1: drafts(bars, {0: LONG})})
    (t,) = res.trades
    fill = 100 * 1.0005
    assert t.entry_time == bars.index[1]
    assert t.reason == STOP and t.exit_time == bars.index[2]  # bar 1 stays inside; bar 2 holds both levels
    assert float(t.exit_price) == pytest.approx(99.0 * fill / 100 * 0.9995, abs=1e-8)  # stop, sold 5 bps down
    assert t.net_pnl < 0
    check_ledger(res, bars)


def test_time_stop_exits_at_the_open_and_end_of_data_at_the_last_close() -> None:
    n = 10
    bars = bars_of(*flat(n))
    d = drafts(bars, {0: {**LONG, "max_hold_s": 180.0}, 6: SHORT})
    res = run_backtest(bars, [ghost(1)], CFG, drafts={1: d})
    first, last = res.trades
    assert first.entry_time == bars.index[1] and first.reason == TIME
    assert first.exit_time == bars.index[4]  # 180 s of data time after the 10:01 fill
    assert float(first.exit_price) == pytest.approx(100 * 0.9995, abs=1e-8)  # a market sell at the open
    assert last.reason == END_OF_DATA and last.exit_time == bars.index[-1]
    assert float(last.exit_price) == 100.0  # a mark at the last close, no slippage
    check_ledger(res, bars)


def test_an_open_beyond_the_target_exits_at_that_open() -> None:
    # long filled at bar 1's open 100 (x 1.0005); target 102 x k; bar 2 opens at 103, beyond it
    bars = bars_of((100, 100.1, 99.9, 100), (100, 100.1, 99.9, 100), (103, 103.4, 102.9, 103.2),
                   (103, 103, 103, 103))
    res = run_backtest(bars, [ghost(1)], CFG, drafts={1: drafts(bars, {0: LONG})})
    (t,) = res.trades
    assert (t.reason, t.exit_time, float(t.exit_price)) == (TARGET, bars.index[2], 103.0)  # no slippage: a limit
    check_ledger(res, bars)
    # a short gapped through its target the same way
    bars = bars_of((100, 100.1, 99.9, 100), (100, 100.1, 99.9, 100), (97, 97.2, 96.5, 97), (97, 97, 97, 97))
    (t,) = run_backtest(bars, [ghost(1)], CFG, drafts={1: drafts(bars, {0: SHORT})}).trades
    assert (t.reason, t.exit_time, float(t.exit_price)) == (TARGET, bars.index[2], 97.0)


def test_a_due_time_stop_fires_at_the_open_even_beyond_a_level() -> None:
    # max hold 120 s from the 10:01 fill: due at bar 3 (10:03), which opens beyond the stop and whose range
    # holds the target too: the time stop wins at the open (a market sell, with slippage)
    rows = [(100, 100.1, 99.9, 100)] * 3 + [(98, 103, 97.5, 101), (101, 101, 101, 101)]
    bars = bars_of(*rows)
    (t,) = run_backtest(bars, [ghost(1)], CFG, drafts={1: drafts(bars, {0: {**LONG, "max_hold_s": 120.0}})}).trades
    assert (t.reason, t.exit_time) == (TIME, bars.index[3])
    assert float(t.exit_price) == pytest.approx(98 * 0.9995, abs=1e-8)
    # one minute more of hold: the same bar exits as a gap through the stop, at the open
    (t,) = run_backtest(bars, [ghost(1)], CFG, drafts={1: drafts(bars, {0: {**LONG, "max_hold_s": 180.0}})}).trades
    assert (t.reason, t.exit_time) == (STOP, bars.index[3])


def test_taken_on_the_last_bar_is_reported_unfilled() -> None:
    bars = bars_of(*flat(3))
    res = run_backtest(bars, [ghost(1)], CFG, drafts={1: drafts(bars, {2: LONG})})
    assert res.trades == () and res.unfilled == ((bars.index[2], 1),)
    assert res.final_equity == res.start_capital


# -- fates ---------------------------------------------------------------------------------------------

def test_fates_taken_outscored_disabled_and_position_open() -> None:
    bars = bars_of(*flat(6))
    ghosts = [ghost(1), ghost(2), ghost(3, enabled=False)]
    d = {
        1: drafts(bars, {0: {**LONG, "confidence": 0.9}, 2: LONG}),
        2: drafts(bars, {0: {**LONG, "confidence": 0.4}}),
        3: drafts(bars, {0: {**LONG, "confidence": 1.0}}),
    }
    res = run_backtest(bars, ghosts, CFG, drafts=d)
    f = res.fates.set_index(["bar_time", "ghost_id"])["fate"]
    t0, t2 = bars.index[0], bars.index[2]
    assert f[(t0, 1)] == TAKEN
    assert f[(t0, 2)] == OUTSCORED
    assert f[(t0, 3)] == GHOST_DISABLED
    assert f[(t2, 1)] == BLOCKED_RISK  # ghost 1 still holds its first position: recorded, not reversed
    assert "max_open_per_ghost" in res.fates.set_index(["bar_time", "ghost_id"])["detail"][(t2, 1)]
    assert "g1" in res.fates.set_index(["bar_time", "ghost_id"])["detail"][(t0, 2)]  # names the winner
    assert [t.ghost_id for t in res.trades] == [1]
    counts = res.fate_counts()
    assert counts.loc["g1", TAKEN] == 1 and counts.loc["g1", BLOCKED_RISK] == 1


def test_strong_opposite_drafts_conflict_and_nobody_trades() -> None:
    bars = bars_of(*flat(4))
    d = {1: drafts(bars, {1: {**LONG, "confidence": 0.9}}), 2: drafts(bars, {1: {**SHORT, "confidence": 0.9}})}
    res = run_backtest(bars, [ghost(1), ghost(2)], CFG, drafts=d)
    assert set(res.fates["fate"]) == {CONFLICT} and res.trades == ()


def test_trend_gate_blocks_while_the_trend_filter_warms_up() -> None:
    bars = bars_of(*flat(30))
    ghosts = [ghost(1), ghost(2, kind="trend_filter")]
    d = {1: drafts(bars, {3: LONG, 10: SHORT}), 2: drafts(bars, {})}
    res = run_backtest(bars, ghosts, CFG, drafts=d)
    assert list(res.fates["fate"]) == [BLOCKED_TREND, BLOCKED_TREND]
    assert "warming up" in res.fates["detail"].iloc[0]
    # without a trend filter in the set there is no gate
    assert list(run_backtest(bars, [ghost(1)], CFG, drafts={1: d[1]}).fates["fate"]) == [TAKEN, BLOCKED_RISK]


# -- risk: kill switch, auto-disable, drawdown stop -----------------------------------------------------

def crash_bars() -> pd.DataFrame:
    """Flat at 100 on day 1 until 23:00, a fall to 94 (-6 %), then flat into day 2 and 3."""
    day1 = flat(4, start="2025-03-01 22:56")
    fall = [(100, 100, 94, 94)]
    rest = flat(1 + 24 * 60 + 10, price=94.0)
    return bars_of(*(day1 + fall + rest), start="2025-03-01 22:56")


def test_kill_switch_trips_on_the_daily_loss_and_never_resets_by_itself() -> None:
    bars = crash_bars()
    limits = RiskLimits(max_notional_pct=100.0, risk_per_trade_pct=10.0)
    cfg = BacktestConfig(fill_model=FM, limits=limits)
    # stop 10 % away: 1 000 risk / 10 = 100 BTC = 100 % of equity (the cap); it rides the fall, and a 6 %
    # loss is over the 3 % daily limit
    wide = {"side": 1, "entry": 100.0, "stop": 90.0, "target": 200.0, "max_hold_s": 86_400.0 * 3}
    later = {"side": -1, "entry": 94.0, "stop": 95.0, "target": 90.0}
    n = len(bars)
    rows2 = {6: later, 70: later, n - 20: later}  # the same day, after midnight, a day later
    d = {1: drafts(bars, {1: wide}), 2: drafts(bars, rows2)}
    res = run_backtest(bars, [ghost(1), ghost(2)], cfg, drafts=d)
    assert res.kill_switch is not None
    assert res.kill_switch[0] == bars.index[4]  # the close of the falling bar
    assert "daily loss" in res.kill_switch[1]
    blocked = res.fates[res.fates["ghost_id"] == 2]
    assert list(blocked["fate"]) == [BLOCKED_RISK] * 3
    assert all(det.startswith("kill_switch") for det in blocked["detail"])
    assert blocked["bar_time"].iloc[-1].date() > bars.index[4].date()  # still blocked on a later UTC day
    (t,) = res.trades  # the open position was not flattened (flatten_on_kill is off): it runs to the end
    assert t.ghost_id == 1 and t.reason == END_OF_DATA
    check_ledger(res, bars)


def test_kill_switch_with_flatten_closes_at_the_tripping_close() -> None:
    bars = crash_bars()
    limits = RiskLimits(max_notional_pct=100.0, risk_per_trade_pct=10.0, flatten_on_kill=True)
    wide = {"side": 1, "entry": 100.0, "stop": 90.0, "target": 200.0, "max_hold_s": 86_400.0 * 3}
    res = run_backtest(bars, [ghost(1)], BacktestConfig(fill_model=FM, limits=limits),
                       drafts={1: drafts(bars, {1: wide})})
    (t,) = res.trades
    assert t.reason == KILL_SWITCH and t.exit_time == bars.index[4]
    assert float(t.exit_price) == pytest.approx(94 * 0.9995, abs=1e-8)  # market sell at the close
    check_ledger(res, bars)


def losing_run(k: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """k+3 long drafts, each followed by a bar that falls through its stop."""
    ohlc, rows = [], {}
    for _ in range(k + 3):
        rows[len(ohlc)] = LONG
        ohlc += [(100, 100.1, 99.9, 100), (100, 100.1, 98.0, 98.5), (100, 100.1, 99.9, 100)]
    bars = bars_of(*ohlc)
    return bars, drafts(bars, rows)


def test_auto_disable_after_n_losing_trades() -> None:
    bars, d = losing_run(4)
    rules = AutoDisableRules(min_trades=4, win_rate_floor=0.3)
    res = run_backtest(bars, [ghost(1, auto_disable=rules)], CFG, drafts={1: d})
    assert len(res.trades) == 4 and all(t.reason == STOP for t in res.trades)
    (ev,) = res.disables
    assert ev.time == res.trades[-1].exit_time
    assert any("win rate 0.0% over 4 trades" in r for r in ev.reasons)
    assert list(res.fates["fate"]) == [TAKEN] * 4 + [GHOST_DISABLED] * 3
    assert res.performance["g1"].trades == 4 and res.performance["g1"].wins == 0
    check_ledger(res, bars)


def test_ghost_drawdown_stop_disables() -> None:
    bars, d = losing_run(4)
    # each loss is ~10 BTC x ~1.05 + fees = ~12.5 USDT; a 0.2 % of 10 000 = 20 USDT stop fires at the 2nd
    limits = RiskLimits(ghost_drawdown_stop_pct=0.2)
    res = run_backtest(bars, [ghost(1)], BacktestConfig(fill_model=FM, limits=limits), drafts={1: d})
    assert len(res.trades) == 2
    (ev,) = res.disables
    assert "ghost drawdown" in ev.reasons[0]


def test_max_trades_per_day() -> None:
    bars, d = losing_run(3)
    res = run_backtest(bars, [ghost(1)], BacktestConfig(fill_model=FM, limits=RiskLimits(max_trades_per_day=2)),
                       drafts={1: d})
    assert len(res.trades) == 2
    assert res.fates["detail"].iloc[-1].startswith("max_trades_per_day")


# -- no look-ahead, ledger identity -------------------------------------------------------------------

def random_case(seed: int, n: int = 400) -> tuple[pd.DataFrame, dict[int, pd.DataFrame]]:
    rng = np.random.default_rng(seed)
    # 0.15 %/min steps over ~day boundaries (start 20:00) so daily rolls, stops and targets all happen
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.0015, n)))
    o = np.concatenate(([100.0], c[:-1]))
    hi = np.maximum(o, c) * (1 + rng.uniform(0, 0.003, n))
    lo = np.minimum(o, c) * (1 - rng.uniform(0, 0.003, n))
    bars = bars_of(*zip(o, hi, lo, c, strict=True), start="2025-03-01 20:00")
    d = {}
    for gid in (1, 2, 3):
        rows = {}
        for p in np.flatnonzero(rng.random(n) < 0.05):
            side = int(rng.choice([-1, 1]))
            e = float(c[p])
            dist = e * rng.uniform(0.002, 0.02)
            rows[int(p)] = {"side": side, "entry": e, "stop": e - side * dist, "target": e + side * 2 * dist,
                            "confidence": float(rng.uniform(0.2, 1.0)), "priority": int(rng.integers(0, 5)),
                            "max_hold_s": float(rng.choice([120.0, 1800.0, np.nan]))}
        d[gid] = drafts(bars, rows)
    return bars, d


RANDOM_GHOSTS = [ghost(1, auto_disable=AutoDisableRules(min_trades=3)), ghost(2), ghost(3)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000))
def test_ledger_identity_and_equity_curve_on_random_walks(seed: int) -> None:
    bars, d = random_case(seed)
    limits = RiskLimits(max_daily_loss_pct=0.5, max_notional_pct=50.0)  # so kill switches happen too
    res = run_backtest(bars, RANDOM_GHOSTS, BacktestConfig(fill_model=FM, limits=limits), drafts=d)
    check_ledger(res, bars)
    assert (res.fates["fate"] == TAKEN).sum() == len(res.trades) + len(res.unfilled)


def assert_same_up_to_cut(full, cut_res, bars: pd.DataFrame, cut: int) -> None:
    last = bars.index[cut - 1]
    done = [t for t in cut_res.trades if t.reason != END_OF_DATA]
    assert done == [t for t in full.trades if t.exit_time <= last]
    for t in cut_res.trades:
        if t.reason == END_OF_DATA:  # still open at the cut in the full run, same entry
            match = [u for u in full.trades if u.entry_time == t.entry_time and u.ghost_id == t.ghost_id]
            assert len(match) == 1 and match[0].exit_time > last and match[0].entry_price == t.entry_price
    pd.testing.assert_frame_equal(cut_res.fates, full.fates[full.fates["bar_time"] <= last].reset_index(drop=True))
    np.testing.assert_array_equal(cut_res.equity.to_numpy()[:-1], full.equity.to_numpy()[: cut - 1])
    assert cut_res.disables == tuple(e for e in full.disables if e.time <= last)
    assert cut_res.kill_switch == (full.kill_switch if full.kill_switch and full.kill_switch[0] <= last else None)


@pytest.mark.parametrize(("seed", "daily_loss_pct"), [(1, 2.0), (3, 2.0), (5, 2.0), (6, 0.6), (7, 0.6)])
def test_no_look_ahead_cut_gives_identical_results_up_to_the_cut(seed: int, daily_loss_pct: float) -> None:
    """Cuts before and after auto-disables and (0.6 % daily loss) kill switches; the equity of the cut
    run's last bar differs only by the exit fees of what it closes as end_of_data."""
    bars, d = random_case(seed)
    limits = RiskLimits(max_daily_loss_pct=daily_loss_pct, max_notional_pct=20.0)
    cfg = BacktestConfig(fill_model=FM, limits=limits)
    full = run_backtest(bars, RANDOM_GHOSTS, cfg, drafts=d)
    assert len(full.trades) >= 5
    for cut in (97, 211, 333):
        cut_res = run_backtest(bars.iloc[:cut], RANDOM_GHOSTS, cfg, drafts={k: v.iloc[:cut] for k, v in d.items()})
        assert_same_up_to_cut(full, cut_res, bars, cut)


def test_rejects_misaligned_drafts_and_duplicate_ids() -> None:
    bars = bars_of(*flat(5))
    with pytest.raises(ValueError, match="not aligned"):
        run_backtest(bars, [ghost(1)], CFG, drafts={1: drafts(bars.iloc[:3], {})})
    with pytest.raises(ValueError, match="unique"):
        run_backtest(bars, [ghost(1), ghost(1)], CFG, drafts={1: drafts(bars, {})})
