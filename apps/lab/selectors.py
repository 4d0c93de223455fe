"""Reads of the lab: the bars of a run, what is stored in a range, the success criteria."""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
from django.core.cache import cache
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


# --- for the lab pages (Part C) --------------------------------------------------------------------------------


def _candle_stats() -> dict[int, dict]:
    """Per instrument: stored 1m candles (n, first, last). The GROUP BY reads the whole candle index (0.2 s for
    130k rows, seconds at millions), so it is cached under the newest candle id: any stored candle changes the
    key, and a page between two bars costs one index lookup."""
    top = Candle.objects.aggregate(m=Max("id"))["m"]
    key = f"lab:candle-stats:{top}"
    try:
        hit = cache.get(key)
    except Exception:  # noqa: BLE001 - a dead cache only costs the query
        hit = None
    if hit is not None:
        return hit
    stats = {row["instrument_id"]: row for row in Candle.objects.filter(timeframe="1m").values("instrument_id")
             .order_by("instrument_id").annotate(n=Count("id"), first=Min("open_time"), last=Max("open_time"))}
    try:
        cache.set(key, stats, 3600)
    except Exception:  # noqa: BLE001
        pass
    return stats


def instruments_with_data() -> list[dict]:
    """Every instrument with its stored 1m candles (count, first and last open time) for the new-run form's
    instrument list; "first"/"last" are the default range as dates (last = the day after the last candle, the
    range's end being exclusive). Two queries: the instruments, then one GROUP BY over the candle index."""
    from apps.market.models import Instrument

    stats = _candle_stats()
    out = []
    for inst in Instrument.objects.select_related("exchange").order_by("id"):
        s = stats.get(inst.pk)
        out.append({
            "id": inst.pk, "instrument": inst, "label": str(inst), "candles": s["n"] if s else 0,
            "first_time": s["first"] if s else None, "last_time": s["last"] if s else None,
            "first": s["first"].strftime("%Y-%m-%d") if s else "",
            "last": (s["last"] + timedelta(days=1)).strftime("%Y-%m-%d") if s else "",
        })
    return out


def run_ohlc(*, instrument_id: int, start_ms: int, end_ms: int, timeframe: str = "1m"):
    """(open time ms int64, open, high, low, close float64) of the stored candles in [start, end): ONE query
    of five columns straight into numpy (the price chart re-buckets them per zoom, apps.lab.charts)."""
    from datetime import UTC

    import numpy as np
    from django.db import connection

    table, qn = Candle._meta.db_table, connection.ops.quote_name
    cols = ", ".join(qn(Candle._meta.get_field(c).column) for c in ("open_time", "open", "high", "low", "close"))
    sql = (f"SELECT {cols} FROM {qn(table)} WHERE {qn('instrument_id')} = %s AND {qn('timeframe')} = %s "
           f"AND {qn('open_time')} >= %s AND {qn('open_time')} < %s ORDER BY {qn('open_time')}")
    start = datetime.fromtimestamp(start_ms / 1000, tz=UTC)
    end = datetime.fromtimestamp(end_ms / 1000, tz=UTC)
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(sql, [instrument_id, timeframe, adapt(start), adapt(end)])
        rows = cursor.fetchall()
    if not rows:
        empty = np.empty(0, dtype=np.float64)
        return np.empty(0, dtype=np.int64), empty, empty, empty, empty
    times, o, h, low, c = zip(*rows, strict=True)
    t = pd.DatetimeIndex(pd.to_datetime(list(times), utc=True)).as_unit("ms").asi8.astype(np.int64)
    return (t, *(np.array(v, dtype=np.float64) for v in (o, h, low, c)))


def run_trades_in_range(*, run_id: int, start_ms: int, end_ms: int, limit: int) -> tuple[list[dict], bool]:
    """A run's trades with an entry or an exit in [start, end), in close order, at most `limit` (and whether
    more exist): what the price chart marks."""
    from datetime import UTC

    from apps.lab.models import BacktestTrade

    start = datetime.fromtimestamp(start_ms / 1000, tz=UTC)
    end = datetime.fromtimestamp(end_ms / 1000, tz=UTC)
    qs = (BacktestTrade.objects.filter(run_id=run_id)
          .filter(Q(entry_time__gte=start, entry_time__lt=end) | Q(exit_time__gte=start, exit_time__lt=end))
          .order_by("seq").values_list("seq", "ghost", "side", "entry_time", "entry_price", "exit_time", "exit_price",
                                       "reason", "net_pnl"))
    rows = list(qs[: limit + 1])
    more = len(rows) > limit
    out = [{"seq": seq, "ghost": ghost, "side": side, "entry_ms": int(et.timestamp() * 1000), "entry_price": float(ep),
            "exit_ms": int(xt.timestamp() * 1000), "exit_price": float(xp), "reason": reason, "net_pnl": float(net)}
           for seq, ghost, side, et, ep, xt, xp, reason, net in rows[:limit]]
    return out, more


