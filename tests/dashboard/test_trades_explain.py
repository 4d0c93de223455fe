"""The trades page, its CSV and the recent-signals list read through indexes: SQLite's EXPLAIN QUERY PLAN of every
query they run says USING INDEX for trading_position / signals_signal, never a plain SCAN of the table and never
a TEMP B-TREE (a sort of everything the filter kept). At 1M trades that is the difference between ~1 ms and
seconds per page (benchmarks/pages.py prints the same plans on the big database).

SQLite only: on a table of a few rows PostgreSQL rightly prefers a sequential scan, so a plan there proves nothing.
"""

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.audit.models import AuditEvent
from apps.signals.selectors import recent_signals
from apps.trading.trade_selectors import TradeFilter, trade_cursor, trades_export_rows, trades_page
from tests.factories import make_ghost, make_instrument, make_position

pytestmark = pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's query planner")

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def plans(run) -> list[list[str]]:
    """EXPLAIN QUERY PLAN of every query `run()` sends, each as its list of plan lines."""
    with CaptureQueriesContext(connection) as ctx:
        run()
    out = []
    for q in ctx.captured_queries:
        with connection.cursor() as cur:
            cur.execute("EXPLAIN QUERY PLAN " + q["sql"])
            out.append([row[3] for row in cur.fetchall()])
    return out


def assert_indexed(plan: list[str], table: str, *, small_sort_index: str | None = None) -> None:
    lines = [line for line in plan if f" {table} " in f" {line} "]
    assert lines, plan
    for line in lines:
        assert "USING INDEX" in line or "USING COVERING INDEX" in line, plan
    if any("TEMP B-TREE" in line for line in plan):
        # Only allowed on the partial unique index that holds at most one open position per ghost.
        assert small_sort_index and any(small_sort_index in line for line in lines), plan


@pytest.fixture
def ledger(desk):
    other = make_ghost(name="fader-two", instrument=desk["instrument"])
    eth = make_ghost(name="fader-eth", instrument=make_instrument(symbol="ETH/USDT"))
    made = []
    for i in range(30):
        ghost = (desk["ghost"] if i % 2 else other) if i % 5 else eth
        made.append(make_position(ghost=ghost, opened_at=T0 + timedelta(minutes=i), side="long" if i % 3 else "short",
                                  entry="100", exit="101" if i % 4 else "99"))
    make_position(ghost=desk["ghost"], opened_at=T0 + timedelta(hours=1), entry="100")  # still open
    return {"ghost": desk["ghost"], "mid": made[15], "instrument": desk["instrument"]}


FILTERS = [
    ("none", {}),
    ("ghost", {"ghost": True}),
    ("instrument", {"instrument": True}),
    ("instrument+side+dates", {"instrument": True, "side": "long", "date_from": date(2026, 3, 2)}),
    ("side", {"side": "short"}),
    ("win", {"outcome": "win"}),
    ("loss", {"outcome": "loss"}),
    ("open", {"outcome": "open"}),
    ("dates", {"date_from": date(2026, 3, 2), "date_to": date(2026, 3, 3)}),
    ("ghost+side+win", {"ghost": True, "side": "long", "outcome": "win"}),
    ("side+dates", {"side": "long", "date_from": date(2026, 3, 2)}),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "kw"), FILTERS, ids=[f[0] for f in FILTERS])
@pytest.mark.parametrize("where", ["newest", "before", "after"])
def test_trades_page_reads_an_index_for_every_filter_and_cursor(ledger, name, kw, where):
    kw = dict(kw)
    if kw.pop("ghost", False):
        kw["ghost_id"] = ledger["ghost"].pk
    if kw.pop("instrument", False):
        kw["instrument_id"] = ledger["instrument"].pk
    cursor = {"newest": {}, "before": {"before": trade_cursor(ledger["mid"])},
              "after": {"after": trade_cursor(ledger["mid"])}}[where]
    got = plans(lambda: trades_page(filters=TradeFilter(**kw), limit=5, **cursor))
    assert 1 <= len(got) <= 2  # constant: the page, and for `after` near the top the newest page instead
    for plan in got:
        # outcome=open may go through the partial unique index of open positions (one per ghost): SQLite then
        # sorts those few rows, never the table.
        assert_indexed(plan, "trading_position",
                       small_sort_index="one_open_position_per_ghost" if kw.get("outcome") == "open" else None)


@pytest.mark.django_db
def test_csv_batches_walk_the_opened_at_index_in_order(ledger):
    got = plans(lambda: [len(b) for b in trades_export_rows(batch=7)])
    assert len(got) == 5  # 31 rows in batches of 7: 4 full + 1 short, no query after the short one
    for plan in got:
        assert_indexed(plan, "trading_position")
    assert any("(opened_at<?)" in line for line in got[1])  # the keyset seek, not a re-read from the top


@pytest.mark.django_db
def test_recent_signals_read_the_bar_time_index(ledger):
    for plan in plans(lambda: recent_signals(limit=10)):
        assert_indexed(plan, "signals_signal")
    for plan in plans(lambda: recent_signals(limit=10, ghost_id=ledger["ghost"].pk)):
        assert_indexed(plan, "signals_signal")
    for plan in plans(lambda: recent_signals(limit=10, instrument_id=ledger["instrument"].pk)):
        assert_indexed(plan, "signals_signal")
        assert not any("TEMP B-TREE" in line for line in plan), plan  # the instrument's index, in order


@pytest.mark.django_db
def test_csv_filtered_by_instrument_reads_its_index(ledger):
    got = plans(lambda: [len(b) for b in trades_export_rows(filters=TradeFilter(instrument_id=ledger["instrument"].pk),
                                                              batch=7)])
    assert got
    for plan in got:
        assert_indexed(plan, "trading_position")
    assert any("position_instr_opened_id" in line for plan in got for line in plan), got


@pytest.mark.django_db
def test_a_plain_scan_would_be_caught():
    """The check itself can fail: a query ordered by an unindexed column sorts the table."""
    AuditEvent.objects.create(action="x", object_type="y")
    with pytest.raises(AssertionError):
        for plan in plans(lambda: list(AuditEvent.objects.order_by("reason")[:5])):
            assert_indexed(plan, "audit_auditevent")


@pytest.mark.django_db
@pytest.mark.parametrize("where", ["newest", "before", "after"])
def test_audit_page_reads_the_created_at_index(where):
    from apps.audit.selectors import audit_page
    from apps.common.keyset import Cursor

    rows = [AuditEvent.objects.create(action="x", object_type="y", object_id=str(i)) for i in range(12)]
    mid = Cursor.of(rows[6], "created_at")
    kw = {"newest": {}, "before": {"before": mid}, "after": {"after": mid}}[where]
    got = plans(lambda: audit_page(limit=3, **kw))
    assert 1 <= len(got) <= 2
    for plan in got:
        assert_indexed(plan, "audit_auditevent")
