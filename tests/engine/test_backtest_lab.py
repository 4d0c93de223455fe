"""The lab's options of the whole-system backtest (issue 9, lab_spec A.2), on hand-built bars and drafts:
sizing modes (risk / stake / equity_pct), direction per ghost (fate direction_off), the auto-disable and
kill-switch switches, the progress callback, and exposure. Expected figures are worked out here from the
rules, not read back from the code.
"""

import numpy as np
import pandas as pd
import pytest

from apps.engine.backtest import (
    DIRECTION_OFF,
    PROGRESS_EVERY,
    BacktestConfig,
    GhostSetup,
    Sizing,
    run_backtest,
)
from apps.engine.exits import END_OF_DATA, STOP, TIME
from apps.engine.manager import BLOCKED_RISK, OUTSCORED, TAKEN
from apps.engine.performance import AutoDisableRules
from apps.engine.risk import RiskLimits
from apps.engine.types import ConfigError
from tests.datafiles import _flush_redis, services_use_test_redis  # noqa: F401
from tests.engine.test_backtest import (
    FM,
    LONG,
    SHORT,
    bars_of,
    check_ledger,
    crash_bars,
    drafts,
    flat,
    ghost,
    losing_run,
    random_case,
)

NO_SLIP = BacktestConfig(fill_model=FM)


# -- defaults are the desk's behaviour --------------------------------------------------------------------

def test_defaults_are_the_desks() -> None:
    cfg = BacktestConfig()
    assert (cfg.sizing, cfg.auto_disable, cfg.kill_switch) == (Sizing("risk", 1000.0, 10.0), True, True)
    assert GhostSetup(ghost_id=1, name="a", kind="spike_fader").direction == "both"


@pytest.mark.parametrize(("kwargs", "msg"), [
    ({"mode": "kelly"}, "sizing.mode must be one of risk, stake, equity_pct"),
    ({"mode": "stake", "stake": 0.0}, "sizing.stake must be > 0"),
    ({"stake": float("nan")}, "sizing.stake"),
    ({"mode": "equity_pct", "equity_pct": 0.0}, "sizing.equity_pct must be > 0 and <= 100"),
    ({"equity_pct": 150.0}, "sizing.equity_pct"),
])
def test_sizing_is_validated_with_clear_messages(kwargs: dict, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg.replace("(", r"\(")):
        Sizing(**kwargs)


def test_direction_is_validated() -> None:
    with pytest.raises(ConfigError, match="direction must be one of both, long, short"):
        GhostSetup(ghost_id=1, name="a", kind="spike_fader", direction="up")


# -- sizing ---------------------------------------------------------------------------------------------

def test_stake_sizing_trades_a_fixed_notional_at_the_fill() -> None:
    bars = bars_of((100, 100.1, 99.9, 100), (100.5, 100.6, 100.4, 100.5), (100.5, 100.6, 100.4, 100.5))
    cfg = BacktestConfig(fill_model=FM, sizing=Sizing(mode="stake", stake=2500.0))
    (t,) = run_backtest(bars, [ghost(1)], cfg, drafts={1: drafts(bars, {0: LONG})}).trades
    fill = 100.5 * 1.0005
    # 2 500 quote at the fill, whatever the risk rule would say (it would cap the notional at 1 000)
    assert float(t.qty) == pytest.approx(2500.0 / fill, abs=1e-8)
    assert float(t.qty) * float(t.entry_price) == pytest.approx(2500.0, abs=1e-5)


def test_equity_pct_sizing_follows_the_equity_at_the_decision() -> None:
    bars, d = losing_run(1)  # four longs, each stopped out on the bar after its entry
    cfg = BacktestConfig(fill_model=FM, sizing=Sizing(mode="equity_pct", equity_pct=50.0))
    res = run_backtest(bars, [ghost(1)], cfg, drafts={1: d})
    assert len(res.trades) == 4 and all(t.reason == STOP for t in res.trades)
    equity = float(res.start_capital)
    for t in res.trades:  # each decision at a close with nothing open: equity = start + the closed net P&L
        fill = float(t.entry_price)
        assert float(t.qty) * fill == pytest.approx(equity * 0.5, abs=1e-5)
        equity += float(t.net_pnl)
    assert float(res.trades[-1].qty) < float(res.trades[0].qty)  # losses shrink the next size
    check_ledger(res, bars)


