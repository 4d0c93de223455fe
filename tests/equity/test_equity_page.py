"""The equity page (issue 14): the realised curve from the day rows agrees with the header's equity to the
cent when no position is open, the profit table sums the right trades per day/week/month and per ghost or
instrument, targets per period and the auto-disables show, and the page's query count does not grow."""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.revenue.equity import equity_curve, profit_table, target_history
from apps.revenue.models import RevenueTarget
from apps.trading.models import Position
from apps.trading.selectors import pnl_snapshot
from tests.factories import make_feed, make_position

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday


def _second_ghost(desk, name="breakout two"):
    from apps.ghosts.services import ghost_create

    return ghost_create(name=name, kind=desk["ghost"].kind, instrument=desk["instrument"],
                        params=dict(desk["ghost"].params), actor=None)


@pytest.fixture
def book(desk):
    g = desk["ghost"]
    make_feed(instrument=desk["instrument"], last_trade_at=T0 + timedelta(days=10))
    # Day 0: two wins; day 1: one loss; day 9: one win (in the second ISO week).
    make_position(ghost=g, opened_at=T0, entry="100", exit="103.37")
    make_position(ghost=g, opened_at=T0 + timedelta(hours=1), entry="100", exit="101.11")
    make_position(ghost=g, opened_at=T0 + timedelta(days=1), entry="100", exit="97.03", side="long")
    make_position(ghost=g, opened_at=T0 + timedelta(days=9), entry="200", exit="201.19", qty="0.37")
    return desk


def _nets():
    return [p.gross_pnl - p.fees for p in Position.objects.filter(status="closed").order_by("closed_at", "id")]


def test_last_point_equals_the_header_equity_to_the_cent(book):
    assert not Position.objects.filter(status="open").exists()
    curve = equity_curve(since=None)
    header = pnl_snapshot()["equity"]
    assert round(float(curve.last), 2) == round(header, 2)
    from django.conf import settings
    assert curve.last == settings.HFT_START_CAPITAL + sum(_nets())
    # A window that starts after the first closes carries them in: same last point.
    assert equity_curve(since=date(2026, 3, 5)).last == curve.last
    assert len(equity_curve(since=date(2026, 3, 5)).equity) == 2  # the carried-in start + day 9


def test_curve_has_one_point_per_closing_day_and_per_ghost(book):
    other = _second_ghost(book)
    make_position(ghost=other, opened_at=T0, entry="100", exit="90")
    from django.conf import settings
    mine = equity_curve(since=None, ghost_id=book["ghost"].pk)
    assert len(mine.equity) == 1 + 3  # start + days 0, 1, 9
    assert mine.last == settings.HFT_START_CAPITAL + sum(
        p.gross_pnl - p.fees for p in Position.objects.filter(ghost=book["ghost"]))
    whole = equity_curve(since=None)
    theirs = equity_curve(since=None, ghost_id=other.pk)
    cap = settings.HFT_START_CAPITAL
    assert whole.last - cap == (mine.last - cap) + (theirs.last - cap)
    assert round(float(whole.last), 2) == round(pnl_snapshot()["equity"], 2)


def test_drawdown_counts_the_peak_before_the_window(book):
    from apps.revenue.equity import curve_chart

    nets = _nets()  # day 0: two wins, day 1: a loss, day 9: a win
    inside = equity_curve(since=date(2026, 3, 4))  # opens after the loss: below the day-0 peak
    assert inside.peak_before - inside.equity[0] == -nets[2]
    chart = curve_chart(inside)
    assert chart["of"] == len(inside.equity) == 2 and len(chart["t"]) == 2
    expected = (float(inside.equity[0]) / float(inside.peak_before) - 1) * 100
    assert chart["drawdown"][0] == pytest.approx(expected) and expected < 0
    assert chart["equity"][-1] == float(inside.last)
    whole = curve_chart(equity_curve(since=None))
    assert whole["drawdown"][0] == 0.0 and min(whole["drawdown"]) == pytest.approx(expected)


