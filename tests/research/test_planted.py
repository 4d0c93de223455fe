"""Test data never reaches training: a planted parameter that only pays on the training stretch is chosen
in-sample and exposed out-of-sample by the study's figures.

Synthetic 1m candles (flat at 100, volume 10), six days, one 4-day-train / 2-day-test fold. Every 4 hours a
one-bar +2 % spike (100 -> 102, volume 50) that the spike fader (threshold 1.2 %) fades short at the next
open (102, filled 101.949 after 5 bps slippage). What follows the spike is the plant:

- TRAIN days: the price falls back to TRAIN_TROUGH (100.98), then returns to 102 and stays there: a short
  whose target take_profit_pct below its fill is at or above the trough (TP <= 0.9 %) is paid; a wider
  target is never reached and the trade ends flat at its time stop (fees and slippage lost);
- TEST days: the fall only reaches TEST_TROUGH (101.49): only TP <= 0.4 % is paid.

The grid of take_profit_pct 0.3 .. 1.1 (step 0.1) is searched exhaustively on net P&L. The train optimum is
the widest target that still fills in the train days, 0.9, and the study must choose it: it cannot know
that the test days pay 0.4 only. Its figures then expose the plant: in-sample net P&L > 0, out-of-sample < 0
(every test trade ends at its time stop), the degradation negative, and the trial with the best TEST score
(0.4) is not the chosen one. The trade counts per window (24 train spikes, 12 test spikes) show that each
window scores its own days only.
"""

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from apps.research.models import Trial
from apps.research.services import study_create, study_run_inline

pytestmark = pytest.mark.django_db

START = datetime(2025, 3, 1, tzinfo=UTC)
DAYS, TRAIN_DAYS, TEST_DAYS = 6, 4, 2
CYCLE = 240  # minutes between spikes: 6 a day, all inside their UTC day
SPIKE_AT = 100  # minute of the cycle (after the fader's 100-minute volume lookback)
BASE, TOP = 100.0, 102.0
TRAIN_TROUGH, TEST_TROUGH = 100.98, 101.49
FILL = TOP * (1 - 5e-4)  # binance's 5 bps adverse slippage on the short entry at the open of 102


def _cycle(trough: float) -> list[tuple[float, float, float, float, float]]:
    """(open, high, low, close, volume) of one 4-hour cycle."""
    bars = [(BASE, BASE, BASE, BASE, 10.0)] * SPIKE_AT
    bars.append((BASE, TOP, BASE, TOP, 50.0))  # the spike: +2 % in one bar
    path = list(np.linspace(TOP, trough, 11)[1:]) + list(np.linspace(trough, TOP, 11)[1:])  # down 10, up 10
    prev = TOP
    for p in path:
        bars.append((prev, max(prev, p), min(prev, p), p, 10.0))
        prev = p
    while len(bars) < SPIKE_AT + 66:  # flat at the top past the 60-minute time stop (entry at the next bar)
        bars.append((TOP, TOP, TOP, TOP, 10.0))
    down = np.linspace(TOP, BASE, 61)[1:]  # back to 100 slowly: -0.5 % per 15 minutes, no spike
    for p in down:
        bars.append((prev, prev, p, p, 10.0))
        prev = p
    while len(bars) < CYCLE:
        bars.append((BASE, BASE, BASE, BASE, 10.0))
    return bars


def planted_frame() -> pd.DataFrame:
    rows = []
    for day in range(DAYS):
        trough = TRAIN_TROUGH if day < TRAIN_DAYS else TEST_TROUGH
        for _ in range(1440 // CYCLE):
            rows += _cycle(trough)
    o, h, lo, c, v = (np.array(x) for x in zip(*rows, strict=True))
    return pd.DataFrame({"open_time": pd.date_range(START, periods=len(rows), freq="1min", tz="UTC"), "open": o,
                         "high": h, "low": lo, "close": c, "volume": v, "taker_buy_volume": np.nan,
                         "trade_count": np.nan})


@pytest.fixture
def planted(db):
    from apps.market.services import candles_import, instrument_ensure

    inst = instrument_ensure(exchange_code="binance", symbol="PLANT/USDT")
    assert candles_import(instrument=inst, frame=planted_frame()).stored == DAYS * 1440
    return inst


def test_the_planted_value_is_chosen_in_sample_and_exposed_out_of_sample(planted, operator) -> None:
    # the widest take profit each stretch pays, worked out from the plant (fill x (1 - tp) >= trough)
    grid = [round(0.3 + 0.1 * i, 1) for i in range(9)]
    train_best = max(tp for tp in grid if FILL * (1 - tp / 100) >= TRAIN_TROUGH)
    test_best = max(tp for tp in grid if FILL * (1 - tp / 100) >= TEST_TROUGH)
    assert (train_best, test_best) == (0.9, 0.4)

    study = study_create(actor=operator, queue=False, settings={
        "instrument_id": planted.pk, "start": START.isoformat(),
        "end": (START + pd.Timedelta(days=DAYS)).isoformat(), "target": "spike_fader",
        "params": {"spike_threshold_pct": 1.2, "min_target_pct": 0.2, "min_volume_ratio": 0.01,
                   "cooldown_seconds": 3600, "max_hold_seconds": 3600},
        "space": [{"name": "take_profit_pct", "low": 0.3, "high": 1.1, "step": 0.1}],
        "objective": "net_pnl", "min_trades": 1, "scheme": "rolling", "train_days": TRAIN_DAYS,
        "test_days": TEST_DAYS, "sampler": "grid", "seed": 3, "budget_trials": 50, "batch_size": 4,
        "sizing": {"mode": "stake", "stake": 1000}, "auto_disable": False, "kill_switch": False})
    assert study.settings["budget_trials"] == len(grid)  # a grid study visits each point once
    study = study_run_inline(study_id=study.pk)
    assert study.status == "done", study.error
    trials = list(Trial.objects.filter(study=study).order_by("number"))
    assert sorted(t.params["take_profit_pct"] for t in trials) == grid
    assert all(t.status == "done" and t.train["trades"] == 24 and t.test["trades"] == 12 for t in trials)

    (fold,) = study.results["folds"]
    assert fold["params"] == {"take_profit_pct": train_best}
    assert fold["is_value"] > 0 > fold["oos_value"]  # paid in-sample, lost out-of-sample
    assert fold["degradation"] < 0
    best_test = max(trials, key=lambda t: t.test_value)
    assert best_test.params["take_profit_pct"] == test_best != train_best  # the test days' optimum, not chosen
    assert best_test.value < fold["is_value"]  # ... because it scored worse in-sample
    oos = {f["key"]: f["value"] for f in study.results["oos"]["figures"]}
    assert oos["net_pnl"] < 0 and oos["days"] == TEST_DAYS and oos["trades"] == 12
    # one fold: the stitched curve is its test window's daily returns compounded from the start capital
    assert oos["return_pct"] == pytest.approx(fold["test"]["return_pct"], rel=1e-9)
