"""The risk page over Django's test client: operators edit every limit (validated by the engine, audited,
nothing saved on bad input), trip and reset the kill switch (reason required, audited, pushed to every
browser after commit, optional flatten through the real position_close), viewers read only and get 403
on every POST, anonymous users are sent to login, CSRF is enforced; today's loss against the daily limit
is worked out here from the ledger, independently of the view."""

import asyncio
import dataclasses
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.test import Client
from django.urls import reverse

from apps.audit.models import AuditEvent
from apps.dashboard.views_risk import LIMIT_HELP, LIMIT_SPECS, RULE_HELP
from apps.engine.performance import AutoDisableRules
from apps.engine.risk import RiskLimits
from apps.trading.models import KillSwitch, Position, RiskSettings
from apps.trading.risk_selectors import kill_switch, risk_limits
from tests.conftest import desk_events
from tests.factories import make_feed, make_position

pytestmark = pytest.mark.django_db
URL = "/risk/"
TRIP = "/risk/kill-switch/trip/"
RESET = "/risk/kill-switch/reset/"

# Every field changed from its default, each within the engine's ranges.
NEW_LIMITS = {
    "risk_per_trade_pct": "0.5",
    "max_notional_pct": "20",
    "max_open_positions": "5",
    "max_open_per_ghost": "1",
    "max_trades_per_day": "30",
    "max_daily_loss_pct": "2.5",
    "max_total_notional_pct": "60",
    "max_instrument_notional_pct": "40",
    "ghost_drawdown_stop_pct": "4",
    "flatten_on_kill": "1",
}


def drain(channel: str, timeout: float = 1.0) -> list[dict]:
    layer = get_channel_layer()

    async def take() -> list[dict]:
        out = []
        while True:
            try:
                out += desk_events(await asyncio.wait_for(layer.receive(channel), timeout))
            except TimeoutError:
                return out
    return async_to_sync(take)()


def listen(group: str) -> str:
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(group, channel)
    return channel


def banner(html: str) -> str:
    """The header's kill-switch banner element (opening tag and text)."""
    start = html.index('id="killswitch-banner"')
    return html[start: html.index("</div>", start)]


# --- the page and the fields ---------------------------------------------------------------------------------


def test_urls_and_nav_link(op_client):
    assert reverse("dashboard:risk") == URL
    assert reverse("dashboard:kill-switch-trip") == TRIP and reverse("dashboard:kill-switch-reset") == RESET
    html = op_client.get("/").content.decode()
    assert f'href="{URL}"' in html


def test_every_limit_and_rule_has_a_label_unit_and_help():
    # A field added to the engine without words here would show up unexplained: this fails first.
    for cls, words in ((RiskLimits, LIMIT_HELP), (AutoDisableRules, RULE_HELP)):
        names = [f.name for f in dataclasses.fields(cls)]
        assert sorted(names) == sorted(words), cls
        assert all(all(part.strip() for part in words[n]) for n in names)


@pytest.mark.parametrize("url", [URL])
def test_anonymous_is_sent_to_login_and_changes_nothing(client, url):
    assert client.get(url).status_code == 302
    for post in (URL, TRIP, RESET):
        r = client.post(post, {**NEW_LIMITS, "reason": "anon"})
        assert r.status_code == 302 and r["Location"].startswith(reverse("login"))
    assert not RiskSettings.objects.exists() and not kill_switch().tripped
    assert not AuditEvent.objects.exists()


def test_operator_sees_every_limit_editable_with_unit(op_client):
    html = op_client.get(URL).content.decode()
    limits = RiskLimits()
    for s in LIMIT_SPECS:
        assert f'name="{s.name}"' in html, s.name
        assert s.unit.replace("&", "&amp;") in html
    # Current values (engine defaults) are prefilled.
    assert f'name="max_trades_per_day" id="lim-max_trades_per_day" value="{limits.max_trades_per_day}"' in html
    assert 'id="limits-form"' in html and 'id="ks-trip"' in html and 'name="reason"' in html


def test_viewer_sees_limits_read_only(viewer_client):
    RiskSettings.objects.create(pk=1, params={**RiskLimits().to_params(), "max_trades_per_day": 17})
    html = viewer_client.get(URL).content.decode()
    assert 'id="lim-max_trades_per_day">17<' in html
    assert "<form" not in html.split('id="main"')[1].split("</main>")[0]  # no form in the page body
    assert 'name="reason"' not in html and "Read-only: only operators can change risk limits" in html
    assert "Read-only: only operators can trip or reset the kill switch" in html


# --- editing limits -----------------------------------------------------------------------------------------


