"""The desk's one clock (issue 14): data time for market events and the trading day, wall time for human actions,
both where they meet (apps.common.clock).

The feed statuses here say the newest trade was on 2026-03-02, months from the wall clock, as a replay's or a fast
simulator's would: the header shows that data time and the wall time on every page, "today" and the daily-loss limit
follow the data's day (a close on the data day counts, a close on the wall's day does not), a toggle's audit row
keeps both clocks, and a kill-switch flatten closes at the data time."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.common.clock import desk_clock, desk_now, feed_speed_label
from apps.trading.models import Position
from apps.trading.risk_selectors import risk_state
from apps.trading.selectors import pnl_snapshot
from tests.factories import make_feed, make_position

pytestmark = pytest.mark.django_db
DATA = datetime(2026, 3, 2, 21, 55, 30, tzinfo=UTC)  # the data's newest trade; the wall clock is far from it
DAY = DATA.replace(hour=0, minute=0, second=0)

PAGES = ["/", "/ghosts/", "/trades/", "/targets/", "/equity/", "/risk/", "/instruments/", "/history/", "/alerts/",
         "/audit/", "/lab/", "/lab/studies/"]


def _wall_is_far() -> None:
    assert abs(timezone.now() - DATA) > timedelta(days=2), "the test's data time must be days from the wall clock"


def _clock_html(html: str) -> str:
    start = html.index('id="desk-clock"')
    return html[start:html.index("</div>", start)]


@pytest.fixture
def data_clock(desk):
    _wall_is_far()
    return make_feed(instrument=desk["instrument"], source="sim", last_price="100", last_trade_at=DATA)


@pytest.mark.parametrize("url", PAGES)
def test_every_page_shows_the_data_clock_and_the_wall_clock(viewer_client, data_clock, url):
    r = viewer_client.get(url, follow=True)
    assert r.status_code == 200
    clock = _clock_html(r.content.decode())
    assert f'<time id="clock-data" class="num" datetime="{DATA.isoformat()}">03-02 21:55</time>' in clock
    assert f"SIM ×{settings.HFT_SIM_SPEED:g}" in clock
    wall = re.search(r'<time id="clock-wall" class="num" datetime="([^"]+)">(\d\d-\d\d \d\d:\d\d)</time>', clock)
    assert wall, clock
    shown = datetime.fromisoformat(wall.group(1))
    assert abs(shown - timezone.now()) < timedelta(minutes=5)  # the wall's time, not the data's
    assert wall.group(2) == shown.strftime("%m-%d %H:%M")
    assert "Wall time drives human actions" in clock  # the rule, in the clock's title


def test_the_clock_names_the_feed_that_sets_it(viewer_client, desk):
    make_feed(instrument=desk["instrument"], source="replay:/data/BTCUSDT-1m.csv@300", last_trade_at=DATA)
    assert "REPLAY ×300" in _clock_html(viewer_client.get("/").content.decode())
    assert feed_speed_label("replay:/x.csv") == f"REPLAY ×{settings.HFT_REPLAY_SPEED:g}"
    assert feed_speed_label("replay:/x.csv@max") == "REPLAY max"
    assert feed_speed_label("live") == "LIVE"


def test_before_any_trade_the_trading_day_is_the_walls(viewer_client, desk):
    make_feed(instrument=desk["instrument"], last_trade_at=None)
    clock = desk_clock()
    assert clock.data is None and abs(desk_now() - timezone.now()) < timedelta(minutes=1)
    html = _clock_html(viewer_client.get("/").content.decode())
    assert "no trades yet: trading day = wall day" in html and '<time id="clock-data" class="num">—</time>' in html


def test_the_newest_trade_of_any_feed_sets_the_clock(desk):
    from apps.market.models import Instrument

    eth = Instrument.objects.create(exchange=desk["exchange"], symbol="ETH/USDT", base="ETH", quote="USDT")
    make_feed(instrument=desk["instrument"], last_trade_at=DATA - timedelta(hours=2))
    make_feed(instrument=eth, source="replay:/e.csv@60", last_trade_at=DATA)
    clock = desk_clock()
    assert (clock.data, clock.instrument_id, clock.label) == (DATA, eth.pk, "REPLAY ×60")
    assert desk_now() == DATA


# --- the trading day: today's P&L and the daily-loss limit follow the data ---------------------------------------


def _on_wall_day(ghost, *, exit_: str) -> Position:
    """A close on the wall clock's today (never the data's day here)."""
    wall_day = timezone.now().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return make_position(ghost=ghost, opened_at=wall_day, entry="100", exit=exit_, closed_at=wall_day)


def test_todays_pnl_is_the_data_days_not_the_walls(viewer_client, desk, data_clock):
    g = desk["ghost"]
    on_data_day = make_position(ghost=g, opened_at=DAY + timedelta(hours=9), entry="100", exit="103",
                                closed_at=DAY + timedelta(hours=10))
    day_before = make_position(ghost=g, opened_at=DAY - timedelta(hours=3), entry="100", exit="101",
                               closed_at=DAY - timedelta(seconds=1))
    _on_wall_day(g, exit_="90")
    snap = pnl_snapshot()
    assert snap["day"] == "2026-03-02"
    assert Decimal(str(snap["today_pnl"])).quantize(Decimal("0.01")) == on_data_day.net_pnl.quantize(Decimal("0.01"))
    html = viewer_client.get("/").content.decode()
    assert re.search(rf'id="today-pnl"[^>]*>\+{on_data_day.net_pnl:.2f}<', html), "header Today = the data day's"
    # The next data day: the close of 2026-03-02 is yesterday's, whatever the wall says.
    make_feed(instrument=desk["instrument"], last_trade_at=DAY + timedelta(days=1, minutes=1))
    assert pnl_snapshot()["today_pnl"] == 0.0
    assert day_before.net_pnl > 0  # (it never counted: the day before the data day)


def test_the_daily_loss_limit_counts_the_data_days_losses(viewer_client, desk, data_clock):
    g = desk["ghost"]
    loss = make_position(ghost=g, opened_at=DAY + timedelta(hours=1), entry="100", exit="40", qty="2",
                         closed_at=DAY + timedelta(hours=2))
    _on_wall_day(g, exit_="10")  # a bigger loss on the wall's day: not today's on this desk
    state = risk_state()
    assert Decimal(str(state.day_start_equity - state.equity)).quantize(Decimal("0.01")) == -loss.net_pnl
    html = viewer_client.get("/risk/").content.decode()
    card = html[html.index('id="daily-loss"'):]
    assert f'id="risk-today-pnl" data-pnl-field="today_pnl" data-signed="1">−{-loss.net_pnl:,.2f}<' in card


def test_the_daily_loss_trip_follows_the_data_day(desk, data_clock):
    from apps.trading.risk_selectors import kill_switch
    from apps.trading.risk_services import risk_watch

    # 3 % of start-of-day equity is the default limit: a loss on the wall's day, however big, does not trip it.
    _on_wall_day(desk["ghost"], exit_="1")
    assert risk_watch() is None and not kill_switch().tripped
    make_position(ghost=desk["ghost"], opened_at=DAY + timedelta(hours=1), entry="100", exit="1", qty="10",
                  closed_at=DAY + timedelta(hours=2))
    assert risk_watch() is not None and kill_switch().tripped
    trip = AuditEvent.objects.get(action="killswitch.tripped")
    assert trip.data_time == DATA and trip.actor is None


# --- both clocks where they meet ----------------------------------------------------------------------------------


def test_a_toggle_is_audited_with_wall_and_data_time(op_client, desk, data_clock):
    ghost = desk["ghost"]
    before = timezone.now()
    r = op_client.post(f"/ghosts/{ghost.pk}/toggle/", {"enabled": "0", "reason": "spreads too wide"})
    assert r.status_code in (200, 302)
    row = AuditEvent.objects.get(action="ghost.disabled")
    assert row.data_time == DATA
    assert before <= row.created_at <= timezone.now()  # wall time
    html = op_client.get("/audit/").content.decode()
    assert "At (wall, UTC)" in html and "Data time (data, UTC)" in html
    tr = html[html.index(f'id="audit-{row.pk}"'):]
    tr = tr[:tr.index("</tr>")]
    assert row.created_at.strftime("%Y-%m-%d %H:%M:%S") in tr and "2026-03-02 21:55:30" in tr


def test_actions_that_did_not_change_what_traded_keep_wall_time_only(op_client, desk, data_clock):
    from apps.audit.services import audit_record

    row = audit_record(actor=None, action="history_download.start", obj=desk["instrument"])
    assert row.data_time is None
    tr = op_client.get("/audit/").content.decode()
    tr = tr[tr.index(f'id="audit-{row.pk}"'):]
    assert '<td class="num data-time"><span class="muted">—</span></td>' in tr[:tr.index("</tr>")]


def test_old_rows_without_data_time_still_read(op_client, desk):
    old = AuditEvent.objects.create(action="ghost.disabled", object_type="ghosts.ghost", object_id="1",
                                    reason="before the field")
    AuditEvent.objects.filter(pk=old.pk).update(data_time=None)
    assert op_client.get("/audit/").status_code == 200


def test_a_flatten_closes_at_the_data_time(op_client, desk, data_clock, django_capture_on_commit_callbacks):
    pos = make_position(ghost=desk["ghost"], opened_at=DATA - timedelta(minutes=30), entry="100")
    with django_capture_on_commit_callbacks(execute=True):
        r = op_client.post("/risk/kill-switch/trip/", {"reason": "flatten on the data day", "flatten": "1"})
    assert r.status_code == 302
    pos.refresh_from_db()
    assert pos.status == Position.Status.CLOSED and pos.closed_at == DATA
    trip = AuditEvent.objects.get(action="killswitch.tripped")
    assert trip.data_time == DATA and trip.created_at > DATA + timedelta(days=2)
    # Its P&L is the data day's: in today's P&L now, as the wall day would not be.
    assert pnl_snapshot()["realised_today"] == pytest.approx(float(pos.net_pnl), abs=0.005)


# --- the equity page places auto-disables in their target period by data time -------------------------------------


def test_auto_disable_is_placed_in_its_target_period_by_data_time(viewer_client, desk, data_clock):
    from apps.ghosts.services import ghost_set_enabled
    from apps.revenue.services import revenue_target_set

    ghost = desk["ghost"]
    revenue_target_set(ghost_id=ghost.pk, amount="5", period="day", actor=None)
    ghost_set_enabled(ghost_id=ghost.pk, enabled=False, actor=None,
                      reason="auto-disabled: P&L -12.00 below -10.00 over day")
    fired = AuditEvent.objects.get(action="ghost.disabled")
    assert fired.data_time == DATA
    old = AuditEvent.objects.create(action="ghost.disabled", object_type="ghosts.ghost", object_id=str(ghost.pk),
                                    reason="auto-disabled: an older row, wall time only")
    make_feed(instrument=desk["instrument"], last_trade_at=DATA + timedelta(days=1))  # the data moved on a day
    html = viewer_client.get("/equity/?window=7d").content.decode()
    table = html[html.index('id="target-table"'):html.index("</table>", html.index('id="target-table"'))]
    rows = {r.split("</td>")[1].split("day ")[-1]: r for r in table.split("<tr")[2:]}
    assert "auto-disabled <time" in rows["2026-03-02"] and "03-02 21:55" in rows["2026-03-02"]
    assert "auto-disabled <time" not in rows["2026-03-03"]
    listed = html[html.index('id="auto-disables"'):]
    assert "2026-03-02 21:55</time> <span class=\"muted small\">(data)</span>" in listed
    assert f"{old.created_at:%Y-%m-%d %H:%M}</time> <span class=\"muted small\">(wall only" in listed


def test_a_manual_close_and_an_auto_disable_keep_the_data_time_of_their_cause(desk, operator, data_clock):
    """The desk's clock (the feeds' last trade, written about once a wall second) can trail the price a close takes
    by minutes of data time under the simulator: the audit row keeps the close's own time, and an auto-disable the
    time of the close that breached the rule, not the clock read when the row was written."""
    from apps.ghosts.services import ghost_set_enabled
    from apps.market.prices import price_set
    from apps.trading.execution import position_close_manual

    later = DATA + timedelta(seconds=90)
    price_set(desk["instrument"].pk, 101.0, int(later.timestamp() * 1000))
    pos = make_position(ghost=desk["ghost"], opened_at=DATA - timedelta(minutes=30), entry="100")
    position_close_manual(position_id=pos.pk, reason="take it off", user=operator)
    assert AuditEvent.objects.get(action="position.closed_manually").data_time == later
    assert desk_now() == DATA  # the clock itself had not moved
    ghost_set_enabled(ghost_id=desk["ghost"].pk, enabled=False, actor=None, reason="auto-disabled: rule",
                      data_time=later)
    assert AuditEvent.objects.get(action="ghost.disabled").data_time == later


def test_a_paper_close_and_the_auto_disable_it_causes_keep_the_closes_data_time(desk, data_clock,
                                                                              django_capture_on_commit_callbacks):
    """The close path itself: its audit rows and the auto-disable it triggers carry the close's data time, not
    the desk clock's (which still says DATA here)."""
    from apps.trading.services import position_close

    ghost = desk["ghost"]
    ghost.auto_disable = {**(ghost.auto_disable or {}), "min_trades": 1, "win_rate_floor": 0.5}  # one loss is enough
    ghost.save(update_fields=["auto_disable"])
    later = DATA + timedelta(seconds=150)
    pos = make_position(ghost=ghost, opened_at=DATA - timedelta(minutes=30), entry="100")
    with django_capture_on_commit_callbacks(execute=True):
        position_close(position_id=pos.pk, price=90.0, at=later, reason="stop")
    assert AuditEvent.objects.get(action="position.closed").data_time == later
    disabled = AuditEvent.objects.get(action="ghost.disabled")
    assert disabled.reason.startswith("auto-disabled") and disabled.data_time == later
