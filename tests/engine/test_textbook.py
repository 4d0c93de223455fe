"""The textbook fader (issue 9 "The textbook rules") through the whole engine with `textbook_setup()`.

Every rule on hand-worked synthetic candles (expected prices, quantities and P&L computed here from the
rules, never read back from the code), then the real 90-day BTC/USDT file against an independent plain
Python loop written in this module (no engine code), trade by trade: entry/exit time, side, reason,
prices, P&L to the cent.

Synthetic layout: bars 0..15 are flat at 100 (open = high = low = close), so the first bar with a
15-minute move is bar 15 (vs bar 0) and a signal on bar 16 enters at bar 17's open.
"""

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from apps.engine.backtest import Sizing, default_ghosts, run_backtest
from apps.engine.exits import END_OF_DATA, STOP, TARGET, TIME
from apps.engine.fills import FillModel
from apps.engine.manager import BLOCKED_RISK, TAKEN
from apps.engine.presets import textbook_setup
from apps.engine.registry import DESK_KINDS, GHOSTS, config_from_params, get_spec, latest_draft, warmup_minutes_for
from apps.engine.textbook import TextbookFaderConfig, evaluate
from apps.engine.types import ConfigError
from tests.datafiles import _flush_redis, load_freqtrade_1m, services_use_test_redis  # noqa: F401

FLAT = [(100.0, 100.0, 100.0, 100.0)] * 16
FEE = 0.001
STAKE = 1000.0


def bars_of(rows: list[tuple[float, float, float, float]], times: pd.DatetimeIndex | None = None) -> pd.DataFrame:
    idx = times if times is not None else pd.date_range("2025-06-01", periods=len(rows), freq="1min", tz="UTC")
    df = pd.DataFrame(np.asarray(rows, dtype=float), columns=["open", "high", "low", "close"],
                      index=pd.DatetimeIndex(idx, name="open_time"))
    df["volume"] = 1.0
    return df


def run(rows, *, long_only: bool = False, times=None):
    bars = bars_of(rows, times)
    ghosts, cfg = textbook_setup(long_only=long_only)
    return bars, run_backtest(bars, ghosts, cfg)


def net(side: int, fill: float, exit_px: float) -> float:
    """The rules' P&L of one trade: qty = stake / fill, 0.1 % of notional each side."""
    qty = STAKE / fill
    return side * qty * (exit_px - fill) - FEE * qty * fill - FEE * qty * exit_px


def check(t, bars, *, side, entry_bar, fill, exit_bar, exit_px, reason) -> None:
    assert (t.side, t.reason) == (side, reason)
    assert (t.entry_time, t.exit_time) == (bars.index[entry_bar], bars.index[exit_bar])
    assert float(t.entry_price) == pytest.approx(fill, abs=1e-8)
    assert float(t.exit_price) == pytest.approx(exit_px, abs=1e-8)
    assert float(t.qty) == pytest.approx(STAKE / fill, abs=1e-8)  # sized from the fill price
    assert float(t.entry_fee) == pytest.approx(FEE * STAKE, abs=1e-6)  # 0.1 % of the 1,000 notional
    assert float(t.exit_fee) == pytest.approx(FEE * STAKE / fill * exit_px, abs=1e-6)
    assert float(t.net_pnl) == pytest.approx(net(side, fill, exit_px), abs=1e-5)


# -- the setup -------------------------------------------------------------------------------------------

def test_textbook_setup_is_the_issues_configuration() -> None:
    ghosts, cfg = textbook_setup()
    (g,) = ghosts
    assert g.kind == "textbook_fader" and g.direction == "both"
    assert g.resolved_config() == TextbookFaderConfig(15, 1.2, 0.6, 0.8, 60, False)
    assert cfg.fill_model == FillModel(taker_fee=0.001, maker_fee=0.001, slippage_bps=0.0)
    assert cfg.sizing == Sizing(mode="stake", stake=1000.0)
    assert (cfg.limits.max_open_positions, cfg.limits.max_trades_per_day) == (1, 10_000)
    assert (cfg.auto_disable, cfg.kill_switch) == (False, False)
    assert not any(s.kind == "trend_filter" for s in ghosts)  # no trend gate
    assert textbook_setup(long_only=True)[0][0].resolved_config().long_only


