"""The live window loader reads bars straight from SQL; it must equal the ORM path it replaced exactly."""

import pandas as pd
import pytest

from apps.engine.bars import bars_from_records, validate_bars
from apps.market.models import Candle
from apps.market.selectors import candle_bars, candle_window, candles_as_bar_records
from tests.apps.test_evaluation import store_spike_series

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]


def test_candle_bars_equal_the_orm_records_path_nulls_included(desk):
    inst = desk["instrument"]
    last = store_spike_series(inst)
    Candle.objects.filter(pk=Candle.objects.order_by("open_time")[280].pk).update(taker_buy_volume=None)
    orm = bars_from_records(candles_as_bar_records(candle_window(instrument_id=inst.pk, until=last.open_time,
                                                                   minutes=250)))
    sql = candle_bars(instrument_id=inst.pk, until=last.open_time, minutes=250)
    pd.testing.assert_frame_equal(orm, validate_bars(sql), check_freq=False)
    assert len(sql) == 250 and sql.index[-1] == last.open_time and sql["taker_buy_volume"].isna().sum() == 1
    earlier = candle_bars(instrument_id=inst.pk, until=sql.index[100], minutes=50)
    assert earlier.index[-1] == sql.index[100] and len(earlier) == 50  # never a bar after `until`
    assert candle_bars(instrument_id=inst.pk + 99, until=last.open_time, minutes=10).empty