def test_risk_limits_still_apply_in_stake_mode() -> None:
    # max one open position: the second ghost's draft while the first holds is blocked, whatever the sizing
    bars = bars_of(*flat(8))
    cfg = BacktestConfig(fill_model=FM, sizing=Sizing(mode="stake"), limits=RiskLimits(max_open_positions=1))
    d = {1: drafts(bars, {0: LONG, 3: LONG, 5: LONG}), 2: drafts(bars, {2: SHORT})}
    res = run_backtest(bars, [ghost(1), ghost(2)], cfg, drafts=d)
    fates = list(zip(res.fates["ghost_id"], res.fates["fate"], res.fates["detail"].str.split(":").str[0],
                     strict=True))
    assert fates[1:] == [(2, BLOCKED_RISK, "max_open_positions")] + [(1, BLOCKED_RISK, "max_open_positions")] * 2
    assert fates[0][:2] == (1, TAKEN) and fates[0][2].endswith("size 10")  # 1 000 stake at the 100 reference
    # trades per day
    bars, d = losing_run(3)
    cfg = BacktestConfig(fill_model=FM, sizing=Sizing(mode="stake"), limits=RiskLimits(max_trades_per_day=2))
    res = run_backtest(bars, [ghost(1)], cfg, drafts={1: d})
    assert len(res.trades) == 2 and res.fates["detail"].iloc[-1].startswith("max_trades_per_day")
    # and the kill switch: a 6 % fall with a 10 000 stake (100 % of equity) trips it, later drafts blocked
    bars = crash_bars()
    cfg = BacktestConfig(fill_model=FM, sizing=Sizing(mode="stake", stake=10_000.0))
    wide = {"side": 1, "entry": 100.0, "stop": 90.0, "target": 200.0, "max_hold_s": 86_400.0 * 3}
    res = run_backtest(bars, [ghost(1), ghost(2)], cfg,
                       drafts={1: drafts(bars, {1: wide}), 2: drafts(bars, {6: {**SHORT, "entry": 94.0,
                                                                               "stop": 95.0, "target": 90.0}})})
    assert res.kill_switch is not None and res.kill_switch[0] == bars.index[4]
    assert res.fates["detail"].iloc[-1].startswith("kill_switch")


# -- direction per ghost -------------------------------------------------------------------------------

def test_direction_off_drafts_get_their_fate_and_never_compete() -> None:
    bars = bars_of(*flat(12))
    # ghost 1 (long only) drafts a strong short on bar 2 where ghost 2's weaker short is: ghost 2 must be
    # taken, not outscored by a draft that could never trade
    d = {1: drafts(bars, {2: {**SHORT, "confidence": 1.0, "priority": 9}, 6: LONG}),
         2: drafts(bars, {2: {**SHORT, "confidence": 0.3}})}
    res = run_backtest(bars, [ghost(1, direction="long"), ghost(2)], NO_SLIP, drafts=d)
    rows = list(zip(res.fates["bar_time"], res.fates["ghost_id"], res.fates["side"], res.fates["fate"],
                    strict=True))
    assert rows == [(bars.index[2], 1, -1, DIRECTION_OFF), (bars.index[2], 2, -1, TAKEN),
                    (bars.index[6], 1, 1, TAKEN)]
    assert res.fates["detail"].iloc[0] == "long only: short drafts are not traded"
    assert [t.ghost_id for t in res.trades] == [2, 1]
    # the same drafts with both directions: ghost 1's short wins the bar
    both = run_backtest(bars, [ghost(1), ghost(2)], NO_SLIP, drafts=d)
    assert list(both.fates["fate"])[:2] == [TAKEN, OUTSCORED]
    # short only: the long on bar 6 is off
    short = run_backtest(bars, [ghost(1, direction="short"), ghost(2)], NO_SLIP, drafts=d)
    off = short.fates[short.fates["fate"] == DIRECTION_OFF]
    assert list(off["bar_time"]) == [bars.index[6]] and off["detail"].iloc[0].startswith("short only")
    assert short.signals.loc["g1", "longs"] == 1  # the ghost's own drafts are still counted as drafted


# -- auto-disable and kill switch switches ---------------------------------------------------------------

def test_auto_disable_off_judges_neither_the_rules_nor_the_drawdown_stop() -> None:
    bars, d = losing_run(4)
    rules = AutoDisableRules(min_trades=4, win_rate_floor=0.3)
    limits = RiskLimits(ghost_drawdown_stop_pct=0.2)
    on = run_backtest(bars, [ghost(1, auto_disable=rules)], BacktestConfig(fill_model=FM, limits=limits),
                      drafts={1: d})
    assert len(on.trades) == 2 and on.disables  # the drawdown stop fires at the 2nd loss
    off = run_backtest(bars, [ghost(1, auto_disable=rules)],
                       BacktestConfig(fill_model=FM, limits=limits, auto_disable=False), drafts={1: d})
    assert len(off.trades) == 7 and off.disables == () and set(off.fates["fate"]) == {TAKEN}
    assert off.performance["g1"].trades == 7  # the figures are still computed
    check_ledger(off, bars)


