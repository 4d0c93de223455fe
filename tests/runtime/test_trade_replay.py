"""A trade replay (aggTrades) decides in-process too (issue 13): its bars are built ahead from its own trades by the
same sanitiser and builder (the preview), the ghosts run on them 240 bars at a time, and each bar's drafts are used
once the bar is stored as previewed. The signals must be exactly the drafts of the stored bars evaluated as a whole
(per-bar evaluation gives the same, the engine proves it), with the preview intact and with a preview that is
wrong from some bar on (the decider notices and goes bar by bar from there)."""

import logging
from datetime import timedelta
from decimal import Decimal

import pandas as pd
import pytest

from apps.engine.batch import evaluate_all
from apps.market import replay_feed
from apps.market.models import Candle, FeedStatus
from apps.market.selectors import candle_bars
from apps.runtime.tasks import run_feed
from apps.signals.models import Signal
from tests.datafiles import require

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
DAY = "trades/binance_vision_cm_BTCUSD_PERP_aggTrades/BTCUSD_PERP-aggTrades-2026-05-08.zip"
PARAMS = {"spike_threshold_pct": 0.3, "take_profit_pct": 0.25, "min_target_pct": 0.15, "min_stop_pct": 0.3,
          "min_volume_ratio": 1.2, "cooldown_seconds": 900, "max_hold_seconds": 1800}


def _replay_and_compare(desk) -> list:
    inst, ghost = desk["instrument"], desk["ghost"]
    ghost.params = PARAMS
    ghost.save(update_fields=["params"])
    FeedStatus.objects.filter(instrument=inst).update(source=f"replay:{require(DAY)}@max")
    assert run_feed(inst.pk) == "stopped"
    last = Candle.objects.filter(instrument=inst).order_by("-open_time").first().open_time
    bars = candle_bars(instrument_id=inst.pk, until=last, minutes=10_000)
    drafts = evaluate_all(bars, {"spike_fader": PARAMS})["spike_fader"].drafts
    drafts = drafts[drafts["side"] != 0]

    def q(x) -> Decimal:
        return Decimal(repr(float(x))).quantize(Decimal("0.0000001"))

    want = [(pd.Timestamp(t), "long" if r["side"] > 0 else "short", q(r["entry"]), q(r["stop"]), q(r["target"]))
            for t, r in drafts.iterrows()]
    got = [(pd.Timestamp(s.bar_time), s.side, q(s.entry), q(s.stop), q(s.target))
           for s in Signal.objects.filter(ghost=ghost).order_by("bar_time")]
    assert len(want) >= 2, "the day must draft for the comparison to mean anything"
    assert got == want
    return got


def test_a_trade_replay_signals_the_drafts_of_its_stored_bars(desk, caplog):
    with caplog.at_level(logging.INFO):
        _replay_and_compare(desk)
    assert "differs from the replay's preview" not in caplog.text  # the preview held: the fast path was taken


def test_a_wrong_preview_is_noticed_and_the_replay_goes_bar_by_bar(desk, caplog, monkeypatch):
    real = replay_feed.ReplayFeed._preview

    def tampered(self, last_ms):
        bars = real(self, last_ms)
        start = bars["open_time"].iloc[0] + timedelta(hours=6)
        bars.loc[bars["open_time"] >= start, "close"] *= 1.01  # wrong from 06:00 on
        return bars

    monkeypatch.setattr(replay_feed.ReplayFeed, "_preview", tampered)
    with caplog.at_level(logging.INFO):
        _replay_and_compare(desk)
    assert "differs from the replay's preview; evaluating bar by bar" in caplog.text