def test_operator_saves_all_limits_with_an_audited_reason(op_client, operator):
    r = op_client.post(URL, {**NEW_LIMITS, "reason": "quieter market, smaller risk"})
    assert r.status_code == 302 and r.url == URL
    saved = risk_limits()
    assert saved == RiskLimits(risk_per_trade_pct=0.5, max_notional_pct=20.0, max_open_positions=5,
                               max_open_per_ghost=1, max_trades_per_day=30, max_daily_loss_pct=2.5,
                               ghost_drawdown_stop_pct=4.0, flatten_on_kill=True, max_total_notional_pct=60.0,
                               max_instrument_notional_pct=40.0)
    ev = AuditEvent.objects.get(action="risk.limits_changed")
    assert ev.actor == operator and ev.reason == "quieter market, smaller risk"
    assert ev.before["max_trades_per_day"] == 50 and ev.after["max_trades_per_day"] == 30
    assert ev.before["flatten_on_kill"] is False and ev.after["flatten_on_kill"] is True
    # The page shows what was saved.
    html = op_client.get(URL).content.decode()
    assert 'id="lim-max_daily_loss_pct" value="2.5"' in html and "Risk limits saved" in html


def test_unticked_checkbox_saves_false(op_client):
    RiskSettings.objects.create(pk=1, params={**RiskLimits().to_params(), "flatten_on_kill": True})
    form = {k: v for k, v in NEW_LIMITS.items() if k != "flatten_on_kill"}
    assert op_client.post(URL, {**form, "reason": "no flatten"}).status_code == 302
    assert risk_limits().flatten_on_kill is False


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"max_daily_loss_pct": "80"}, "risk.max_daily_loss_pct must be &gt; 0 and &lt;= 50 (% of equity), got 80.0"),
        ({"risk_per_trade_pct": "0"}, "risk.risk_per_trade_pct must be &gt; 0"),
        ({"max_open_per_ghost": "2"}, "risk.max_open_per_ghost must be &gt;= 1 and &lt;= 1"),
        ({"max_open_positions": "2.5"}, "Max open positions: &#x27;2.5&#x27; is not a whole number (positions)"),
        ({"max_notional_pct": "ten"}, "Max position notional: &#x27;ten&#x27; is not a number (% of equity)"),
        ({"max_notional_pct": "nan"}, "Max position notional: must be a finite number"),
        ({"max_trades_per_day": ""}, "Max trades per day: enter a value (entries per UTC day)"),
        ({"reason": "  "}, "a reason is required"),
    ],
)
def test_bad_limits_say_what_is_wrong_and_save_nothing(op_client, change, message):
    before = RiskLimits().to_params()
    r = op_client.post(URL, {**NEW_LIMITS, "reason": "try", **change})
    assert r.status_code == 400
    html = r.content.decode()
    assert "Nothing was saved" in html and message in html, html[html.find("limits-error"):][:600]
    assert not RiskSettings.objects.exists() and risk_limits().to_params() == before
    assert not AuditEvent.objects.filter(action="risk.limits_changed").exists()
    # What the operator typed is shown again, not silently replaced by the saved value.
    typed = change.get("max_daily_loss_pct")
    if typed:
        assert f'id="lim-max_daily_loss_pct" value="{typed}"' in html


def test_viewer_post_is_refused_and_saves_nothing(viewer_client):
    for url in (URL, TRIP, RESET):
        assert viewer_client.post(url, {**NEW_LIMITS, "reason": "I am a viewer"}).status_code == 403
    assert not RiskSettings.objects.exists() and not kill_switch().tripped
    assert not AuditEvent.objects.exists()


def test_csrf_is_enforced(operator):
    c = Client(enforce_csrf_checks=True)
    c.force_login(operator)
    for url in (URL, TRIP):
        assert c.post(url, {**NEW_LIMITS, "reason": "forged from another site"}).status_code == 403
    assert not RiskSettings.objects.exists() and not kill_switch().tripped
    # With the page's own token it goes through: the 403s above were CSRF, not something else.
    html = c.get(URL).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    assert c.post(TRIP, {"reason": "real operator", "csrfmiddlewaretoken": token}).status_code == 302
    assert kill_switch().tripped


# --- kill switch ------------------------------------------------------------------------------------------------


