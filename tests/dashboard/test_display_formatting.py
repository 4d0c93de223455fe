"""Figures the desk showed raw (QA): a manual close's message ("closed at 98013.62232000 USDT: net P&L
-4.77338453") and a ghost card's state summary ("last_burst_time 2026-12-05T05:11:00+00:00", "last_burst_notional
6532129.09"). Both now read like the rest of the desk: prices and money with thousands separators and their
precision, times as "MM-DD HH:MM" (data time, UTC). The engine keeps its machine-readable values."""

from datetime import timedelta

import pytest
from django.urls import reverse

from apps.common.display import state_value
from apps.ghosts.events import ghost_payload
from apps.ghosts.models import Ghost
from apps.ghosts.services import ghost_record_evaluation
from tests.trading.test_close_position import T0, live_price, open_paper

WHALE_STATE = {
    "last_burst": "2026-12-05 05:11 UTC BUY net 6.53M in 5 min (x3.2 norm)",
    "last_burst_time": "2026-12-05T05:11:00+00:00",
    "last_burst_side": "buy",
    "last_burst_notional": "6532129.09",
    "last_signal": "none",
}


@pytest.mark.parametrize("raw, shown", [
    ("2026-12-05T05:11:00+00:00", "12-05 05:11"),
    ("2026-12-05T07:11:00+02:00", "12-05 05:11"),  # in UTC, as the header's data clock
    ("2026-12-05T05:11:00Z", "12-05 05:11"),
    ("6532129.09", "6,532,129.09"),
    ("-6532129.09", "-6,532,129.09"),
    ("+1234", "+1,234"),
    ("120", "120"),
    ("LONG at 2026-12-05 05:11 UTC", "LONG at 12-05 05:11"),
    ("+0.1234 (60 min)", "+0.1234 (60 min)"),
    ("none in this window", "none in this window"),
    ("2026-13-45T99:99:00", "2026-13-45T99:99:00"),  # not a time: left alone
])
def test_state_value(raw, shown):
    assert state_value(raw) == shown


@pytest.mark.django_db
def test_ghost_card_and_its_pushed_state_are_formatted(desk, op_client):
    ghost = desk["ghost"]
    ghost_record_evaluation(ghost_id=ghost.pk, error=None, state=WHALE_STATE)
    html = op_client.get("/ghosts/").content.decode()
    block = html[html.index('class="ghost-state'):]
    block = block[: block.index("</dl>")]
    assert "<dt>last_burst_time</dt><dd class=\"num\">12-05 05:11</dd>" in block
    assert "<dt>last_burst_notional</dt><dd class=\"num\">6,532,129.09</dd>" in block
    assert "2026-12-05T05:11:00+00:00" not in block and "6532129.09" not in block
    stored = Ghost.objects.get(pk=ghost.pk)
    assert dict(stored.state_items) == WHALE_STATE  # stored as the engine wrote it
    pushed = dict(ghost_payload(stored, type_="ghost.status", actor="system")["state"])
    assert pushed["last_burst_time"] == "12-05 05:11" and pushed["last_burst_notional"] == "6,532,129.09"
    assert list(pushed) == list(WHALE_STATE)  # the engine's order kept


@pytest.mark.django_db
def test_close_message_uses_the_desks_price_and_money_format(desk, op_client):
    pos = open_paper(desk["ghost"], entry=98000.0)
    live_price(desk["instrument"], 98013.62, T0 + timedelta(minutes=20))
    r = op_client.post(reverse("dashboard:position-close", args=[pos.pk]), {"reason": "risk off"}, follow=True)
    pos.refresh_from_db()
    assert pos.status == "closed"
    page = r.content.decode()
    net = pos.net_pnl.quantize(pos.net_pnl.__class__("0.01"))
    sign = "+" if net > 0 else "−"
    expected = (f"closed at {pos.exit_price:,.2f} USDT: net P&amp;L {sign}{abs(net):,.2f} USDT.")
    assert expected in page, page[page.find("closed at") - 100:page.find("closed at") + 200]
    assert str(pos.exit_price) not in page.split("closed at", 1)[1][:60]