def test_it_is_a_lab_ghost_not_a_desk_ghost() -> None:
    assert "textbook_fader" in GHOSTS and get_spec("textbook_fader").desk is False
    assert "textbook_fader" not in DESK_KINDS and len(DESK_KINDS) == 5
    assert "textbook_fader" not in {g.kind for g in default_ghosts()}
    assert warmup_minutes_for("textbook_fader", {"lookback_min": 30}) == 31
    with pytest.raises(ConfigError, match="textbook_fader.move_pct must be > 0"):
        config_from_params("textbook_fader", {"move_pct": 0})
    with pytest.raises(ConfigError, match="textbook_fader.lookback_min must be a whole number"):
        config_from_params("textbook_fader", {"lookback_min": 1.5})
    with pytest.raises(ConfigError, match="unknown textbook_fader parameter"):
        config_from_params("textbook_fader", {"stake": 10})


# -- move over 15 minutes, LONG on a fall, SHORT on a rise, entry at the next open ------------------------

def test_a_fall_of_1_2_pct_drafts_a_long_at_the_close_and_enters_at_the_next_open() -> None:
    rows = FLAT + [(100.0, 100.0, 98.7, 98.75),  # 16: 98.75 / 100 - 1 = -1.25 % <= -1.2 % -> LONG
                   (99.0, 99.3, 98.9, 99.2),     # 17: entry at the open, 99.0; no level reached
                   (99.2, 99.9, 99.1, 99.8)]     # 18: high 99.9 >= target 99.0 x 1.008 = 99.792
    bars, res = run(rows)
    d = evaluate(bars, TextbookFaderConfig())
    assert list(np.flatnonzero(d["side"].to_numpy())) == [16] and d["side"].iat[16] == 1
    assert d["entry"].iat[16] == 98.75 and "-1.250%" in d["reason"].iat[16]
    (t,) = res.trades
    assert t.signal_time == bars.index[16]
    check(t, bars, side=1, entry_bar=17, fill=99.0, exit_bar=18, exit_px=99.0 * 1.008, reason=TARGET)


def test_a_rise_of_1_2_pct_drafts_a_short_and_its_stop_is_0_6_pct_above_the_fill() -> None:
    rows = FLAT + [(100.0, 101.3, 100.0, 101.25),  # 16: +1.25 % -> SHORT
                   (101.0, 101.7, 100.9, 101.5)]   # 17: entry 101.0; high 101.7 >= stop 101 x 1.006 = 101.606
    bars, res = run(rows)
    (t,) = res.trades
    check(t, bars, side=-1, entry_bar=17, fill=101.0, exit_bar=17, exit_px=101.0 * 1.006, reason=STOP)


def test_moves_short_of_the_threshold_draft_nothing() -> None:
    rows = FLAT + [(100.0, 100.0, 98.8, 98.81), (98.81, 101.2, 98.81, 101.19)]  # -1.19 %, then +1.19 %
    bars, res = run(rows)
    assert res.trades == () and len(res.fates) == 0
    assert (evaluate(bars, TextbookFaderConfig())["side"] == 0).all()


def test_long_only_drafts_no_short() -> None:
    rows = FLAT + [(100.0, 101.3, 100.0, 101.25), (101.0, 101.7, 100.9, 101.5)]
    bars, res = run(rows, long_only=True)
    assert res.trades == () and len(res.fates) == 0
    assert evaluate(bars, TextbookFaderConfig(long_only=True))["reason"].iat[16].endswith("long only -> no trade")


# -- stop and target from the fill; both in one bar; gaps at the open --------------------------------------

def test_the_long_stop_is_0_6_pct_below_the_fill_reached_by_the_low() -> None:
    rows = FLAT + [(100.0, 100.0, 98.7, 98.75), (99.0, 99.1, 98.9, 99.0),
                   (99.0, 99.1, 98.4, 98.5)]  # 18: low 98.4 <= 99.0 x 0.994 = 98.406
    bars, res = run(rows)
    (t,) = res.trades
    check(t, bars, side=1, entry_bar=17, fill=99.0, exit_bar=18, exit_px=99.0 * 0.994, reason=STOP)


