"""Dashboard pages over Django's test client: access rules, role enforcement, bad input, and query counts that
catch N+1 on the list pages (the trades table and its CSV: test_trades_views.py)."""

import gzip
import importlib.resources
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.ghosts.models import Ghost
from apps.revenue.models import RevenueTarget
from tests.conftest import PASSWORD_SUFFIX
from tests.factories import make_candles, make_feed, make_ghost, make_position, make_signal

PAGES = ["overview", "ghosts", "trades", "targets", "audit"]
T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def toggle_url(ghost_id: int) -> str:
    return reverse("dashboard:ghost-toggle", args=[ghost_id])


JSON = {"HTTP_ACCEPT": "application/json"}


# --- access ------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        *(reverse(f"dashboard:{p}") for p in PAGES),
        "/trades.csv",
        "/state.json",
        "/vendor/plotly.min.js",
        "/ghosts/1/toggle/",
    ],
)
def test_anonymous_is_sent_to_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login") + "?next=")


@pytest.mark.django_db
def test_anonymous_post_to_toggle_is_sent_to_login(client, desk):
    response = client.post(toggle_url(desk["ghost"].pk), {"enabled": "0", "reason": "x"})
    assert response.status_code == 302
    assert Ghost.objects.get(pk=desk["ghost"].pk).enabled


@pytest.mark.django_db
def test_login_page_healthz_and_static_need_no_login(client):
    login = client.get(reverse("login"))
    assert login.status_code == 200
    assert b'name="username"' in login.content and b"Equity" not in login.content  # no numbers for strangers
    assert client.get("/healthz").status_code == 200
    css = client.get("/static/css/desk.css")
    assert css.status_code == 200 and b"#0a0e27" in b"".join(css.streaming_content)
    assert client.get("/static/js/desk.js").status_code == 200
    assert client.get("/static/../hftweb/settings.py").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("role", ["operator", "viewer"])
@pytest.mark.parametrize("page", PAGES)
def test_pages_render_for_both_roles(make_user, desk, role, page):
    c = Client()
    c.force_login(make_user("someone", role))
    response = c.get(reverse(f"dashboard:{page}"))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="ws-state"' in html and 'id="equity"' in html and 'id="today-pnl"' in html
    assert f'<span class="badge role {role}"' in html
    assert "PAPER" in html and "NaN" not in html


@pytest.mark.django_db
def test_header_says_live_when_live_trading(op_client, desk):
    with override_settings(HFT_LIVE_TRADING=True):
        html = op_client.get("/").content.decode()
    assert 'id="mode-badge"' in html and ">LIVE<" in html


@pytest.mark.django_db
def test_viewer_sees_no_controls_operator_does(op_client, viewer_client, desk):
    for path in ("/ghosts/", "/targets/"):
        html = viewer_client.get(path).content.decode()
        assert "toggle-btn" not in html and 'name="reason"' not in html
        assert 'name="amount"' not in html and "<select" not in html
    op_ghosts = op_client.get("/ghosts/").content.decode()
    assert f'data-ghost-id="{desk["ghost"].pk}"' in op_ghosts and 'name="reason"' in op_ghosts
    assert 'name="amount"' in op_client.get("/targets/").content.decode()


# --- ghost toggle ------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [JSON, {}])
def test_viewer_cannot_toggle(viewer_client, desk, headers):
    gid = desk["ghost"].pk
    response = viewer_client.post(toggle_url(gid), {"enabled": "0", "reason": "I am a viewer"}, **headers)
    assert response.status_code == 403
    if headers:
        assert "operator" in response.json()["error"]
    assert Ghost.objects.get(pk=gid).enabled
    assert not AuditEvent.objects.filter(action__startswith="ghost.", reason="I am a viewer").exists()


