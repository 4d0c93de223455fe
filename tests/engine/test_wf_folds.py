"""Walk-forward folds (apps.engine.walkforward): hand-counted calendars and every refusal."""

import pandas as pd
import pytest

from apps.engine.types import ConfigError
from apps.engine.walkforward import Fold, make_folds
from tests.datafiles import _flush_redis, services_use_test_redis  # noqa: F401


def day(d: str) -> pd.Timestamp:
    return pd.Timestamp(d, tz="UTC")


def spans(folds: list[Fold]) -> list[tuple[str, str, str, str]]:
    return [(f"{f.train_start:%m-%d}", f"{f.train_end:%m-%d}", f"{f.test_start:%m-%d}", f"{f.test_end:%m-%d}")
            for f in folds]


def test_rolling_folds_slide_a_fixed_train_window() -> None:
    # 30 days (Jan 1..Jan 31 exclusive), train 10, test 5, step 5 (= test):
    # test windows start at Jan 1 + 10 + 5k = Jan 11, 16, 21, 26; Jan 26 + 5 = Jan 31 <= end, Jan 31 + 5 > end
    folds = make_folds(day("2025-01-01"), day("2025-01-31"), scheme="rolling", train_days=10, test_days=5)
    assert spans(folds) == [("01-01", "01-11", "01-11", "01-16"), ("01-06", "01-16", "01-16", "01-21"),
                            ("01-11", "01-21", "01-21", "01-26"), ("01-16", "01-26", "01-26", "01-31")]
    assert [f.index for f in folds] == [0, 1, 2, 3]
    assert {f.train_days for f in folds} == {10} and {f.test_days for f in folds} == {5}


def test_anchored_folds_grow_the_train_window_from_the_start() -> None:
    folds = make_folds(day("2025-01-01"), day("2025-01-31"), scheme="anchored", train_days=10, test_days=5)
    assert spans(folds) == [("01-01", "01-11", "01-11", "01-16"), ("01-01", "01-16", "01-16", "01-21"),
                            ("01-01", "01-21", "01-21", "01-26"), ("01-01", "01-26", "01-26", "01-31")]
    assert [f.train_days for f in folds] == [10, 15, 20, 25]


def test_a_longer_step_leaves_untested_days_between_test_windows() -> None:
    # step 10: tests at Jan 11-16 and Jan 21-26; Jan 31 + 5 > end
    folds = make_folds(day("2025-01-01"), day("2025-01-31"), scheme="rolling", train_days=10, test_days=5,
                       step_days=10.0)
    assert spans(folds) == [("01-01", "01-11", "01-11", "01-16"), ("01-11", "01-21", "01-21", "01-26")]


def test_folds_start_at_the_first_utc_midnight_and_accept_strings_and_naive_times() -> None:
    # a start at 06:30 leaves its partial day as warm-up: t0 = Jan 2; the end at 12:00 cuts the last fold
    folds = make_folds("2025-01-01T06:30:00", "2025-01-12T12:00:00+00:00", scheme="rolling", train_days=5,
                       test_days=2)
    assert spans(folds) == [("01-02", "01-07", "01-07", "01-09"), ("01-04", "01-09", "01-09", "01-11")]
    assert all(f.train_start.tzinfo is not None and f.train_start == f.train_start.floor("D") for f in folds)


def test_fold_round_trips_through_json() -> None:
    f = make_folds(day("2025-01-01"), day("2025-01-31"), scheme="rolling", train_days=10, test_days=5)[2]
    d = f.as_dict()
    assert d == {"index": 2, "train_start": "2025-01-11T00:00:00+00:00", "train_end": "2025-01-21T00:00:00+00:00",
                 "test_start": "2025-01-21T00:00:00+00:00", "test_end": "2025-01-26T00:00:00+00:00"}
    assert Fold.from_dict(d) == f


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"scheme": "expanding"}, "scheme must be one of anchored, rolling, got 'expanding'"),
    ({"train_days": 0}, "train_days must be a whole number of days > 0, got 0"),
    ({"test_days": -3}, "test_days must be a whole number of days > 0, got -3"),
    ({"train_days": 10.5}, r"train_days must be a whole number of days \(scores are daily returns"),
    ({"test_days": True}, "test_days must be a whole number of days, got True"),
    ({"test_days": float("nan")}, "test_days must be a whole number of days > 0, got nan"),
    ({"step_days": 3}, r"step_days \(3\) must be at least test_days \(5\)"),
    ({"train_days": 30}, r"no fold fits: one fold needs train_days \+ test_days = 35 whole UTC days from "
                         r"2025-01-01, the range has 30"),
])
def test_bad_settings_are_refused_with_the_reason(kwargs: dict, message: str) -> None:
    args = {"scheme": "rolling", "train_days": 10, "test_days": 5, **kwargs}
    with pytest.raises(ConfigError, match=message):
        make_folds(day("2025-01-01"), day("2025-01-31"), **args)


def test_end_before_start_is_refused() -> None:
    with pytest.raises(ConfigError, match="must be after start"):
        make_folds(day("2025-01-31"), day("2025-01-01"), scheme="rolling", train_days=10, test_days=5)
