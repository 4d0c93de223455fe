"""The results of a study, hand-worked: trial rows written by hand (no engine), then `study_results`.

Two folds of 2 train days and 2 test days over 6 days (fold 1 tests days 3-4, fold 2 days 5-6), three trials
per fold; the numbers below are worked out on paper from the rows."""

from datetime import UTC, datetime

import pandas as pd
import pytest

from apps.research.models import Study, Trial
from apps.research.results import study_results
from apps.research.services import daily_returns

pytestmark = pytest.mark.django_db

DAYS = ["2025-01-01", "2025-01-02", "2025-01-03", "2025-01-04", "2025-01-05", "2025-01-06"]
FOLDS = [{"index": 0, "train_start": "2025-01-01T00:00:00+00:00", "train_end": "2025-01-03T00:00:00+00:00",
          "test_start": "2025-01-03T00:00:00+00:00", "test_end": "2025-01-05T00:00:00+00:00"},
         {"index": 1, "train_start": "2025-01-03T00:00:00+00:00", "train_end": "2025-01-05T00:00:00+00:00",
          "test_start": "2025-01-05T00:00:00+00:00", "test_end": "2025-01-07T00:00:00+00:00"}]
SPACE = [{"name": "x", "kind": "float", "low": 0.0, "high": 1.0, "step": None, "choices": None, "ghost": "g",
          "field": "x"}]


def test_daily_returns_belong_to_the_day_they_start_in() -> None:
    t = pd.to_datetime(["2025-01-01 10:00", "2025-01-02 00:00", "2025-01-03 00:00", "2025-01-03 12:00"], utc=True)
    eq = pd.Series([10_000.0, 10_100.0, 9_999.0, 10_200.0], index=t)
    r = daily_returns(eq, DAYS[:4])
    assert r[0] == pytest.approx(0.01) and r[1] == pytest.approx(9_999 / 10_100 - 1)
    assert r[2] == pytest.approx(10_200 / 9_999 - 1) and r[3] is None  # no point on day 4
    # two returns starting in one day compound: (1 + 0.01) x (1 + 0.02) - 1; a day before the study's is dropped
    t2 = pd.to_datetime(["2024-12-31 23:00", "2025-01-01 00:00", "2025-01-01 06:00", "2025-01-02 00:00"], utc=True)
    r2 = daily_returns(pd.Series([99.0, 100.0, 101.0, 103.02], index=t2), DAYS[:2])
    assert r2 == [pytest.approx(1.01 * 1.02 - 1), None]


def score(value, trades=3, net=None, return_pct=None) -> dict:
    return {"objective": "sharpe", "value": value, "trades": trades, "net_pnl": net, "sharpe": value,
            "sortino": None, "profit_factor": None, "max_drawdown_pct": None, "calmar": None, "reason": "",
            "days": 2, "return_pct": return_pct}


def test_results_choose_by_train_value_and_stitch_the_test_windows(btc9) -> None:
    study = Study.objects.create(
        instrument=btc9, start=datetime(2025, 1, 1, tzinfo=UTC), end=datetime(2025, 1, 7, tzinfo=UTC),
        settings={"objective": "sharpe", "min_trades": 1, "start_capital": "10000", "space": SPACE},
        folds=FOLDS, days=DAYS, status="running")
    z = [0.0] * 6

    def trial(fold, number, x, value, test, daily, status="done", trades=3):
        return Trial.objects.create(study=study, fold=fold, number=number, params={"x": x}, status=status,
                                    value=value, test_value=test, train=score(value), test=score(test, trades),
                                    daily=daily)

    # fold 1: trial 1 and 2 tie at 2.0 -> the lower number (1) is chosen; its test days 3-4 return +1 %, -2 %
    trial(0, 0, 0.1, 1.0, 0.5, [0.01, 0.0, 0.02, 0.02, 0.0, 0.0])
    chosen1 = trial(0, 1, 0.2, 2.0, -1.5, [0.02, 0.03, 0.01, -0.02, 0.0, 0.0])
    trial(0, 2, 0.3, 2.0, 9.9, [0.0, 0.0, 0.05, 0.05, 0.0, 0.0])
    # fold 2: the best train value wins though another trial tested better; an undefined one is never chosen
    chosen2 = trial(1, 0, 0.2, 0.7, 0.4, [0.02, 0.03, 0.01, -0.02, 0.03, 0.0], trades=4)  # same params as chosen1
    trial(1, 1, 0.9, 0.3, 3.0, [0.0, 0.0, 0.0, 0.0, 0.04, 0.04])
    trial(1, 2, 0.5, None, None, z)
    Trial.objects.create(study=study, fold=1, number=3, params={"x": 0.6}, status="infeasible")

    r = study_results(study)
    f1, f2 = r["folds"]
    assert (f1["trial_id"], f1["is_value"], f1["oos_value"]) == (chosen1.pk, 2.0, -1.5)
    assert f1["degradation"] == pytest.approx(-3.5)  # OOS - IS
    assert (f2["trial_id"], f2["is_value"], f2["oos_value"]) == (chosen2.pk, 0.7, 0.4)
    assert (f2["done"], f2["undefined"], f2["infeasible"]) == (3, 1, 1)
    # the stitched out-of-sample days: fold 1's chosen on days 3-4, fold 2's chosen on days 5-6
    assert r["oos"]["days"] == DAYS[2:] and r["oos"]["fold"] == [0, 0, 1, 1]
    assert r["oos"]["returns"] == [0.01, -0.02, 0.03, 0.0]
    figs = {f["key"]: f["value"] for f in r["oos"]["figures"]}
    final = 10_000 * 1.01 * 0.98 * 1.03 * 1.0
    assert figs["net_pnl"] == pytest.approx(final - 10_000)  # -18.94
    assert figs["return_pct"] == pytest.approx((final / 10_000 - 1) * 100)
    assert figs["max_drawdown"] == pytest.approx((10_100 - 10_100 * 0.98) / 10_100 * 100)  # the -2 % day
    assert figs["trades"] == 3 + 4 and figs["days"] == 4
    # DSR: chosen1 and chosen2 ran the same params: 5 distinct configurations, not 6, and x=0.5 never moved
    # (no Sharpe ratio): N = 4
    assert r["dsr"]["n_trials"] == 4 and r["dsr"]["n_obs"] == 4
    assert r["pbo"]["value"] is None and "periods" in r["pbo"]["reason"]  # 6 days are too few for CSCV
    assert r["stability"][0]["values"] == [0.2, 0.2] and r["stability"][0]["spread_pct"] == 0.0
    assert r["trials"]["total"] == 7 and r["trials"]["infeasible"] == 1 and r["trials"]["undefined"] == 1


def test_net_pnl_degradation_is_per_day(btc9) -> None:
    from apps.research.results import _degradation

    # 30 train days earning 300 = 10 a day; 10 test days earning 50 = 5 a day: -5 a day
    assert _degradation("net_pnl", 300.0, 50.0, 30, 10) == pytest.approx(-5.0)
    assert _degradation("sharpe", 2.0, 0.5, 30, 10) == pytest.approx(-1.5)
    assert _degradation("sharpe", None, 0.5, 30, 10) is None