def test_trip_and_reset_are_audited_pushed_and_shown_on_every_page(
        op_client, viewer_client, operator, desk, django_capture_on_commit_callbacks):
    channel = listen("portfolio")  # the group every desk socket joins
    assert "hidden" in banner(op_client.get("/").content.decode())

    with django_capture_on_commit_callbacks(execute=True):
        r = op_client.post(TRIP, {"reason": "exchange acting strangely"})
    assert r.status_code == 302 and r.url == URL
    ks = KillSwitch.objects.get(pk=1)
    assert ks.tripped and ks.reason == "exchange acting strangely" and ks.changed_by == operator
    ev = AuditEvent.objects.get(action="killswitch.tripped")
    assert ev.actor == operator and ev.reason == "exchange acting strangely"
    # Every page's header, for both roles.
    for c in (op_client, viewer_client):
        for page in ("/", "/ghosts/", "/trades/", "/targets/", "/audit/", URL):
            b = banner(c.get(page).content.decode())
            assert "hidden" not in b and "KILL SWITCH TRIPPED" in b and "exchange acting strangely" in b, page
    # The catch-up snapshot a reconnecting browser reads carries the switch too.
    state = op_client.get("/state.json").json()["events"]
    assert {"type": "killswitch.changed", "tripped": True}.items() <= next(
        e for e in state if e["type"] == "killswitch.changed").items()

    # Tripping again changes nothing and writes no second audit row.
    assert op_client.post(TRIP, {"reason": "again"}).status_code == 302
    assert AuditEvent.objects.filter(action="killswitch.tripped").count() == 1

    # Reset needs a reason: refused without one, stays tripped.
    r = op_client.post(RESET, {"reason": "   "})
    assert r.status_code == 400 and "a reason is required" in r.content.decode()
    assert kill_switch().tripped and not AuditEvent.objects.filter(action="killswitch.reset").exists()

    with django_capture_on_commit_callbacks(execute=True):
        assert op_client.post(RESET, {"reason": "exchange healthy again"}).status_code == 302
    assert not kill_switch().tripped
    ev = AuditEvent.objects.get(action="killswitch.reset")
    assert ev.actor == operator and ev.reason == "exchange healthy again"
    # Pushed after each commit (drained once: the channel layer's receive is bound to one event loop).
    pushed = [e for e in drain(channel) if e["type"] == "killswitch.changed"]
    assert pushed[0] == {"type": "killswitch.changed", "tripped": True, "reason": "exchange acting strangely",
                         "at": ks.changed_at.isoformat(), "by": "olga"}
    assert [e["tripped"] for e in pushed] == [True, False] and pushed[1]["reason"] == "exchange healthy again"
    assert "hidden" in banner(viewer_client.get("/").content.decode())


def test_trip_without_reason_is_refused(op_client):
    r = op_client.post(TRIP, {"reason": ""})
    assert r.status_code == 400 and "a reason is required" in r.content.decode()
    assert not kill_switch().tripped and not AuditEvent.objects.exists()


def test_trip_with_flatten_closes_open_positions_at_the_last_price(
        op_client, desk, django_capture_on_commit_callbacks):
    ghost = desk["ghost"]
    now = datetime.now(UTC).replace(microsecond=0)
    make_feed(instrument=desk["instrument"], last_price="101", last_trade_at=now)
    pos = make_position(ghost=ghost, opened_at=now - timedelta(minutes=10), entry="100", qty="1")
    with django_capture_on_commit_callbacks(execute=True):
        assert op_client.post(TRIP, {"reason": "flatten test", "flatten": "1"}).status_code == 302
    pos.refresh_from_db()
    assert pos.status == Position.Status.CLOSED and pos.exit_reason == "manual"
    assert pos.exit_price is not None and abs(pos.exit_price - Decimal("101")) / Decimal("101") < Decimal("0.01")


def test_trip_without_flatten_leaves_positions_open(op_client, desk, django_capture_on_commit_callbacks):
    now = datetime.now(UTC).replace(microsecond=0)
    make_feed(instrument=desk["instrument"], last_price="101", last_trade_at=now)
    pos = make_position(ghost=desk["ghost"], opened_at=now - timedelta(minutes=10), entry="100")
    with django_capture_on_commit_callbacks(execute=True):
        assert op_client.post(TRIP, {"reason": "no flatten"}).status_code == 302
    pos.refresh_from_db()
    assert pos.status == Position.Status.OPEN


# --- today's loss against the daily limit ------------------------------------------------------------------


def test_todays_loss_against_the_daily_limit(viewer_client, desk):
    now = datetime.now(UTC).replace(microsecond=0)
    day = now.replace(hour=0, minute=0, second=0)
    make_feed(instrument=desk["instrument"], last_price="100", last_trade_at=now)
    # Yesterday's win is in start-of-day equity; today's loss counts against the limit.
    make_position(ghost=desk["ghost"], opened_at=day - timedelta(hours=3), entry="100", exit="130", qty="2")
    today = make_position(ghost=desk["ghost"], opened_at=day + timedelta(seconds=1), entry="100", exit="40",
                          qty="2", closed_at=day + timedelta(seconds=2))
    assert today.closed_at <= now
    yesterday = Position.objects.exclude(pk=today.pk).get()
    start_of_day = settings.HFT_START_CAPITAL + yesterday.net_pnl
    limit = start_of_day * Decimal("0.03")  # the default 3 % of start-of-day equity
    used = -today.net_pnl / limit * 100
    html = viewer_client.get(URL).content.decode()
    card = html[html.index('id="daily-loss"'):]
    assert f'id="risk-today-pnl" data-pnl-field="today_pnl" data-signed="1">−{-today.net_pnl:,.2f}<' in card
    assert f'id="loss-limit-amount">{limit:,.2f}<' in card
    assert f'id="loss-used-pct">{used:.1f}%<' in card
    assert f"{start_of_day:,.2f}" in card