def test_the_short_target_is_0_8_pct_below_the_fill_reached_by_the_low() -> None:
    rows = FLAT + [(100.0, 101.3, 100.0, 101.25), (101.0, 101.1, 100.9, 101.0),
                   (101.0, 101.1, 100.1, 100.5)]  # 18: low 100.1 <= 101 x 0.992 = 100.192
    bars, res = run(rows)
    (t,) = res.trades
    check(t, bars, side=-1, entry_bar=17, fill=101.0, exit_bar=18, exit_px=101.0 * 0.992, reason=TARGET)


def test_a_bar_touching_both_levels_exits_at_the_stop() -> None:
    rows = FLAT + [(100.0, 100.0, 98.7, 98.75), (99.0, 99.1, 98.9, 99.0),
                   (99.0, 99.9, 98.3, 99.0)]  # 18: low under 98.406 AND high over 99.792
    bars, res = run(rows)
    (t,) = res.trades
    check(t, bars, side=1, entry_bar=17, fill=99.0, exit_bar=18, exit_px=99.0 * 0.994, reason=STOP)


def test_a_bar_opening_beyond_the_stop_exits_at_that_open() -> None:
    rows = FLAT + [(100.0, 100.0, 98.7, 98.75), (99.0, 99.1, 98.9, 99.0),
                   (98.0, 98.2, 97.9, 98.1)]  # 18: opens at 98.0, below the 98.406 stop
    bars, res = run(rows)
    (t,) = res.trades
    check(t, bars, side=1, entry_bar=17, fill=99.0, exit_bar=18, exit_px=98.0, reason=STOP)


def test_a_bar_opening_beyond_the_target_exits_at_that_open() -> None:
    rows = FLAT + [(100.0, 100.0, 98.7, 98.75), (99.0, 99.1, 98.9, 99.0),
                   (100.0, 100.2, 99.95, 100.1)]  # 18: opens at 100.0, above the 99.792 target
    bars, res = run(rows)
    (t,) = res.trades
    check(t, bars, side=1, entry_bar=17, fill=99.0, exit_bar=18, exit_px=100.0, reason=TARGET)


# -- the time stop at entry + 60, at the open, before any level ---------------------------------------------

def test_the_time_stop_fires_at_the_open_of_entry_plus_60_before_any_level() -> None:
    quiet = [(99.0, 99.1, 98.9, 99.0)] * 60  # bars 17..76: inside the levels (98.406 .. 99.792)
    rows = FLAT + [(100.0, 100.0, 98.7, 98.75)] + quiet + [
        (100.5, 101.0, 98.0, 99.5),  # 77 = 17 + 60: opens beyond the target, range over both levels
        (99.5, 99.6, 99.4, 99.5)]
    bars, res = run(rows)
    (t,) = res.trades
    check(t, bars, side=1, entry_bar=17, fill=99.0, exit_bar=77, exit_px=100.5, reason=TIME)


# -- one position at a time; a signal on the exit bar is taken ---------------------------------------------

def test_signals_while_a_position_is_open_are_ignored_and_one_at_the_exit_close_is_taken() -> None:
    rows = FLAT + [(100.0, 100.0, 98.7, 98.75),  # 16: LONG
                   (99.0, 99.1, 98.9, 99.0),      # 17: entry 99.0 (target 99.792, stop 98.406)
                   (99.0, 99.1, 98.7, 98.7),      # 18: -1.3 % vs bar 3: LONG again, but a position is open
                   (98.8, 99.9, 98.7, 98.7),      # 19: target hit; the close is -1.3 %: flat now -> LONG
                   (98.7, 98.8, 98.6, 98.7),      # 20: entry 98.7; a LONG draft while open, ignored
                   (98.7, 98.8, 98.6, 98.7)]      # 21: the end: closes at the last close
    bars, res = run(rows)
    fates = list(zip(res.fates["bar_time"], res.fates["fate"], strict=True))
    assert fates == [(bars.index[16], TAKEN), (bars.index[18], BLOCKED_RISK), (bars.index[19], TAKEN),
                     (bars.index[20], BLOCKED_RISK), (bars.index[21], BLOCKED_RISK)]
    first, second = res.trades
    check(first, bars, side=1, entry_bar=17, fill=99.0, exit_bar=19, exit_px=99.0 * 1.008, reason=TARGET)
    check(second, bars, side=1, entry_bar=20, fill=98.7, exit_bar=21, exit_px=98.7, reason=END_OF_DATA)


