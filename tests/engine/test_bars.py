"""The bar contract: validate_bars and bars_from_records reject corrupt input loudly."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from apps.engine.bars import bars_from_records, validate_bars
from apps.engine.types import BAR_COLUMNS, BarsError
from tests.datafiles import _flush_redis, services_use_test_redis, synthetic_bars  # noqa: F401


def test_validate_returns_float_copy_with_all_columns() -> None:
    raw = synthetic_bars([100.0, 101.0, 100.5])
    raw["volume"] = raw["volume"].astype("int64")
    raw["note"] = "x"  # outside the contract: dropped
    out = validate_bars(raw)
    assert tuple(out.columns) == BAR_COLUMNS
    assert all(out[c].dtype == np.float64 for c in BAR_COLUMNS)
    assert out["taker_buy_volume"].isna().all() and out["liq_long_volume"].isna().all()
    assert str(out.index.tz) == "UTC" and out.index.name == "open_time"
    out.iloc[0, 0] = 1.0
    assert raw.iloc[0, 0] == 100.0  # a copy, never a view of the caller's frame


def test_validate_converts_other_timezones_to_utc() -> None:
    raw = synthetic_bars([100.0, 101.0])
    raw.index = raw.index.tz_convert("Europe/Warsaw")
    assert str(validate_bars(raw).index.tz) == "UTC"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda df: df.tz_localize(None), "tz-aware"),
        (lambda df: df.iloc[[0, 2, 1]], "not increasing"),
        (lambda df: df.iloc[[0, 1, 1]], "duplicate"),
        (lambda df: df.drop(columns=["high"]), "required column(s): high"),
        (lambda df: df.reset_index(drop=True), "DatetimeIndex"),
        (lambda df: df.assign(close=[100.0, np.nan, 100.0]), "'close' must be finite and > 0"),
        (lambda df: df.assign(open=[100.0, -1.0, 100.0]), "'open' must be finite and > 0"),
        (lambda df: df.assign(high=[90.0, 101.1, 101.0]), "inconsistent OHLC"),
        (lambda df: df.assign(volume=[1.0, -2.0, 1.0]), "'volume' must be >= 0"),
        (lambda df: df.set_axis(df.index + pd.Timedelta(seconds=30)), "whole minutes"),
    ],
)
def test_validate_rejects_corrupt_bars(mutate, message: str) -> None:
    with pytest.raises(BarsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_bars(mutate(synthetic_bars([100.0, 101.0, 100.5])))


def test_validate_allows_nan_in_optional_inputs() -> None:
    raw = synthetic_bars([100.0, 101.0]).assign(volume=[np.nan, 1.0], liq_long_volume=[np.nan, 0.0])
    out = validate_bars(raw)
    assert np.isnan(out["volume"].iloc[0]) and out["liq_long_volume"].iloc[1] == 0.0


def test_bars_from_records_decimal_none_missing_and_extra_keys() -> None:
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    records = [
        {"open_time": t0, "open": Decimal("100.5"), "high": Decimal("101"), "low": Decimal("100"),
         "close": Decimal("100.75"), "volume": Decimal("2.5"), "trade_count": 7, "liq_long_volume": None,
         "id": 42, "instrument_id": 1},
        {"open_time": t0 + timedelta(minutes=1), "open": 100.75, "high": 100.8, "low": 100.7, "close": 100.8},
    ]
    bars = bars_from_records(records)
    assert list(bars.index) == [pd.Timestamp(t0), pd.Timestamp(t0 + timedelta(minutes=1))]
    assert bars["open"].iloc[0] == 100.5 and bars["trades"].iloc[0] == 7.0
    assert np.isnan(bars["liq_long_volume"].iloc[0]) and np.isnan(bars["volume"].iloc[1])
    assert tuple(bars.columns) == BAR_COLUMNS


def test_bars_from_records_rejects_naive_times_and_non_numbers() -> None:
    with pytest.raises(BarsError, match="tz-aware"):
        bars_from_records([{"open_time": datetime(2025, 1, 1), "open": 1, "high": 1, "low": 1, "close": 1}])
    with pytest.raises(BarsError, match="must be a number"):
        bars_from_records([{"open_time": datetime(2025, 1, 1, tzinfo=UTC), "open": "1", "high": 1,
                            "low": 1, "close": 1}])


def test_bars_from_records_empty() -> None:
    bars = bars_from_records([])
    assert len(bars) == 0 and tuple(bars.columns) == BAR_COLUMNS and str(bars.index.tz) == "UTC"