def paper_record(*, start, end) -> dict:
    """The paper desk's closed trades over the UTC days [start, end) judged against the success criteria
    (`apps.engine.criteria.gates_judge`, the function a run's criteria come from).

    From the ledger (`apps.trading` Position rows, mode paper, by the day they CLOSED): daily net P&L for every
    day of the period (0 on days without a close; the period stops at the desk's today, data time), the
    equity at the period's start = start capital + net P&L of every paper trade closed before it, and the
    figures with `apps.engine.performance`: win rate from `trade_stats`, Sharpe from `sample_returns` of the
    realised equity curve (daily, x sqrt(365)), max drawdown of that curve. Open positions are not marked:
    the record is what was realised.
    """
    from datetime import UTC, date, time

    from django.conf import settings as dj

    from apps.engine.criteria import gates_judge
    from apps.engine.performance import max_drawdown, sample_returns, sharpe_ratio, trade_stats
    from apps.market.selectors import desk_now
    from apps.trading.models import Position

    def at(d: date) -> datetime:
        return datetime.combine(d, time.min, tzinfo=UTC)

    today = desk_now().astimezone(UTC).date()
    end = min(end, today + timedelta(days=1))
    closed = Position.objects.filter(status=Position.Status.CLOSED, mode="paper")
    before = closed.filter(closed_at__lt=at(start)).values_list("gross_pnl", "fees")
    capital = float(dj.HFT_START_CAPITAL) + sum(float(g) - float(f) for g, f in before)
    rows = list(closed.filter(closed_at__gte=at(start), closed_at__lt=at(end)).order_by("closed_at", "id")
                .values_list("closed_at", "gross_pnl", "fees"))
    pnls = [float(g) - float(f) for _, g, f in rows]
    days = [start + timedelta(days=k) for k in range(max(0, (end - start).days))]
    by_day = dict.fromkeys((d.isoformat() for d in days), 0.0)
    for (ts, _, _), p in zip(rows, pnls, strict=True):
        key = ts.astimezone(UTC).date().isoformat()
        by_day[key] = by_day.get(key, 0.0) + p
    n, wins, wr, _, _, _ = trade_stats(pnls)
    times = [at(start)] + [ts for ts, _, _ in rows]
    levels = [capital, *(capital + sum(pnls[: i + 1]) for i in range(len(pnls)))]
    curve = pd.Series(levels, index=pd.DatetimeIndex(times), dtype="float64")
    if days:  # the curve covers the whole period, so quiet days at either end count as 0 % days
        curve = pd.concat([curve, pd.Series([levels[-1]], index=pd.DatetimeIndex([at(end) - timedelta(seconds=1)]))])
    rets = sample_returns(curve, "1D") if n else pd.Series(dtype="float64")
    sharpe = sharpe_ratio(rets, 365) if n else None
    dd = max_drawdown(curve.to_numpy()) * 100 if n else None
    gates = gates_judge(criteria_gates(), daily=list(by_day.items()), capital=capital, trades=n,
                        win_rate=wr * 100 if n else None, sharpe=sharpe, max_drawdown_pct=dd)
    return {"start": start, "end": end, "days": len(days), "trades": n, "wins": wins, "net": sum(pnls),
            "start_equity": capital, "gates": gates}


def history_before(*, instrument_id: int, start: datetime, minutes: int) -> int:
    """Minutes of stored 1m history right before `start` within the last `minutes` (start - first stored bar of
    that window; 0 when none): what a run's ghosts warm up on (`services.warmup_span` loads them)."""
    first = Candle.objects.filter(instrument_id=instrument_id, timeframe="1m", open_time__gte=start - timedelta(
        minutes=minutes), open_time__lt=start).aggregate(first=Min("open_time"))["first"]
    return int((start - first).total_seconds() // 60) if first else 0
