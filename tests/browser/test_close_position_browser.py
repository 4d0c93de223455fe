"""Issue 14 in real Chromium against a live Daphne: an operator closes ONE open position from the overview's row
(reason required by the form, then the close), and a viewer's overview drops that row live and shows the manual
exit as a toast; the other position stays listed. Viewers get no close form."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from asgiref.sync import sync_to_async

from apps.audit.models import AuditEvent
from apps.engine.types import Draft
from apps.ghosts.services import ghost_create
from apps.market.models import FeedStatus
from apps.market.prices import price_set
from apps.signals.services import signal_record
from apps.trading.models import Position
from apps.trading.services import signal_execute_paper
from tests.browser.test_desk_browser import collect_js_errors, login
from tests.conftest import CHROMIUM, CHROMIUM_ARGS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),  # Daphne reads and writes the same file DB
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
async_playwright, expect = playwright_api.async_playwright, playwright_api.expect

LIVE = 5_000  # ms for an event to cross Redis + Channels to another browser
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _open(ghost, entry: float, minute: int) -> Position:
    bar = T0 + timedelta(minutes=minute)
    draft = Draft(side=1, confidence=0.7, priority=2, entry=entry, stop=entry * 0.98, target=entry * 1.02,
                  size_mult=1.0, max_hold_s=0.0, reason="test", bar_time=pd.Timestamp(bar))
    signal, _ = signal_record(ghost=ghost, bar_time=bar, draft=draft)
    pos = signal_execute_paper(signal_id=signal.pk, price=Decimal(repr(entry)), at=bar + timedelta(minutes=1))
    assert pos is not None
    return pos


def _world(desk) -> tuple[Position, Position]:
    second = ghost_create(name="fader-2", kind="spike_fader", instrument=desk["instrument"], enabled=True)
    a, b = _open(desk["ghost"], 100.0, 0), _open(second, 100.0, 1)
    at = T0 + timedelta(minutes=10)
    FeedStatus.objects.filter(instrument=desk["instrument"]).update(state="connected", last_price=101,
                                                                    last_trade_at=at)
    price_set(desk["instrument"].pk, 101.0, int(at.timestamp() * 1000))
    return a, b


async def test_operator_closes_one_position_and_a_viewer_sees_it_go(daphne_url, desk, make_user):
    await sync_to_async(make_user)("olga", "operator")
    await sync_to_async(make_user)("vera", "viewer")
    a, b = await sync_to_async(_world)(desk)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            viewer = await (await browser.new_context()).new_page()
            operator = await (await browser.new_context()).new_page()
            errors = collect_js_errors(viewer) + collect_js_errors(operator)
            await login(viewer, daphne_url, "vera", "/")
            await login(operator, daphne_url, "olga", "/")
            # The rows desk.js redrew from state.json on connect: the form on each for the operator, none for viewers.
            await expect(operator.locator(f"#position-{a.pk} form.close-position")).to_have_count(1)
            await expect(operator.locator(f"#position-{b.pk} form.close-position")).to_have_count(1)
            await expect(viewer.locator("form.close-position")).to_have_count(0)
            await expect(viewer.locator(f"#position-{a.pk}")).to_be_visible()

            row = operator.locator(f"#position-{a.pk}")
            await row.locator("button[type=submit]").click()  # no reason: the browser refuses (required)
            assert (await Position.objects.aget(pk=a.pk)).status == "open"
            await row.locator("input[name=reason]").fill("news in five minutes")
            await row.locator("button[type=submit]").click()
            await operator.wait_for_url(daphne_url + "/")
            await expect(operator.locator(".messages")).to_contain_text(f"Position {a.pk}")
            await expect(viewer.locator(f"#position-{a.pk}")).to_have_count(0, timeout=LIVE)
            await expect(viewer.locator("#toasts .toast").last).to_contain_text("closed (manual)", timeout=LIVE)
            await expect(viewer.locator(f"#position-{b.pk}")).to_be_visible()
            closed = await Position.objects.aget(pk=a.pk)
            assert closed.status == "closed" and closed.exit_reason == "manual"
            assert (await Position.objects.aget(pk=b.pk)).status == "open"
            assert await AuditEvent.objects.filter(action="position.closed_manually", reason="news in five minutes",
                                                   actor__username="olga").aexists()
            assert not errors, errors
        finally:
            await browser.close()
