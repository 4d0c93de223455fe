"""Backtest against the desk (issue 9): the trade-by-trade comparison and its explanations.

The explanations are checked on hand-built records (one case per cause); the whole path on a real day: the
2020-01-02 klines replayed through the running desk (feed task, ghosts, manager, paper executor), then the
one-click comparison run through the lab's own services, which must find every closed desk trade the same."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from apps.lab.desk_compare import (
    BACKTEST_ONLY,
    DESK_ONLY,
    DIFFERS,
    SAME,
    Context,
    DeskSignal,
    GhostEvent,
    TradeRow,
    compare_trades,
    desk_comparison,
    lab_desk_compare_create,
)
from tests.datafiles import require

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
WALL = datetime(2026, 1, 5, 12, 1, 5, tzinfo=UTC)


def row(minute: int = 0, *, ghost: str = "g", entry: str = "100", exit_: str | None = "101", reason: str = "target",
        qty: str = "1", pnl: str | None = "0.8") -> TradeRow:
    st = T0 + timedelta(minutes=minute)
    return TradeRow(ghost=ghost, side=1, signal_time=st, entry_time=st + timedelta(minutes=1),
                    entry_price=Decimal(entry), exit_time=None if exit_ is None else st + timedelta(minutes=5),
                    exit_price=None if exit_ is None else Decimal(exit_), qty=Decimal(qty),
                    net_pnl=None if pnl is None else Decimal(pnl), reason=reason if exit_ else "open")


def ctx(**kw) -> Context:
    base = {"desk_signals": {}, "lab_signals": {}, "missing_bars": [], "events": [], "desk_eval_times": []}
    return Context(**{**base, **kw})


def test_equal_trades_are_the_same_and_a_fill_difference_is_the_fill_model() -> None:
    same, moved = compare_trades([row(0), row(10, entry="100.5")], [row(0), row(10)], ctx())
    assert (same.kind, same.causes) == (SAME, ())
    assert moved.kind == DIFFERS and moved.fields == ("entry_price",) and moved.causes == ("fill_model",)
    assert "next bar's open" in moved.explanation


def test_a_stale_decision_on_the_desk_explains_a_backtest_only_trade() -> None:
    sig = {("g", T0): DeskSignal(fate="stale", detail="decided 190 s after its bar", created_at=WALL)}
    (d,) = compare_trades([], [row(0)], ctx(desk_signals=sig))
    assert (d.kind, d.causes) == (BACKTEST_ONLY, ("stale",))
    assert "stale" in d.explanation and "190 s" in d.explanation


def test_a_parameter_change_after_the_desk_decided_explains_a_desk_only_trade() -> None:
    sig = {("g", T0): DeskSignal(fate="taken", detail="", created_at=WALL)}
    ev = [GhostEvent(ghost="g", action="ghost.params_changed", at=WALL + timedelta(hours=1), reason="wider stop")]
    (d,) = compare_trades([row(0)], [], ctx(desk_signals=sig, events=ev))
    assert d.kind == DESK_ONLY and "param_change" in d.causes and "wider stop" in d.explanation
    # a change BEFORE the desk decided was in force on both sides: no such cause
    early = [GhostEvent(ghost="g", action="ghost.params_changed", at=WALL - timedelta(hours=1), reason="")]
    (d,) = compare_trades([row(0)], [], ctx(desk_signals=sig, events=early))
    assert d.causes == ("unexplained",)


def test_a_feed_gap_and_a_disabled_ghost_are_named() -> None:
    gap = [T0 - timedelta(minutes=3), T0 - timedelta(minutes=2)]
    (d,) = compare_trades([], [row(0)], ctx(missing_bars=gap))
    assert d.causes == ("feed_gap",) and "2 1m bar(s) missing" in d.explanation
    off = [GhostEvent(ghost="g", action="ghost.disabled", at=WALL - timedelta(minutes=30), reason="too many losses")]
    evals = [(T0 - timedelta(minutes=1), WALL - timedelta(seconds=60))]  # another ghost's signal a bar earlier
    (d,) = compare_trades([], [row(0)], ctx(events=off, desk_eval_times=evals))
    assert d.causes == ("toggled",) and "too many losses" in d.explanation


def test_an_open_desk_position_is_said_so() -> None:
    (d,) = compare_trades([row(0, exit_=None, pnl=None)], [row(0, reason="end_of_data")], ctx())
    assert d.kind == DIFFERS and "open_on_desk" in d.causes


DAY = "klines/binance_vision_spot_BTCUSDT_1m/BTCUSDT-1m-2020-01-02.zip"
PARAMS = {"spike_threshold_pct": 0.5, "take_profit_pct": 0.4, "min_target_pct": 0.15, "min_stop_pct": 0.3,
          "min_volume_ratio": 1.2, "cooldown_seconds": 900, "max_hold_seconds": 1800}


@pytest.mark.django_db(transaction=True)
def test_a_replayed_desk_day_compares_equal_trade_by_trade(desk, operator, op_client, viewer_client) -> None:
    from apps.lab.services import lab_run_execute
    from apps.market.models import FeedStatus
    from apps.runtime.tasks import run_feed
    from apps.trading.models import Position

    path = require(DAY)
    ghost = desk["ghost"]
    ghost.params = PARAMS
    ghost.save(update_fields=["params"])
    FeedStatus.objects.filter(instrument=desk["instrument"]).update(source=f"replay:{path}@max")
    assert run_feed(desk["instrument"].pk) == "stopped"
    closed = Position.objects.filter(status=Position.Status.CLOSED).count()
    assert closed >= 2, "the day must trade for the comparison to mean anything"

    start, end = datetime(2020, 1, 2, tzinfo=UTC), datetime(2020, 1, 3, tzinfo=UTC)
    run = lab_desk_compare_create(actor=operator, instrument_id=desk["instrument"].pk, start=start, end=end,
                                  queue=False)
    assert lab_run_execute(run_id=run.pk).status == "done"
    cmp = desk_comparison(run)
    print({k: v for k, v in cmp.counts.items()}, [(d.kind, d.explanation) for d in cmp.differences if d.kind != SAME])
    assert cmp.counts[SAME] == closed
    assert cmp.counts[DESK_ONLY] == cmp.counts[BACKTEST_ONLY] == 0
    # only a position still open on the desk at the end may differ, and it says so
    assert all("open_on_desk" in d.causes for d in cmp.differences if d.kind == DIFFERS)

    page = viewer_client.get(f"/lab/desk/{run.pk}/")
    assert page.status_code == 200 and f'data-count="same">{closed}<' in page.content.decode()
    assert viewer_client.post("/lab/desk/", {"instrument": desk["instrument"].pk, "start": "2020-01-02 00:00",
                                             "end": "2020-01-03 00:00"}).status_code == 403
    bad = op_client.post("/lab/desk/", {"instrument": desk["instrument"].pk, "start": "2020-01-03 00:00",
                                        "end": "2020-01-02 00:00"})
    assert bad.status_code == 400 and "end must be after its start" in bad.content.decode()