@pytest.mark.django_db
def test_operator_toggle_disables_and_audits(op_client, operator, desk):
    gid = desk["ghost"].pk
    response = op_client.post(toggle_url(gid), {"enabled": "0", "reason": "  spread too wide  "}, **JSON)
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "ghost_id": gid,
        "enabled": False,
        "status": "disabled",
        "status_reason": "spread too wide",
    }
    ghost = Ghost.objects.get(pk=gid)
    assert not ghost.enabled and ghost.status == "disabled"
    event = AuditEvent.objects.get(action="ghost.disabled", object_id=str(gid))
    assert event.actor == operator and event.reason == "spread too wide"
    assert event.before["enabled"] is True and event.before["status"] == "active"
    assert event.after["enabled"] is False and event.after["status"] == "disabled"

    again = op_client.post(toggle_url(gid), {"enabled": "1", "reason": "spread back to normal"}, **JSON)
    assert again.json()["status"] == "active"
    assert AuditEvent.objects.filter(action="ghost.enabled", object_id=str(gid), actor=operator).exists()


@pytest.mark.django_db
def test_toggle_without_javascript_redirects_back(op_client, desk):
    gid = desk["ghost"].pk
    response = op_client.post(toggle_url(gid), {"enabled": "0", "reason": "plain form"})
    assert response.status_code == 302 and response["Location"].startswith("/ghosts/")
    page = op_client.get(response["Location"]).content.decode()
    assert "fader-btc is now disabled." in page


@pytest.mark.django_db
@pytest.mark.parametrize("headers", [JSON, {}])
def test_toggle_unknown_ghost_is_404(op_client, desk, headers):
    response = op_client.post(toggle_url(999_999), {"enabled": "0", "reason": "no such ghost"}, **headers)
    assert response.status_code == 404
    assert not AuditEvent.objects.filter(reason="no such ghost").exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"enabled": "banana", "reason": "why not"}, "enabled must be 1"),
        ({"enabled": "true", "reason": "why not"}, "enabled must be 1"),
        ({"reason": "why not"}, "enabled is required"),
        ({"enabled": "0"}, "a reason is required"),
        ({"enabled": "0", "reason": "   "}, "a reason is required"),
        ({"enabled": "0", "reason": "x" * 501}, "too long"),
    ],
)
def test_toggle_rejects_malformed_input(op_client, desk, data, message):
    gid = desk["ghost"].pk
    before = AuditEvent.objects.count()
    response = op_client.post(toggle_url(gid), data, **JSON)
    assert response.status_code == 400
    assert response.json()["ok"] is False and message in response.json()["error"]
    # The HTML round trip (no JS) gets the same message inline on the ghosts page.
    page = op_client.post(toggle_url(gid), data)
    assert page.status_code == 400 and message in page.content.decode()
    assert Ghost.objects.get(pk=gid).enabled and AuditEvent.objects.count() == before


@pytest.mark.django_db
def test_toggle_rejects_get(op_client, desk):
    assert op_client.get(toggle_url(desk["ghost"].pk)).status_code == 405


# --- targets -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_operator_sets_portfolio_and_ghost_targets(op_client, operator, desk):
    gid = desk["ghost"].pk
    r1 = op_client.post("/targets/", {"owner": "portfolio", "amount": "250.50", "period": "week"})
    r2 = op_client.post("/targets/", {"owner": str(gid), "amount": "25", "period": "day"})
    assert r1.status_code == r2.status_code == 302
    assert RevenueTarget.objects.get(ghost=None).amount == Decimal("250.50")
    t = RevenueTarget.objects.get(ghost_id=gid)
    assert (t.amount, t.period) == (Decimal("25.00"), "day")
    assert AuditEvent.objects.filter(action="revenue_target.set", actor=operator).count() == 2
    html = op_client.get("/targets/").content.decode()
    assert 'value="250.50"' in html and 'value="25.00"' in html
    ghosts_html = op_client.get("/ghosts/").content.decode()
    assert "progress-pct" in ghosts_html and "0.0%" in ghosts_html


