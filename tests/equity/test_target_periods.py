"""The equity page's target table lists a ghost's periods only from when it could have earned against its target,
by one rule for every window (QA: the 90-day window listed 450 rows, mostly 0.00 before the desk had data, while
"all history" listed 8); and with one ghost chosen in the Curve select both tables are that ghost's (QA: the
curve said -7.03 while the profit table summed every ghost). The last point of the curve is formatted."""

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.revenue.equity import profit_table, target_history, window_start
from apps.revenue.models import RevenueTarget
from tests.factories import make_feed, make_position

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday: the desk's first data
TODAY = date(2026, 3, 12)


def _ghost(desk, name):
    from apps.ghosts.services import ghost_create

    return ghost_create(name=name, kind=desk["ghost"].kind, instrument=desk["instrument"],
                        params=dict(desk["ghost"].params), actor=None)


@pytest.fixture
def book(desk):
    g = desk["ghost"]
    make_feed(instrument=desk["instrument"], last_trade_at=datetime(2026, 3, 12, 9, 0, tzinfo=UTC))
    make_position(ghost=g, opened_at=T0, entry="100", exit="103")  # closes 03-02
    make_position(ghost=g, opened_at=T0 + timedelta(days=5), entry="100", exit="98")  # closes 03-07
    return desk


def _periods(rows, ghost):
    return [r.start for r in rows if r.ghost == ghost]


def test_periods_start_at_the_ghosts_first_close_whatever_the_window(book):
    g = book["ghost"]
    RevenueTarget.objects.create(ghost=g, amount=Decimal("1"), period="day")  # no audit row: from the first close
    by_window = {w: _periods(target_history(since=window_start(TODAY, w), today=TODAY), g.name)
                 for w in ("7d", "30d", "90d", "365d", "all")}
    life = [TODAY - timedelta(days=k) for k in range(11)]  # 03-12 back to the first close on 03-02
    assert by_window["all"] == by_window["365d"] == by_window["90d"] == by_window["30d"] == life
    assert by_window["7d"] == life[:7]  # a subset of the same rule, never more rows than a longer window
    rows = {r.start: r for r in target_history(since=None, today=TODAY)}
    assert rows[date(2026, 3, 2)].net > 0 and rows[date(2026, 3, 7)].net < 0 and rows[date(2026, 3, 5)].net == 0


def test_periods_start_when_the_target_was_set_in_data_time(book):
    from apps.revenue.services import revenue_target_set

    quiet = _ghost(book, "quiet one")  # never closed a trade
    make_feed(instrument=book["instrument"], last_trade_at=datetime(2026, 3, 9, 12, 0, tzinfo=UTC))
    revenue_target_set(ghost_id=quiet.pk, amount="5", period="day", actor=None)  # audited at data day 03-09
    revenue_target_set(ghost_id=book["ghost"].pk, amount="5", period="week", actor=None)  # data week of 03-09
    make_feed(instrument=book["instrument"], last_trade_at=datetime(2026, 3, 12, 9, 0, tzinfo=UTC))
    rows = target_history(since=window_start(TODAY, "90d"), today=TODAY)
    assert _periods(rows, quiet.name) == [date(2026, 3, 12), date(2026, 3, 11), date(2026, 3, 10), date(2026, 3, 9)]
    assert all(r.net == 0 for r in rows if r.ghost == quiet.name)
    assert _periods(rows, book["ghost"].name) == [date(2026, 3, 9)]  # its earlier closes are before the target


def test_a_target_without_history_lists_the_current_period_only(desk):
    make_feed(instrument=desk["instrument"], last_trade_at=datetime(2026, 3, 12, 9, 0, tzinfo=UTC))
    RevenueTarget.objects.create(ghost=desk["ghost"], amount=Decimal("1"), period="month")
    for w in ("7d", "90d", "all"):
        assert [(r.start, r.net) for r in target_history(since=window_start(TODAY, w), today=TODAY)] == [
            (date(2026, 3, 1), Decimal(0))]


def test_the_period_holding_the_windows_first_day_counts_all_its_days(book):
    g = book["ghost"]
    RevenueTarget.objects.create(ghost=g, amount=Decimal("1"), period="month")
    whole = target_history(since=None, today=TODAY)
    late = target_history(since=date(2026, 3, 10), today=TODAY)  # opens after both closes, inside the month
    assert [(r.start, r.net) for r in late] == [(r.start, r.net) for r in whole] and whole[0].net != 0


def test_the_tables_follow_the_chosen_ghost(book, op_client):
    other = _ghost(book, "other one")
    make_position(ghost=other, opened_at=T0 + timedelta(days=1), entry="100", exit="90")
    make_position(ghost=other, opened_at=T0 + timedelta(days=2), entry="100", exit="91")
    RevenueTarget.objects.create(ghost=book["ghost"], amount=Decimal("1"), period="week")
    RevenueTarget.objects.create(ghost=other, amount=Decimal("1"), period="week")
    mine = profit_table(by="month", group="portfolio", since=None, ghost_id=other.pk)
    assert [(r.trades, r.label) for r in mine] == [(2, "portfolio")]
    assert profit_table(by="month", group="portfolio", since=None)[0].trades == 4
    html = op_client.get(f"/equity/?window=all&by=month&ghost={other.pk}").content.decode()
    profit = html[html.index('id="profit-table"'):html.index("</table>", html.index('id="profit-table"'))]
    cells = re.findall(r'<td class="r num">(\d+)</td>', profit)
    assert cells == ["2"], cells  # that ghost's two trades, not the desk's four
    from django.conf import settings

    from apps.trading.models import Position

    curve_last = Decimal(re.search(r'id="curve-last">([^<]+)<', html).group(1).replace(",", ""))
    nets = sum(p.gross_pnl - p.fees for p in Position.objects.filter(ghost=other))
    assert curve_last == (settings.HFT_START_CAPITAL + nets).quantize(Decimal("0.01"))
    targets = html[html.index('id="target-table"'):html.index("</table>", html.index('id="target-table"'))]
    assert "other one" in targets and book["ghost"].name not in targets


def test_curve_last_point_is_formatted_as_money(book, op_client, settings):
    settings.HFT_START_CAPITAL = Decimal("9970")
    html = op_client.get("/equity/?window=all").content.decode()
    last = re.search(r'id="curve-last">([^<]+)<', html).group(1)
    assert re.fullmatch(r"\d{1,3}(,\d{3})*\.\d{2}", last), last  # "9,971.16", not "9971.1649339400000"


def test_query_count_stays_fixed_with_audited_targets_and_one_ghost(book, op_client):
    from apps.revenue.services import revenue_target_set

    revenue_target_set(ghost_id=book["ghost"].pk, amount="5", period="day", actor=None)
    url = f"/equity/?ghost={book['ghost'].pk}&by=week&group=ghost"
    with CaptureQueriesContext(connection) as few:
        assert op_client.get(url).status_code == 200
    for i in range(3):
        g = _ghost(book, f"more {i}")
        revenue_target_set(ghost_id=g.pk, amount="5", period="week", actor=None)
        make_position(ghost=g, opened_at=T0 + timedelta(days=i), entry="100", exit="101")
    with CaptureQueriesContext(connection) as many:
        assert op_client.get(url).status_code == 200
        assert op_client.get(url.replace(f"ghost={book['ghost'].pk}", "ghost=")).status_code == 200
    assert len(many.captured_queries) == 2 * len(few.captured_queries)
