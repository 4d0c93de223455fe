"""The pages part B keeps fast at a million trades read no whole history (issue 13): no query of the overview,
the ghosts page, state.json or the risk page sums or loads the closed positions (realised P&L comes from the
day rows), and the overview chart's position reads use their indexes (SQLite's EXPLAIN QUERY PLAN)."""

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.trading.selectors import positions_for_chart
from tests.factories import make_candles, make_feed, make_position

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


@pytest.fixture
def history(desk):
    g = desk["ghost"]
    make_feed(instrument=desk["instrument"], last_trade_at=T0 + timedelta(hours=5))
    for i in range(30):  # closed trades over the past days, one across the chart's left edge, one open
        make_position(ghost=g, opened_at=T0 - timedelta(days=3) + timedelta(hours=2 * i), entry="100", exit="101")
    across = make_position(ghost=g, opened_at=T0 + timedelta(hours=2), entry="100", exit="99",
                           closed_at=T0 + timedelta(hours=4, minutes=30))
    inside = make_position(ghost=g, opened_at=T0 + timedelta(hours=4, minutes=40), entry="100", exit="102",
                           closed_at=T0 + timedelta(hours=4, minutes=50))
    make_candles(instrument=desk["instrument"], start=T0 + timedelta(hours=4), n=60, first=100.0)
    return {"across": across, "inside": inside}


def _whole_history(sql: str) -> bool:
    """A read of trading_position that aggregates, or that is not bounded to open positions, a time range or
    one row: what made the header and the ghosts page seconds long."""
    if '"trading_position"' not in sql:
        return False
    if re.search(r"\b(SUM|AVG)\(", sql):
        return True
    bounded = ('"status" = \'open\'' in sql or '"status" = %s' in sql or "_at\" >" in sql or "_at\" <" in sql
               or '"id" = ' in sql or '"signal_id" = ' in sql or " IN (" in sql)
    return not bounded


@pytest.mark.parametrize("url", ["/", "/ghosts/", "/state.json", "/risk/"])
def test_pages_never_read_the_whole_ledger(op_client, history, url):
    with CaptureQueriesContext(connection) as ctx:
        assert op_client.get(url).status_code == 200
    offenders = [q["sql"] for q in ctx.captured_queries if _whole_history(q["sql"])]
    assert offenders == [], offenders
    assert any("revenue_pnlday" in q["sql"] for q in ctx.captured_queries)  # the header's P&L: from the rows


def test_the_guard_catches_a_sum_over_positions(op_client, history):
    from django.db.models import Sum

    from apps.trading.models import Position

    with CaptureQueriesContext(connection) as ctx:
        Position.objects.filter(status="closed").aggregate(s=Sum("gross_pnl"))
        list(Position.objects.filter(status="closed").values_list("gross_pnl", "fees"))
    assert all(_whole_history(q["sql"]) for q in ctx.captured_queries)


def test_chart_marks_include_a_trade_across_the_left_edge(history, desk):
    since = T0 + timedelta(hours=4)
    marks = positions_for_chart(instrument_id=desk["instrument"].pk, since=since)
    assert [m.pk for m in marks] == [history["across"].pk, history["inside"].pk]
    across = marks[0]
    assert across.opened_at < since <= across.closed_at and across.exit_price == 99.0
    assert across.net_pnl == pytest.approx(float(history["across"].net_pnl))


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's EXPLAIN QUERY PLAN wording")
def test_chart_reads_use_the_position_indexes(history, desk):
    with CaptureQueriesContext(connection) as ctx:
        positions_for_chart(instrument_id=desk["instrument"].pk, since=T0 + timedelta(hours=4))
    assert len(ctx.captured_queries) == 2
    for q in ctx.captured_queries:
        with connection.cursor() as cur:
            cur.execute("EXPLAIN QUERY PLAN " + q["sql"])
            plan = " | ".join(str(row[-1]) for row in cur.fetchall())
        assert "USING INDEX position_closed_at" in plan or "USING INDEX position_opened_id" in plan, plan
        assert "SCAN trading_position" not in plan, plan