@pytest.mark.django_db
def test_viewer_cannot_set_target(viewer_client, desk):
    response = viewer_client.post("/targets/", {"owner": "portfolio", "amount": "100", "period": "day"})
    assert response.status_code == 403
    assert not RevenueTarget.objects.exists()
    html = viewer_client.get("/targets/").content.decode()
    assert "no target set" in html


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("amount", "period", "message"),
    [
        ("NaN", "day", "finite number"),
        ("-5", "day", "must be positive"),
        ("0", "day", "must be positive"),
        ("1.234", "day", "at most two decimals"),
        ("1e9", "day", "at most 10,000,000"),
        ("Infinity", "day", "finite number"),
        ("abc", "day", "must be a number"),
        ("", "day", "enter an amount"),
        ("10", "year", "period must be one of day, week, month"),
    ],
)
def test_target_rejects_bad_input(op_client, desk, amount, period, message):
    gid = desk["ghost"].pk
    response = op_client.post("/targets/", {"owner": str(gid), "amount": amount, "period": period})
    assert response.status_code == 400
    html = response.content.decode()
    assert message in html
    # The error sits in that ghost's row, next to its field, with what was typed kept in the input.
    row = html[html.index(f'id="target-{gid}"') :]
    row = row[: row.index("</tr>")]
    assert message in row and 'aria-invalid="true"' in row
    assert not RevenueTarget.objects.exists()
    assert not AuditEvent.objects.filter(action="revenue_target.set").exists()


@pytest.mark.django_db
def test_target_unknown_owner(op_client, desk):
    assert op_client.post("/targets/", {"owner": "424242", "amount": "5", "period": "day"}).status_code == 404
    bad = op_client.post("/targets/", {"owner": "everyone", "amount": "5", "period": "day"})
    assert bad.status_code == 400 and "owner must be" in bad.content.decode()
    assert not RevenueTarget.objects.exists()


# The trades page and its CSV: tests/dashboard/test_trades_views.py (the views live in views_trades.py).


# --- overview, audit, state, assets -------------------------------------------------------------------


@pytest.mark.django_db
def test_overview_empty_states_say_what_to_do(op_client, make_user):
    html = op_client.get("/").content.decode()
    assert "No feeds yet" in html and "No signals yet: enable a ghost or start the sim feed" in html
    assert "No open positions" in html and "No candles yet" in html and "No target set" in html
    assert "NaN" not in html


@pytest.mark.django_db
def test_overview_shows_feeds_signals_positions_and_chart(op_client, desk):
    inst, ghost = desk["instrument"], desk["ghost"]
    start = T0 - timedelta(hours=2)
    make_candles(instrument=inst, start=start, n=150)
    make_feed(instrument=inst, state="reconnecting", last_price="65123.5", last_error="timeout from exchange")
    closed = make_position(ghost=ghost, opened_at=start + timedelta(minutes=30), entry="65000", exit="65400")
    opened = make_position(ghost=ghost, opened_at=start + timedelta(minutes=100), side="short", entry="65200")
    sig = make_signal(ghost=ghost, bar_time=T0, side="short", confidence="0.83", fate="blocked_trend")
    html = op_client.get("/").content.decode()
    assert f'data-feed-id="{inst.pk}"' in html and ">SIM<" in html and "reconnecting" in html
    assert "65,123.5000" not in html and "65,123.50" in html and "timeout from exchange" in html
    assert f'id="signal-{sig.pk}"' in html and "83%" in html and "blocked trend" in html
    assert html.index(f'id="signal-{sig.pk}"') < html.index(f'id="signal-{opened.signal_id}"')  # newest first
    assert f'id="position-{opened.pk}"' in html and f'id="position-{closed.pk}"' not in html
    assert '<tbody id="positions">' in html and '<ul id="signals"' in html
    assert "/vendor/plotly.min.js?v=" in html
    chart = json.loads(
        html.split('<script id="chart-data" type="application/json">')[1].split("</script>")[0]
    )
    assert len(chart["x"]) == 150 and chart["x"][0] == start.strftime("%Y-%m-%d %H:%M:%S")
    assert (
        chart["long"]["y"] == [65000.0]
        and chart["short"]["y"] == [65200.0]
        and chart["exit"]["y"] == [65400.0]
    )
    assert chart["ghosts"] == [ghost.pk]
    assert "equity = start capital + realised P&amp;L − fees + unrealised P&amp;L" in html