def test_kill_switch_off_never_trips_and_never_blocks_on_the_daily_loss() -> None:
    bars = crash_bars()
    limits = RiskLimits(max_notional_pct=100.0, risk_per_trade_pct=10.0, flatten_on_kill=True)
    wide = {"side": 1, "entry": 100.0, "stop": 90.0, "target": 200.0, "max_hold_s": 86_400.0 * 3}
    later = {"side": -1, "entry": 94.0, "stop": 95.0, "target": 90.0}
    d = {1: drafts(bars, {1: wide}), 2: drafts(bars, {6: later})}
    on = run_backtest(bars, [ghost(1), ghost(2)], BacktestConfig(fill_model=FM, limits=limits), drafts=d)
    assert on.kill_switch is not None and list(on.fates["fate"]) == [TAKEN, BLOCKED_RISK]
    off = run_backtest(bars, [ghost(1), ghost(2)], BacktestConfig(fill_model=FM, limits=limits, kill_switch=False),
                       drafts=d)
    assert off.kill_switch is None and list(off.fates["fate"]) == [TAKEN, TAKEN]
    assert {t.ghost_id: t.reason for t in off.trades} == {1: END_OF_DATA, 2: TIME}  # nothing flattened either
    check_ledger(off, bars)


# -- progress --------------------------------------------------------------------------------------------

def test_progress_reports_evaluation_per_ghost_and_the_walk_at_most_every_2000_bars() -> None:
    n = 9_000
    idx = pd.date_range("2025-03-01", periods=n, freq="1min", tz="UTC", name="open_time")
    rng = np.random.default_rng(3)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    o = np.concatenate(([100.0], c[:-1]))
    bars = pd.DataFrame({"open": o, "high": np.maximum(o, c) * 1.001, "low": np.minimum(o, c) * 0.999,
                         "close": c, "volume": 10.0}, index=idx)
    calls: list[tuple[str, int, int]] = []
    setups = [GhostSetup(ghost_id=1, name="f", kind="spike_fader"),
              GhostSetup(ghost_id=2, name="c", kind="cvd_detector")]
    run_backtest(bars, setups, NO_SLIP, progress=lambda *a: calls.append(a))
    assert calls[:2] == [("evaluate", 1, 2), ("evaluate", 2, 2)]
    walk = [c for c in calls if c[0] == "walk"]
    assert walk[-1] == ("walk", n, n) and all(t == n for _, _, t in walk)
    done = [d for _, d, _ in walk[:-1]]
    assert done == sorted(done) and len({d // PROGRESS_EVERY for d in done}) == len(done)  # one per block
    assert all(d >= PROGRESS_EVERY for d in done) and len(done) <= n // PROGRESS_EVERY
    # hand-made drafts: no evaluation, so no evaluate calls
    calls.clear()
    run_backtest(bars, setups[:1], NO_SLIP, drafts={1: drafts(bars, {})}, progress=lambda *a: calls.append(a))
    assert calls == [("walk", n, n)]  # nothing to walk: it jumps to the end


def test_an_exception_from_progress_propagates() -> None:
    class Cancelled(Exception):
        pass

    def cancel(stage: str, done: int, total: int) -> None:
        if stage == "walk":
            raise Cancelled

    bars, d = random_case(1, n=5_000)
    with pytest.raises(Cancelled):
        run_backtest(bars, [ghost(1), ghost(2), ghost(3)], NO_SLIP, drafts=d, progress=cancel)


# -- exposure ---------------------------------------------------------------------------------------------

def test_exposure_counts_entry_through_exit_bars() -> None:
    # a long fills at bar 1, stopped on bar 2; a second one fills at bar 6 and runs to the end (bar 9)
    ohlc = flat(10)
    ohlc[2] = (100, 100.1, 98.0, 98.5)
    bars = bars_of(*ohlc)
    res = run_backtest(bars, [ghost(1)], NO_SLIP, drafts={1: drafts(bars, {0: LONG, 5: LONG})})
    assert [(t.entry_time, t.exit_time) for t in res.trades] == [(bars.index[1], bars.index[2]),
                                                                 (bars.index[6], bars.index[9])]
    assert res.exposure == pytest.approx((2 + 4) / 10)
    assert run_backtest(bars, [ghost(1)], NO_SLIP, drafts={1: drafts(bars, {})}).exposure == 0.0


def test_exposure_matches_the_trades_on_random_walks() -> None:
    for seed in (1, 2, 3):
        bars, d = random_case(seed)
        res = run_backtest(bars, [ghost(1), ghost(2), ghost(3)], NO_SLIP, drafts=d)
        heldm = np.zeros(len(bars), dtype=bool)
        for t in res.trades:
            heldm[bars.index.get_loc(t.entry_time): bars.index.get_loc(t.exit_time) + 1] = True
        assert res.trades and res.exposure == pytest.approx(heldm.mean())


# -- speed paths equal their references -------------------------------------------------------------------

def _same(a, b) -> bool:
    return a == b or (a != a and b != b)  # NaN equals NaN here


@pytest.mark.parametrize("seed", range(6))
def test_the_numpy_daily_performance_equals_the_pandas_one_bit_for_bit(seed: int) -> None:
    """The walk's `_ghost_performance_ns` (numpy daily sampling) against `_ghost_performance` (pandas
    resample through `performance.performance`): every figure identical, on ledgers with several closes a
    day, days without any, and a first day holding a single close."""
    from apps.engine.backtest import _ghost_performance, _ghost_performance_ns
    from apps.engine.performance import sample_returns, sample_returns_daily

    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 400))
    gaps = rng.choice([0, 60, 3_600, 86_400, 5 * 86_400], size=k, p=[0.05, 0.4, 0.3, 0.2, 0.05])
    t = pd.Timestamp("2025-05-20 13:17", tz="UTC") + pd.to_timedelta(np.cumsum(gaps), unit="s")
    pnls = rng.normal(0.5, 8.0, k).tolist()
    t_ns = [int(x) for x in pd.DatetimeIndex(t).as_unit("ns").asi8]
    fast = _ghost_performance_ns(t_ns, pnls, 10_000.0, "1D")
    ref = _ghost_performance(list(zip(t, pnls, strict=True)), 10_000.0, "1D")
    for f in ref.__dataclass_fields__:
        assert _same(getattr(fast, f), getattr(ref, f)), f
    levels = np.concatenate(([10_000.0], 10_000.0 + np.cumsum(pnls)))
    times = np.concatenate(([t_ns[0]], t_ns))
    series = pd.Series(levels, index=pd.DatetimeIndex(pd.to_datetime(times, utc=True)))
    np.testing.assert_array_equal(sample_returns_daily(times, levels), sample_returns(series, "1D").to_numpy())
    assert _ghost_performance_ns([], [], 10_000.0, "1D") == _ghost_performance([], 10_000.0, "1D")


