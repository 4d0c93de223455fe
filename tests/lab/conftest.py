"""Fixtures of the lab tests: real 1m candles of the 90-day BTC/USDT file imported into the test database
through the project's import service (a slice, to keep the tests quick), and lab settings built on them."""

import functools
from datetime import UTC, datetime

import pandas as pd
import pytest

from tests.datafiles import BTC_90D, require

# 2025-06-21 .. 06-25: four real days around the 06-22/23 swings, where a sensitive spike fader drafts ~75
# times (the default one only a handful); 5,760 bars import in ~0.1 s
SLICE_START = datetime(2025, 6, 21, tzinfo=UTC)
SLICE_END = datetime(2025, 6, 25, tzinfo=UTC)
SENSITIVE_FADER = {"spike_threshold_pct": 0.5, "take_profit_pct": 0.4, "min_target_pct": 0.2, "min_stop_pct": 0.3,
                   "min_volume_ratio": 1.0}


@functools.lru_cache(maxsize=1)
def _real_klines() -> pd.DataFrame:
    from apps.market.importers import read_klines

    return read_klines(require(BTC_90D))


def import_real(instrument, start: datetime, end: datetime) -> int:
    """Import [start, end) of the real 90-day file for `instrument` with `candles_import`; rows stored."""
    from apps.market.services import candles_import

    frame = _real_klines()
    part = frame[(frame["open_time"] >= pd.Timestamp(start)) & (frame["open_time"] < pd.Timestamp(end))]
    return candles_import(instrument=instrument, frame=part.reset_index(drop=True)).stored


@pytest.fixture
def btc(db):
    """binance BTC/USDT with the real 1m candles of SLICE_START..SLICE_END."""
    from apps.market.services import instrument_ensure

    inst = instrument_ensure(exchange_code="binance", symbol="BTC/USDT")
    assert import_real(inst, SLICE_START, SLICE_END) == 4 * 1440
    return inst


def lab_request(inst, **over) -> dict:
    """A valid lab request on the slice: the sensitive spike fader, everything else at its default."""
    data = {"instrument_id": inst.pk, "start": SLICE_START.isoformat(), "end": SLICE_END.isoformat(),
            "ghosts": [{"kind": "spike_fader", "params": dict(SENSITIVE_FADER)}]}
    data.update(over)
    return data