@pytest.mark.django_db
def test_state_snapshot_for_reconnects(viewer_client, desk):
    make_position(ghost=desk["ghost"], opened_at=T0, entry="100")
    make_feed(instrument=desk["instrument"])
    events = viewer_client.get("/state.json").json()["events"]
    types = [e["type"] for e in events]
    assert types[0] == "pnl.updated" and "feed.status" in types and "ghost.status" in types
    assert "signal.updated" in types and types[-1] == "positions.snapshot"
    assert events[-1]["positions"][0]["ghost"] == "fader-btc"


@pytest.mark.django_db
def test_state_snapshot_resends_recent_bars_oldest_first(viewer_client, desk):
    """Bars that closed between page render and websocket connect reach the chart on catch-up."""
    make_candles(instrument=desk["instrument"], start=T0, n=90)
    bars = [e for e in viewer_client.get("/state.json").json()["events"] if e["type"] == "bar.closed"]
    assert len(bars) == 60
    times = [b["open_time"] for b in bars]
    assert times == sorted(times) and times[-1] == (T0 + timedelta(minutes=89)).isoformat()


@pytest.mark.django_db
def test_audit_page(op_client, operator, desk):
    op_client.post(toggle_url(desk["ghost"].pk), {"enabled": "0", "reason": "audit me"}, **JSON)
    html = op_client.get("/audit/").content.decode()
    assert "ghost.disabled" in html and "audit me" in html and "olga" in html
    assert "system" in html  # ghost_create by the fixture has no actor
    assert '<span class="num before">active</span> → <span class="num after">disabled</span>' in html
    for i in range(230):
        AuditEvent.objects.create(action="test.row", object_type="x", object_id=str(i))
    # The whole log by keyset (older links), newest first, each row once: no longer only the latest 200.
    seen, url = [], "/audit/"
    while url:
        html = op_client.get(url).content.decode()
        seen += [part.split('"')[0] for part in html.split('id="audit-')[1:]]
        url = "/audit/" + html.split('rel="next"')[0].rsplit('href="', 1)[1].split('"')[0].replace("&amp;", "&") \
            if 'rel="next"' in html else None
    assert seen[:50] == [str(pk) for pk in AuditEvent.objects.order_by("-created_at", "-id")
                         .values_list("pk", flat=True)[:50]]
    assert len(seen) == len(set(seen)) == AuditEvent.objects.count() > 230


