"""One code for backtest and paper: a replay of real klines through the running desk (feed pipeline, ghosts
task, signal manager, risk, paper executor, stops on each bar) takes the same trades as the pure backtest
of the same bars, and the wallet derived from the fills ledger adds up to the cent.

Data: the real data.binance.vision BTCUSDT 1m day 2020-01-02 (1,440 bars with taker-buy volume). The
spike fader runs with a lower threshold so a quiet day yields trades; both sides use the same params.
"""

from datetime import timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from django.conf import settings
from django.db.models import Sum

from apps.engine.backtest import BacktestConfig, GhostSetup, run_backtest
from apps.market.importers import read_klines
from apps.market.models import Candle, FeedStatus
from apps.runtime.pipeline import FeedPipeline
from apps.runtime.tasks import run_feed
from apps.trading.models import Fill, Position
from apps.trading.selectors import equity, open_positions, unrealised
from tests.datafiles import require
from tests.factories import make_ghost, make_position

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
DAY = "klines/binance_vision_spot_BTCUSDT_1m/BTCUSDT-1m-2020-01-02.zip"
PARAMS = {"spike_threshold_pct": 0.5, "take_profit_pct": 0.4, "min_target_pct": 0.15, "min_stop_pct": 0.3,
          "min_volume_ratio": 1.2, "cooldown_seconds": 900, "max_hold_seconds": 1800}
CENT = Decimal("0.01")


def test_a_replay_takes_the_backtests_trades_and_the_ledger_adds_up(desk):
    path = require(DAY)
    ghost = desk["ghost"]
    ghost.params = PARAMS
    ghost.save(update_fields=["params"])
    FeedStatus.objects.filter(instrument=desk["instrument"]).update(source=f"replay:{path}@max")
    assert run_feed(desk["instrument"].pk) == "stopped"
    assert Candle.objects.filter(instrument=desk["instrument"]).count() == 1440

    positions = list(Position.objects.order_by("opened_at"))
    bars = read_klines(path).set_index("open_time")
    bt = run_backtest(bars, [GhostSetup(ghost_id=ghost.pk, name=ghost.name, kind="spike_fader", config=PARAMS)],
                      BacktestConfig(start_capital=settings.HFT_START_CAPITAL, exchange="binance"))
    print(f"\nreplay: {len(positions)} positions; backtest: {len(bt.trades)} trades\n{bt.summary()}")
    assert len(bt.trades) >= 2, "the day must trade for this comparison to mean anything"
    closed = [p for p in positions if p.status == Position.Status.CLOSED]
    # Prices to 1e-6: the desk stores a stop re-anchored on the fill in 1e-8 steps and exits from that stored
    # level, the backtest from the unrounded float (a last-digit difference, far below a cent of P&L).
    def px(x) -> Decimal:
        return Decimal(x).quantize(Decimal("0.000001"))

    replay = [(pd.Timestamp(p.signal.bar_time), p.side, p.exit_reason, px(p.entry_price), px(p.exit_price),
               p.quantity.normalize()) for p in closed]
    backtest = [(t.signal_time, "long" if t.side > 0 else "short", t.reason, px(t.entry_price), px(t.exit_price),
                 t.qty.normalize()) for t in bt.trades if t.reason != "end_of_data"]
    assert replay == backtest
    assert sum((p.net_pnl for p in closed), Decimal(0)).quantize(CENT) == sum(
        (t.net_pnl for t in bt.trades if t.reason != "end_of_data"), Decimal(0)).quantize(CENT)

    # The wallet from the ledger: start capital + realised - every fee + open marks, to the cent.
    realised = sum((p.gross_pnl for p in closed), Decimal(0))
    fees = Fill.objects.aggregate(s=Sum("fee"))["s"] or Decimal(0)
    last = float(FeedStatus.objects.get(instrument=desk["instrument"]).last_price)
    marks = sum((unrealised(p, last) for p in positions if p.status == Position.Status.OPEN), Decimal(0))
    assert equity().quantize(CENT) == (settings.HFT_START_CAPITAL + realised - fees + marks).quantize(CENT)
    assert sum((p.fees for p in positions), Decimal(0)) == fees  # every fee of the ledger is on a position
    for p in closed:  # each round trip's gross from its own two fills
        entry, exit_ = (Fill.objects.get(order__position=p, order__purpose=k) for k in ("entry", "exit"))
        sign = 1 if p.side == "long" else -1
        assert p.gross_pnl == ((exit_.price - entry.price) * p.quantity * sign).quantize(Decimal("0.00000001"))


