"""`manage.py backtest` on real candles: the same services as the page (a stored run, source "command"), the
summary and gates printed, the trades CSV equal to the stored trades; a refused request names the field."""

import csv
import io
import json
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from apps.lab.models import BacktestRun, BacktestTrade
from tests.lab.conftest import SENSITIVE_FADER

pytestmark = pytest.mark.django_db


def run_command(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("backtest", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_command_runs_prints_and_writes_the_csv(btc, tmp_path) -> None:
    path = tmp_path / "trades.csv"
    out, err = run_command("--instrument", "binance:BTC/USDT", "--start", "2025-06-21", "--end", "2025-06-25",
                           "--ghost", f"spike_fader:{json.dumps(SENSITIVE_FADER)}", "--direction", "spike_fader=short",
                           "--capital", "20000", "--slippage-bps", "0", "--limit", "max_trades_per_day=4",
                           "--csv", str(path))
    run = BacktestRun.objects.get()
    assert run.status == "done" and run.source == "command"
    s = run.settings
    assert s["start_capital"] == "20000" and s["fee"]["slippage_bps"] == 0 and s["limits"]["max_trades_per_day"] == 4
    assert s["ghosts"][0]["direction"] == "short"
    trades = list(BacktestTrade.objects.filter(run=run).order_by("seq"))
    assert trades and all(t.side == -1 for t in trades)  # long drafts are direction_off
    assert "loading bars" in err and "storing" in err
    for label in ("Net P&L", "Win rate", "Profit factor", "Sharpe", "Max drawdown", "Exposure", "Fees paid"):
        assert label in out
    assert out.count("phase 1 ") == 4 and out.count("phase 2 ") == 2
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(trades) and f"{len(trades)} trades written" in out
    assert [r["net_pnl"] for r in rows] == [str(t.net_pnl) for t in trades]
    assert rows[0]["side"] == "short" and rows[0]["entry_time"] == trades[0].entry_time.isoformat()


def test_refused_requests_name_the_field(btc) -> None:
    err = io.StringIO()
    with pytest.raises(CommandError, match="refused"):
        call_command("backtest", "--start", "2025-06-21", "--end", "2025-06-25", stderr=err, stdout=io.StringIO())
    assert "ghosts: choose at least one ghost" in err.getvalue()
    err = io.StringIO()
    with pytest.raises(CommandError, match="refused"):
        call_command("backtest", "--start", "2024-01-01", "--end", "2024-01-02", "--ghost", 'spike_fader:{"x": 1}',
                     stderr=err, stdout=io.StringIO())
    assert "start: no stored 1m candles" in err.getvalue() and "unknown spike_fader parameter(s): x" in err.getvalue()
    with pytest.raises(CommandError, match="no instrument 'kraken:ETH/EUR'"):
        call_command("backtest", "--instrument", "kraken:ETH/EUR", "--start", "2025-06-21", "--end", "2025-06-22")
    with pytest.raises(CommandError, match="not JSON"):
        call_command("backtest", "--start", "2025-06-21", "--end", "2025-06-22", "--ghost", "spike_fader:{bad")
    assert not BacktestRun.objects.exists()


def test_textbook_preset_equals_the_pure_engine_on_the_same_real_bars(btc, tmp_path) -> None:
    """The lab path (candles stored in SQLite, read back, run, stored, exported) takes exactly the trades of
    the pure engine with `textbook_setup()` on the same bars of the file, to the cent."""
    from apps.engine.backtest import run_backtest
    from apps.engine.presets import textbook_setup
    from tests.datafiles import load_freqtrade_1m

    path = tmp_path / "textbook.csv"
    out, _ = run_command("--preset", "textbook", "--start", "2025-06-21", "--end", "2025-06-25", "--csv", str(path))
    run = BacktestRun.objects.get()
    assert run.settings["sizing"] == {"mode": "stake", "stake": 1000.0, "equity_pct": 10.0}
    assert run.settings["fee"] == {"taker_fee": 0.001, "maker_fee": 0.001, "slippage_bps": 0.0}
    assert (run.settings["auto_disable"], run.settings["kill_switch"]) == (False, False)
    bars = load_freqtrade_1m().loc["2025-06-21":"2025-06-24"]
    expected = run_backtest(bars, *textbook_setup()).trades
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(expected) > 0
    cent = Decimal("0.01")
    for r, t in zip(rows, expected, strict=True):
        assert (r["entry_time"], r["exit_time"], r["reason"]) == (t.entry_time.isoformat(), t.exit_time.isoformat(),
                                                                  t.reason)
        assert Decimal(r["entry_price"]) == t.entry_price and Decimal(r["exit_price"]) == t.exit_price
        assert Decimal(r["net_pnl"]).quantize(cent) == t.net_pnl.quantize(cent)
    assert "Trades" in out and "phase 1" in out