@pytest.mark.django_db
def test_plotly_is_served_from_the_installed_package(op_client):
    raw = op_client.get("/vendor/plotly.min.js", HTTP_ACCEPT_ENCODING="identity")
    assert raw.status_code == 200
    assert raw["Content-Type"].startswith("text/javascript")
    assert "max-age=31536000" in raw["Cache-Control"]
    assert len(raw.content) > 1_000_000
    assert (
        raw.content == (importlib.resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()
    )
    zipped = op_client.get("/vendor/plotly.min.js", HTTP_ACCEPT_ENCODING="gzip, br")
    assert zipped["Content-Encoding"] == "gzip" and gzip.decompress(zipped.content) == raw.content
    again = op_client.get("/vendor/plotly.min.js", HTTP_IF_NONE_MATCH=raw["ETag"])
    assert again.status_code == 304


@pytest.mark.django_db
def test_login_is_rate_limited(client, make_user):
    make_user("olga", "operator")
    for _ in range(5):
        bad = client.post(reverse("login"), {"username": "olga", "password": "wrong-password-1"})
        assert (
            bad.status_code == 200 and "Please enter a correct username and password" in bad.content.decode()
        )
    sixth = client.post(reverse("login"), {"username": "olga", "password": "wrong-password-1"})
    assert sixth.status_code == 429 and "Too many failed attempts" in sixth.content.decode()
    # Even the right password waits out the window now.
    right = client.post(reverse("login"), {"username": "olga", "password": "olga" + PASSWORD_SUFFIX})
    assert right.status_code == 429 and "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_login_and_logout_round_trip(client, make_user):
    make_user("olga", "operator")
    response = client.post(
        reverse("login") + "?next=/ghosts/",
        {"username": "olga", "password": "olga" + PASSWORD_SUFFIX, "next": "/ghosts/"},
    )
    assert response.status_code == 302 and response["Location"] == "/ghosts/"
    assert 'action="/accounts/logout/"' in client.get("/ghosts/").content.decode()
    out = client.post(reverse("logout"))
    assert out.status_code == 302 and client.get("/").status_code == 302


@pytest.mark.django_db
def test_degraded_ghost_shows_its_traceback_to_operators_only(op_client, viewer_client, desk):
    make_ghost(
        name="broken-ghost",
        instrument=desk["instrument"],
        status="degraded",
        status_reason="ZeroDivisionError: float division by zero",
        last_error='Traceback (most recent call last):\n  File "spike_fader.py", line 42\nZeroDivisionError',
    )
    op_html = op_client.get("/ghosts/").content.decode()
    assert '<details class="ghost-error">' in op_html and "spike_fader.py" in op_html
    assert "ZeroDivisionError: float division by zero" in op_html
    viewer_html = viewer_client.get("/ghosts/").content.decode()
    assert "ZeroDivisionError: float division by zero" in viewer_html  # the one-line reason is for everyone
    assert "ghost-error" not in viewer_html and "spike_fader.py" not in viewer_html


@pytest.mark.django_db
def test_ghost_progress_against_target(op_client, desk):
    from apps.revenue.services import revenue_target_set

    ghost = desk["ghost"]
    make_feed(instrument=desk["instrument"], last_trade_at=T0 + timedelta(hours=1))
    revenue_target_set(ghost_id=ghost.pk, amount="4", period="day", actor=None)
    make_position(ghost=ghost, opened_at=T0, entry="100", exit="101", qty="2")  # net +1.598
    html = op_client.get("/ghosts/").content.decode()
    row = html[html.index(f'id="ghost-{ghost.pk}"') :]
    assert 'data-target-amount="4.00"' in row and "+1.60" in row
    assert "40.0%" in row and "width: 40.0%" in row  # 1.598 / 4 = 39.95% -> 40.0%
    assert "P&amp;L today" in row


@pytest.mark.django_db
def test_server_strings_are_escaped(op_client, desk):
    make_ghost(name="<img src=x onerror=alert(1)>", instrument=desk["instrument"])
    html = op_client.get("/ghosts/").content.decode()
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


# --- query counts ------------------------------------------------------------------------------------


def _populate(desk, *, prefix: str, ghosts: int, trades_each: int) -> None:
    """Ghosts with targets over all three periods, closed trades, one open position each, signals."""
    from apps.revenue.services import revenue_target_set

    inst = desk["instrument"]
    make_feed(instrument=inst, last_trade_at=T0 + timedelta(hours=3))
    for g in range(ghosts):
        ghost = make_ghost(name=f"{prefix}{g:02d}", instrument=inst, enabled=g % 2 == 0)
        revenue_target_set(ghost_id=ghost.pk, amount="10", period=["day", "week", "month"][g % 3], actor=None)
        for t in range(trades_each):
            make_position(ghost=ghost, opened_at=T0 + timedelta(minutes=t), entry="100", exit="100.4")
        make_position(ghost=ghost, opened_at=T0 + timedelta(hours=2), entry="100")


def _count(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


# Session, user, groups, the header's P&L snapshot and the page's own selectors: a fixed budget.
MAX_QUERIES = 40


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/", "/ghosts/", "/trades/", "/targets/", "/audit/", "/state.json"])
def test_pages_do_not_grow_queries_with_rows(op_client, desk, url, django_assert_max_num_queries):
    _populate(desk, prefix="a", ghosts=1, trades_each=2)
    small = _count(op_client, url)
    _populate(desk, prefix="b", ghosts=8, trades_each=6)
    big = _count(op_client, url)
    assert big == small, f"{url}: {small} queries with 2 ghosts, {big} with 10 (N+1)"
    with django_assert_max_num_queries(MAX_QUERIES):
        op_client.get(url)


@pytest.mark.django_db
def test_context_processor_skips_numbers_for_anonymous(client, desk):
    with CaptureQueriesContext(connection) as ctx:
        client.get(reverse("login"))
    assert not any("trading_position" in q["sql"] for q in ctx.captured_queries)