def test_profit_table_by_day_week_month(book):
    nets = _nets()
    days = profit_table(by="day", group="portfolio", since=None)
    assert [r.bucket for r in days] == [date(2026, 3, 11), date(2026, 3, 3), date(2026, 3, 2)]
    assert [r.trades for r in days] == [1, 1, 2]
    assert days[2].net == nets[0] + nets[1] and days[2].win_rate == 100.0
    assert days[1].win_rate == 0.0
    weeks = profit_table(by="week", group="portfolio", since=None)
    assert [(r.bucket, r.trades) for r in weeks] == [(date(2026, 3, 9), 1), (date(2026, 3, 2), 3)]
    assert weeks[1].net == nets[0] + nets[1] + nets[2]
    months = profit_table(by="month", group="portfolio", since=None)
    assert len(months) == 1 and months[0].net == sum(nets) and months[0].bucket == date(2026, 3, 1)
    fees = sum(p.fees for p in Position.objects.all())
    assert months[0].fees == fees


def test_profit_table_per_ghost_and_instrument(book):
    other = _second_ghost(book)
    make_position(ghost=other, opened_at=T0, entry="100", exit="90")
    rows = profit_table(by="day", group="ghost", since=None)
    first_day = {r.label: r for r in rows if r.bucket == date(2026, 3, 2)}
    assert first_day[other.name].trades == 1 and first_day[book["ghost"].name].trades == 2
    inst = profit_table(by="month", group="instrument", since=None)
    assert [(r.label, r.trades) for r in inst] == [(book["instrument"].symbol, 5)]


def test_target_history_and_auto_disable(book, op_client):
    from apps.ghosts.services import ghost_set_enabled

    g = book["ghost"]
    RevenueTarget.objects.create(ghost=g, amount=Decimal("0.5"), period="week")
    rows = target_history(since=date(2026, 3, 2), today=date(2026, 3, 12))
    assert [(r.start, r.met) for r in rows] == [(date(2026, 3, 9), False), (date(2026, 3, 2), True)]
    nets = _nets()
    assert rows[1].net == nets[0] + nets[1] + nets[2]
    ghost_set_enabled(ghost_id=g.pk, enabled=False, actor=None, reason="auto-disabled: win rate 10% < 40%")
    page = op_client.get("/equity/?window=30d&by=week&group=ghost").content.decode()
    assert "auto-disabled: win rate 10% &lt; 40%" in page
    assert 'id="target-table"' in page and "week 2026-03-02" in page


def test_page_renders_and_queries_stay_constant(book, op_client, viewer_client):
    assert viewer_client.get("/equity/").status_code == 200
    RevenueTarget.objects.create(ghost=book["ghost"], amount=Decimal("5"), period="week")
    with CaptureQueriesContext(connection) as few:
        r = op_client.get("/equity/?group=ghost&by=month")
    assert r.status_code == 200 and 'id="equity-data"' in r.content.decode()
    for i in range(3):
        other = _second_ghost(book, name=f"more {i}")
        RevenueTarget.objects.create(ghost=other, amount=Decimal("5"), period="day")
        for d in range(4):
            make_position(ghost=other, opened_at=T0 + timedelta(days=d), entry="100", exit="101")
    with CaptureQueriesContext(connection) as many:
        assert op_client.get("/equity/?group=ghost&by=month").status_code == 200
    assert len(many.captured_queries) == len(few.captured_queries)
    # Nothing reads the positions: the curve and the tables come from the day rows.
    assert not any('FROM "trading_position"' in q["sql"] and "SUM(" in q["sql"] for q in many.captured_queries)


def test_open_positions_are_a_marker_not_a_curve_point(book, op_client):
    import json
    import re

    make_position(ghost=book["ghost"], opened_at=T0 + timedelta(days=9, hours=1), entry="200")
    html = op_client.get("/equity/?window=all").content.decode()
    data = json.loads(re.search(r'id="equity-data" type="application/json">(.*?)</script>', html).group(1))
    header = pnl_snapshot()
    assert data["now"]["equity"] == header["equity"]
    from django.conf import settings
    assert data["equity"][-1] == float(settings.HFT_START_CAPITAL + sum(_nets()))  # realised only
    assert "1 open position" in html
    assert "now" not in json.loads(re.search(r'id="equity-data" type="application/json">(.*?)</script>',
                                             op_client.get(f"/equity/?ghost={book['ghost'].pk}").content.decode())
                                   .group(1))


def test_unknown_query_values_fall_back(book, op_client):
    r = op_client.get("/equity/?window=x&by=%00&group=zz&ghost=99999")
    assert r.status_code == 200 and b"Equity" in r.content