def test_a_kline_replay_exits_by_the_fill_conventions_on_synthetic_candles(desk):
    """The replay's bar rules are the backtest's (apps.engine.exits.bar_check), checked on hand-made klines:
    an open beyond the target exits at that open (reason target, no slippage: a limit); a time stop due on a
    bar fires at its open even when that open is beyond the stop (reason time, a market order)."""
    t0 = pd.Timestamp("2026-01-05 12:00", tz="UTC")
    inst = desk["instrument"]
    g1, g2, g3 = (make_ghost(name=f"g{k}", instrument=inst) for k in range(3))  # one open position per ghost
    # factory levels: long 100 -> stop 99, target 100.8; short 100 -> stop 101, target 99.2
    gapped = make_position(ghost=g1, opened_at=t0.to_pydatetime())
    timed_long = make_position(ghost=g2, opened_at=t0.to_pydatetime())
    timed_short = make_position(ghost=g3, opened_at=t0.to_pydatetime(), side="short")
    due_at = (t0 + pd.Timedelta(minutes=2)).to_pydatetime()
    Position.objects.filter(pk__in=[timed_long.pk, timed_short.pk]).update(time_stop_at=due_at)
    ohlc = [(100.0, 100.2, 99.8, 100.0), (100.1, 100.3, 99.9, 100.2), (101.5, 101.6, 98.0, 101.2),
            (101.2, 101.3, 101.1, 101.2)]
    bars = [{"open_time": (t0 + pd.Timedelta(minutes=k)).to_pydatetime(), "open": o, "high": h, "low": lo,
             "close": c, "volume": 1.0, "taker_buy_volume": np.nan, "taker_sell_volume": np.nan, "trades": 0,
             "whale_buy_volume": np.nan, "whale_sell_volume": np.nan, "liq_long_volume": np.nan,
             "liq_short_volume": np.nan} for k, (o, h, lo, c) in enumerate(ohlc)]
    pipe = FeedPipeline(inst, on_bar=None, has_liquidations=False)
    pipe.positions = list(open_positions(instrument_id=inst.pk))
    last_ms = int((t0 + pd.Timedelta(minutes=len(bars))).timestamp() * 1000)
    pipe.consume_bars(bars, now_ms=last_ms)
    pipe.finish_bars()
    slip = 0.0005
    bar2_open, bar2_close = t0 + pd.Timedelta(minutes=2), t0 + pd.Timedelta(minutes=3) - timedelta(milliseconds=1)
    gapped.refresh_from_db()
    # bar 2 opens at 101.5 beyond the 100.8 target (and its low 98 crosses the stop): the open, as a target
    assert (gapped.exit_reason, gapped.exit_price, gapped.closed_at) == ("target", Decimal("101.5"), bar2_close)
    timed_long.refresh_from_db()
    assert (timed_long.exit_reason, timed_long.closed_at) == ("time", bar2_open)
    assert timed_long.exit_price == Decimal(repr(101.5 * (1 - slip))).quantize(Decimal("0.00000001"))
    timed_short.refresh_from_db()  # its stop 101 is below the 101.5 open: the due time stop still wins
    assert (timed_short.exit_reason, timed_short.closed_at) == ("time", bar2_open)
    assert timed_short.exit_price == Decimal(repr(101.5 * (1 + slip))).quantize(Decimal("0.00000001"))
