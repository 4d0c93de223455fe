"""Reads of the lab: the bars of a run, what is stored in a range, the success criteria."""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
from django.db.models import Count, Max, Min, Q

from apps.engine.criteria import Gates
from apps.lab.models import SuccessCriteria
from apps.market.models import Candle, LargeTrade, LiquidationEvent
from apps.market.selectors import candle_bars


@dataclass(frozen=True)
class DataRange:
    """The stored 1m candles of one instrument in [start, end): first and last open time, count."""

    first: datetime | None
    last: datetime | None
    count: int


def data_range(*, instrument_id: int, start: datetime, end: datetime, timeframe: str = "1m") -> DataRange:
    row = Candle.objects.filter(instrument_id=instrument_id, timeframe=timeframe, open_time__gte=start,
                                open_time__lt=end).aggregate(first=Min("open_time"), last=Max("open_time"),
                                                             n=Count("id"))
    return DataRange(first=row["first"], last=row["last"], count=row["n"])


def run_bars(*, instrument_id: int, start: datetime, end: datetime, timeframe: str = "1m") -> pd.DataFrame:
    """The engine's bars frame of [start, end): ONE query straight into numpy (`market.selectors.candle_bars`,
    the live loader), at most one row per minute of the range."""
    minutes = max(1, math.ceil((end - start) / timedelta(minutes=1)))
    bars = candle_bars(instrument_id=instrument_id, until=end - timedelta(microseconds=1), minutes=minutes,
                       timeframe=timeframe)
    return bars[bars.index >= pd.Timestamp(start)]


@dataclass(frozen=True)
class StoredInputs:
    """What a range holds per input, for the new-run form: candles, candles with a taker split, candles
    with liquidation volumes (known, 0 included), liquidation events and large trades."""

    candles: int
    first: datetime | None
    last: datetime | None
    taker: int
    liquidations: int
    liquidation_events: int
    large_trades: int
    whale: int


def stored_inputs(*, instrument_id: int, start: datetime, end: datetime) -> StoredInputs:
    """Three aggregate queries whatever the range."""
    c = Candle.objects.filter(instrument_id=instrument_id, timeframe="1m", open_time__gte=start, open_time__lt=end)
    row = c.aggregate(n=Count("id"), first=Min("open_time"), last=Max("open_time"),
                      taker=Count("id", filter=Q(taker_buy_volume__isnull=False)),
                      liq=Count("id", filter=Q(liq_long_volume__isnull=False)),
                      whale=Count("id", filter=Q(whale_buy_volume__isnull=False)))
    rng = {"instrument_id": instrument_id, "ts__gte": start, "ts__lt": end}
    return StoredInputs(candles=row["n"], first=row["first"], last=row["last"], taker=row["taker"],
                        liquidations=row["liq"], whale=row["whale"],
                        liquidation_events=LiquidationEvent.objects.filter(**rng).count(),
                        large_trades=LargeTrade.objects.filter(**rng).count())


def success_criteria() -> SuccessCriteria:
    """The one criteria row (created with the seed's defaults on first read)."""
    row, _ = SuccessCriteria.objects.get_or_create(pk=1)
    return row


def criteria_gates(row: SuccessCriteria | None = None) -> Gates:
    row = row or success_criteria()
    return Gates(win_rate_min_pct=row.win_rate_min_pct, sharpe_min=row.sharpe_min,
                 max_drawdown_max_pct=row.max_drawdown_max_pct, profitable_streak_days=row.profitable_streak_days,
                 daily_loss_max_pct=row.daily_loss_max_pct, daily_profit_min=float(row.daily_profit_min),
                 capital_basis=float(row.capital_basis))
