"""One code for backtest and paper: a replay of real klines through the running desk (feed pipeline, ghosts
task, signal manager, risk, paper executor, stops on each bar) takes the same trades as the pure backtest
of the same bars, and the wallet derived from the fills ledger adds up to the cent.

Data: the real data.binance.vision BTCUSDT 1m day 2020-01-02 (1,440 bars with taker-buy volume). The
spike fader runs with a lower threshold so a quiet day yields trades; both sides use the same params.
"""

from decimal import Decimal

import pandas as pd
import pytest
from django.conf import settings
from django.db.models import Sum

from apps.engine.backtest import BacktestConfig, GhostSetup, run_backtest
from apps.market.importers import read_klines
from apps.market.models import Candle, FeedStatus
from apps.market.tasks import run_feed
from apps.trading.models import Fill, Position
from apps.trading.selectors import equity, unrealised
from tests.datafiles import require

pytestmark = pytest.mark.django_db(transaction=True)
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
