"""The whole system over the real 90-day Binance BTC/USDT 1m file (../shared/data), all five ghosts at their
defaults. Run with `pytest -s` to see what it did: drafts per ghost (and why the idle ones are idle),
fates, trades, P&L, auto-disables.

The file is OHLCV only (a freqtrade download): no taker split, no trade sizes, no liquidations, so the
CVD detector, the whale follower and the liquidation hunter must stay idle and say why; the spike fader
and the trend filter trade. The assertions are properties that a wrong backtest breaks: the ledger adds
up to the cent and rebuilds the equity curve, no entry precedes the close of its signal bar, every trade
pays fees both ways, every trade follows the exit rules of `exits.simulate_trade`, and cutting the
series leaves everything before the cut unchanged.
"""

from decimal import Decimal

import pandas as pd
import pytest

from apps.engine.backtest import BacktestResult, default_ghosts, evaluate_ghosts, run_backtest
from apps.engine.exits import END_OF_DATA, simulate_trade
from apps.engine.fills import fill_model_for
from apps.engine.manager import TAKEN
from tests.datafiles import _flush_redis, load_freqtrade_1m, services_use_test_redis  # noqa: F401
from tests.engine.test_backtest import assert_same_up_to_cut, check_ledger


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_freqtrade_1m()


@pytest.fixture(scope="module")
def drafts(bars: pd.DataFrame) -> dict[int, pd.DataFrame]:
    return evaluate_ghosts(bars, default_ghosts())


@pytest.fixture(scope="module")
def result(bars: pd.DataFrame, drafts: dict[int, pd.DataFrame]) -> BacktestResult:
    return run_backtest(bars, drafts=drafts)


def test_report_what_the_system_did(result: BacktestResult, bars: pd.DataFrame) -> None:
    print(f"\n== whole system, real BTC/USDT 1m {bars.index[0]} .. {bars.index[-1]} ({len(bars)} bars) ==")
    print(result.summary())
    tf = result.trades_frame()
    if len(tf):
        cols = ["ghost", "side", "signal_time", "entry_time", "entry_price", "exit_time", "exit_price", "qty",
                "fees", "net_pnl", "reason"]
        print(tf[cols].to_string(index=False, float_format=lambda x: f"{x:.6g}"))
    for e in result.disables:
        print(f"disable: {e.ghost} {e.time} -> {'; '.join(e.reasons)}")
    assert len(tf) > 0, "two ghosts trade on this file: a run without trades means the loop is broken"


def test_idle_ghosts_say_what_data_they_lack(result: BacktestResult) -> None:
    s = result.signals
    for name, words in (("cvd_detector", "taker"), ("whale_follower", "trade sizes"),
                        ("liquidation_hunter", "liquidation")):
        assert s.loc[name, "longs"] + s.loc[name, "shorts"] == 0
        assert words in s.loc[name, "idle_reason"], (name, s.loc[name, "idle_reason"])
    assert s.loc["spike_fader", "longs"] + s.loc["spike_fader", "shorts"] > 0
    assert s.loc["trend_filter", "longs"] + s.loc["trend_filter", "shorts"] > 0


def test_ledger_fees_and_no_entry_before_its_signal_bar_closed(result: BacktestResult, bars: pd.DataFrame) -> None:
    check_ledger(result, bars)  # identity to the cent, equity curve rebuilt from trades, fees, entry times
    assert all(t.fees > 0 and t.entry_fee > 0 and t.exit_fee > 0 for t in result.trades)
    assert result.final_equity == result.start_capital + sum((t.net_pnl for t in result.trades), Decimal(0))
    # one fate per draft, and every taken draft is a trade (or could not fill after the last bar)
    n_drafts = int(result.signals["longs"].sum() + result.signals["shorts"].sum())
    assert len(result.fates) == n_drafts
    assert (result.fates["fate"] == TAKEN).sum() == len(result.trades) + len(result.unfilled)
    taken = result.fates[result.fates["fate"] == TAKEN]
    assert set(zip(taken["bar_time"], taken["ghost_id"], strict=True)) - set(result.unfilled) == {
        (t.signal_time, t.ghost_id) for t in result.trades}


def test_every_trade_follows_the_exit_rules_of_simulate_trade(result: BacktestResult, bars: pd.DataFrame,
                                                               drafts: dict[int, pd.DataFrame]) -> None:
    model = fill_model_for("binance")
    for t in result.trades:
        if t.reason == END_OF_DATA:
            continue
        row = drafts[t.ghost_id].loc[t.signal_time]
        o = simulate_trade(bars, bars.index.get_loc(t.signal_time), int(row["side"]), float(row["entry"]),
                           float(row["stop"]), float(row["target"]), float(row["max_hold_s"]), model)
        assert (o.entry_time, o.exit_time, o.reason) == (t.entry_time, t.exit_time, t.reason)
        assert float(t.entry_price) == pytest.approx(o.entry_price, abs=1e-8)
        assert float(t.exit_price) == pytest.approx(o.exit_price, abs=1e-8)


def test_no_look_ahead_cut_leaves_everything_before_it_unchanged(result: BacktestResult, bars: pd.DataFrame) -> None:
    """The ghosts are re-evaluated on the cut series too, so this covers their causality inside the system."""
    for frac in (0.45, 0.8):
        cut = int(len(bars) * frac)
        cut_res = run_backtest(bars.iloc[:cut])
        assert_same_up_to_cut(result, cut_res, bars, cut)
        assert len(cut_res.trades) > 0

