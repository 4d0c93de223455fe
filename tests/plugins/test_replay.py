"""The example plug-in trades in a replay of real klines through the desk's runtime (feed pipeline, bar evaluation,
manager, paper executor, exits) and takes exactly the trades the pure backtest of the same bars takes: a plug-in
runs on the same code path as a built-in ghost."""

from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from django.conf import settings

from apps.engine.backtest import BacktestConfig, GhostSetup, run_backtest
from apps.ghosts.models import Ghost
from apps.ghosts.plugins import plugins_load
from apps.ghosts.services import ghost_set_enabled, ghost_update_params, plugin_ghosts_ensure
from apps.market.importers import read_klines
from apps.market.models import FeedStatus
from apps.runtime.tasks import run_feed
from apps.trading.models import Position
from tests.datafiles import require

pytestmark = [pytest.mark.django_db(transaction=True)]
REPO = Path(__file__).resolve().parents[2]
DAY = "klines/binance_vision_spot_BTCUSDT_1m/BTCUSDT-1m-2020-01-02.zip"
PARAMS = {"streak": 4, "move_pct": 0.25, "stop_pct": 0.3, "target_pct": 0.4, "max_hold_min": 30}


@pytest.fixture
def example_plugin():
    plugins_load(folder=REPO / "plugins", entry_points=False)
    yield
    plugins_load(folder="", entry_points=False)


def test_the_example_plugin_trades_in_a_replay_as_in_the_backtest(example_plugin, desk, make_user):
    path = require(DAY)
    inst = desk["instrument"]
    op = make_user("olga", "operator")
    ghost_set_enabled(ghost_id=desk["ghost"].pk, enabled=False, actor=op, reason="the plug-in alone")
    (ghost,) = plugin_ghosts_ensure(instrument=inst, suffix="btc")
    ghost_update_params(ghost_id=ghost.pk, params=PARAMS, actor=op, reason="a quiet day")
    ghost_set_enabled(ghost_id=ghost.pk, enabled=True, actor=op, reason="replay it")
    FeedStatus.objects.filter(instrument=inst).update(source=f"replay:{path}@max")
    assert run_feed(inst.pk) == "stopped"

    bars = read_klines(path).set_index("open_time")
    bt = run_backtest(bars, [GhostSetup(ghost_id=ghost.pk, name=ghost.name, kind="streak_fader", config=PARAMS)],
                      BacktestConfig(start_capital=settings.HFT_START_CAPITAL, exchange="binance"))
    assert len(bt.trades) >= 2, "the day must trade for the comparison to mean anything"

    def px(x) -> Decimal:
        return Decimal(x).quantize(Decimal("0.000001"))

    closed = Position.objects.filter(ghost=ghost, status=Position.Status.CLOSED).order_by("opened_at")
    replay = [(pd.Timestamp(p.signal.bar_time), p.side, p.exit_reason, px(p.entry_price), px(p.exit_price))
              for p in closed]
    backtest = [(t.signal_time, "long" if t.side > 0 else "short", t.reason, px(t.entry_price), px(t.exit_price))
                for t in bt.trades if t.reason != "end_of_data"]
    assert replay == backtest
    # it lost this day and its auto-disable rules may stop it (the backtest applies the same rules, and agrees);
    # what must not happen is a plug-in failure
    g = Ghost.objects.get(pk=ghost.pk)
    assert not g.last_error and "plug-in disabled" not in g.status_reason, g.status_reason