def test_a_trade_open_at_the_end_closes_at_the_last_close() -> None:
    rows = FLAT + [(100.0, 100.0, 98.7, 98.75), (99.0, 99.1, 98.9, 99.0), (99.0, 99.2, 98.9, 99.15)]
    bars, res = run(rows)
    (t,) = res.trades
    check(t, bars, side=1, entry_bar=17, fill=99.0, exit_bar=18, exit_px=99.15, reason=END_OF_DATA)
    assert res.final_equity == res.start_capital + t.net_pnl


# -- data gaps: data time throughout ---------------------------------------------------------------------

def test_no_bar_15_minutes_back_means_no_move_and_no_signal() -> None:
    rows = FLAT[:15] + [(100.0, 100.0, 98.7, 98.75), (99.0, 99.1, 98.9, 99.0)]
    times = pd.date_range("2025-06-01", periods=len(rows) + 1, freq="1min", tz="UTC").delete(1)  # no 00:01
    bars, res = run(rows, times=times)
    # the -1.25 % bar at 00:16 (row 15) would compare with the bar of 00:01, which does not exist: no draft;
    # counting rows instead (15 rows back = 00:00, close 100) would have drafted a LONG
    assert bars.index[15] == pd.Timestamp("2025-06-01 00:16", tz="UTC")
    assert res.trades == () and (evaluate(bars, TextbookFaderConfig())["side"] == 0).all()
    # the same rows without the gap do draft it
    assert evaluate(bars_of(rows), TextbookFaderConfig())["side"].iat[15] == 1


def test_after_a_gap_the_time_stop_fires_at_the_first_bar_at_least_60_minutes_after_the_entry() -> None:
    quiet = [(99.0, 99.1, 98.9, 99.0)] * 70
    rows = FLAT + [(100.0, 100.0, 98.7, 98.75)] + quiet
    times = pd.date_range("2025-06-01", periods=len(rows) + 20, freq="1min", tz="UTC")
    times = times.delete(range(50, 70))  # 20 minutes missing: row 50 opens at 00:70
    bars, res = run(rows, times=times)
    (t,) = res.trades
    due = bars.index[17] + pd.Timedelta(minutes=60)
    first = int(np.searchsorted(bars.index, due))
    assert bars.index[first] == due and first == 57  # 60 minutes of data time = 40 rows here
    check(t, bars, side=1, entry_bar=17, fill=99.0, exit_bar=first, exit_px=99.0, reason=TIME)


# -- live == backtest -------------------------------------------------------------------------------------

def test_the_live_window_drafts_what_the_full_history_drafts() -> None:
    bars = load_freqtrade_1m().iloc[:20_000]
    cfg = TextbookFaderConfig()
    full = evaluate(bars, cfg)
    fired = np.flatnonzero(full["side"].to_numpy())
    assert len(fired) >= 3
    warm = warmup_minutes_for("textbook_fader", cfg)
    for i in fired[:5].tolist() + [int(fired[0]) + 1]:
        d = latest_draft("textbook_fader", cfg, bars.iloc[i + 1 - warm:i + 1])
        if full["side"].iat[i] == 0:
            assert d is None
        else:
            assert (d.side, d.entry, d.stop, d.target, d.reason) == (
                full["side"].iat[i], full["entry"].iat[i], full["stop"].iat[i], full["target"].iat[i],
                full["reason"].iat[i])


# -- the real 90-day file against an independent plain loop -----------------------------------------------