def test_shared_evaluation_equals_each_ghosts_own_evaluate() -> None:
    """evaluate_ghosts shares the trend and CVD states between ghosts; every frame must equal the ghost's own
    evaluate, with busy (synthetic, random) taker, whale and liquidation columns and two ghosts of a kind."""
    from apps.engine.backtest import evaluate_ghosts
    from apps.engine.registry import get_spec

    rng = np.random.default_rng(11)
    n = 16_000
    idx = pd.date_range("2025-03-01", periods=n, freq="1min", tz="UTC", name="open_time")
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.0015, n)))
    o = np.concatenate(([100.0], c[:-1]))
    v = rng.uniform(1, 20, n)
    bars = pd.DataFrame({"open": o, "high": np.maximum(o, c) * 1.001, "low": np.minimum(o, c) * 0.999, "close": c,
                         "volume": v, "taker_buy_volume": v * rng.uniform(0.2, 0.8, n), "trades": np.rint(v * 50),
                         "whale_buy_volume": np.where(rng.random(n) < 0.05, v * 0.5, 0.0),
                         "whale_sell_volume": np.where(rng.random(n) < 0.05, v * 0.5, 0.0),
                         "liq_long_volume": np.where(rng.random(n) < 0.02, rng.exponential(3, n), 0.0),
                         "liq_short_volume": np.where(rng.random(n) < 0.02, rng.exponential(3, n), 0.0)},
                        index=idx)
    setups = [GhostSetup(ghost_id=i, name=k, kind=k) for i, k in enumerate(
        ["whale_follower", "liquidation_hunter", "spike_fader", "cvd_detector", "trend_filter", "textbook_fader"],
        start=1)] + [GhostSetup(ghost_id=9, name="t2", kind="trend_filter", config={"weak_z": 0.7})]
    calls: list[tuple] = []
    got = evaluate_ghosts(bars, setups, progress=lambda *a: calls.append(a))
    assert list(got) == [g.ghost_id for g in setups]
    assert calls == [("evaluate", k, len(setups)) for k in range(1, len(setups) + 1)]
    for g in setups:
        pd.testing.assert_frame_equal(got[g.ghost_id], get_spec(g.kind).evaluate(bars, g.resolved_config()))
    assert sum(int((d["side"] != 0).sum()) for d in got.values()) > 0