def plain_textbook(df: pd.DataFrame, *, long_only: bool = False) -> list[dict]:
    """The issue's rules as a plain Python loop over bar positions (the file has no gaps), nothing shared
    with the engine: move over 15 bars, entry at the next open, the time stop at entry + 60 at the open,
    then stop, then target, opens beyond a level exit at the open, stake 1,000, 0.1 % fee each side."""
    o, h, lo, c = (df[k].tolist() for k in ("open", "high", "low", "close"))
    t = df.index
    n = len(c)
    trades: list[dict] = []
    pos: dict | None = None
    pending: tuple[int, int] | None = None  # (side, signal bar)

    def close(j: int, px: float, reason: str) -> None:
        q, side, fill = pos["qty"], pos["side"], pos["fill"]
        trades.append({"side": side, "signal_time": t[pos["signal"]], "entry_time": t[pos["entry"]],
                       "entry_price": fill, "exit_time": t[j], "exit_price": px, "reason": reason,
                       "net_pnl": side * q * (px - fill) - 0.001 * q * fill - 0.001 * q * px})

    for j in range(n):
        if pending is not None:
            side, sig = pending
            pending = None
            fill = o[j]
            pos = {"side": side, "signal": sig, "entry": j, "fill": fill, "qty": 1000.0 / fill,
                   "stop": fill * (1 - side * 0.006), "target": fill * (1 + side * 0.008)}
        if pos is not None:
            side, stop, target = pos["side"], pos["stop"], pos["target"]
            out = None
            if j == pos["entry"] + 60:
                out = (o[j], "time")
            elif side == 1:
                if o[j] <= stop:
                    out = (o[j], "stop")
                elif o[j] >= target:
                    out = (o[j], "target")
                elif lo[j] <= stop:
                    out = (stop, "stop")
                elif h[j] >= target:
                    out = (target, "target")
            else:
                if o[j] >= stop:
                    out = (o[j], "stop")
                elif o[j] <= target:
                    out = (o[j], "target")
                elif h[j] >= stop:
                    out = (stop, "stop")
                elif lo[j] <= target:
                    out = (target, "target")
            if out is not None:
                close(j, *out)
                pos = None
        if pos is None and j >= 15 and j + 1 < n:
            move = c[j] / c[j - 15] - 1
            if move <= -0.012:
                pending = (1, j)
            elif move >= 0.012 and not long_only:
                pending = (-1, j)
    if pos is not None:
        close(n - 1, c[-1], "end_of_data")
    return trades


@pytest.mark.parametrize("long_only", [False, True])
def test_the_real_90_days_agree_with_a_plain_loop_trade_by_trade(long_only: bool) -> None:
    bars = load_freqtrade_1m()
    assert (bars.index[1:] - bars.index[:-1] == pd.Timedelta(minutes=1)).all()  # no gaps: bars are minutes
    ghosts, cfg = textbook_setup(long_only=long_only)
    res = run_backtest(bars, ghosts, cfg)
    plain = plain_textbook(bars, long_only=long_only)
    engine = res.trades
    print(f"\ntextbook{' long only' if long_only else ''}: {len(engine)} trades, net "
          f"{sum(float(x.net_pnl) for x in engine):+.2f} (plain loop {len(plain)} trades, net "
          f"{sum(p['net_pnl'] for p in plain):+.2f})")
    for p in plain[:5]:
        print(f"  {p['side']:+d} signal {p['signal_time']:%m-%d %H:%M} in {p['entry_time']:%m-%d %H:%M} "
              f"@ {p['entry_price']:.2f} out {p['exit_time']:%m-%d %H:%M} @ {p['exit_price']:.4f} "
              f"{p['reason']} {p['net_pnl']:+.4f}")
    assert len(plain) >= 10, "the file must trade for the comparison to mean anything"
    assert len(engine) == len(plain)
    worst = 0.0
    for e, p in zip(engine, plain, strict=True):
        assert (e.side, e.signal_time, e.entry_time, e.exit_time, e.reason) == (
            p["side"], p["signal_time"], p["entry_time"], p["exit_time"], p["reason"])
        assert float(e.entry_price) == pytest.approx(p["entry_price"], abs=1e-6)
        assert float(e.exit_price) == pytest.approx(p["exit_price"], abs=1e-6)
        diff = abs(float(e.net_pnl) - p["net_pnl"])
        worst = max(worst, diff)
        assert diff < 0.001  # to the cent, with margin (the ledger's 1e-8 quantity steps differ by ~1e-5)
    total_e = sum((x.net_pnl for x in engine), Decimal(0))
    assert abs(float(total_e) - sum(p["net_pnl"] for p in plain)) < 0.01
    assert res.final_equity == res.start_capital + total_e
    print(f"  largest per-trade net P&L difference {worst:.2e}")
    # the fates: every draft was either taken or ignored while a position was open (blocked_risk)
    assert set(res.fates["fate"]) <= {TAKEN, BLOCKED_RISK}
    assert (res.fates["fate"] == TAKEN).sum() == len(engine) + len(res.unfilled)

