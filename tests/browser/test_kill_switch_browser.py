"""The kill switch in real Chromium against a live Daphne: an operator trips it on the risk page with the
form's CSRF token, and pages already open elsewhere (a viewer on the ghosts page, a viewer on the risk page)
show the KILL SWITCH TRIPPED banner and the new state live over the websocket, without a reload; then the
reset clears them. The ghosts page's alert event shows a toast in every browser, and a live signal links
to its "why?" page."""

from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from apps.audit.models import AuditEvent
from apps.trading.models import KillSwitch
from tests.browser.test_desk_browser import WS_TIMEOUT, collect_js_errors, login
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, ROOT

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),  # Daphne reads and writes the same file DB
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
async_playwright, expect = playwright_api.async_playwright, playwright_api.expect

SCREENSHOT = ROOT / ".run" / "screenshot-risk.png"
LIVE = 5_000  # ms for an event to cross Redis + Channels to another browser


async def push(group: str, event: dict) -> None:
    await get_channel_layer().group_send(group, {"type": "desk.event", "event": event})


async def test_operator_trips_and_resets_and_other_browsers_see_it_live(daphne_url, desk, make_user):
    await sync_to_async(make_user)("olga", "operator")
    await sync_to_async(make_user)("vera", "viewer")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            watcher = await (await browser.new_context()).new_page()  # a viewer on another page
            risk_viewer = await (await browser.new_context()).new_page()  # a viewer on the risk page itself
            operator = await (await browser.new_context()).new_page()
            errors = collect_js_errors(watcher) + collect_js_errors(risk_viewer) + collect_js_errors(operator)
            await login(watcher, daphne_url, "vera", "/ghosts/")
            await login(risk_viewer, daphne_url, "vera", "/risk/")
            await login(operator, daphne_url, "olga", "/risk/")
            for page in (watcher, risk_viewer, operator):
                await expect(page.locator("#killswitch-banner")).to_be_hidden()
            await expect(risk_viewer.locator("#ks-state")).to_have_text("armed")
            await expect(risk_viewer.locator("#ks-trip")).to_have_count(0)  # viewers get no controls

            # No reason: refused with a clear message, nothing trips.
            await operator.click("#ks-trip button[type=submit]")
            await expect(operator.locator("#ks-error")).to_contain_text("a reason is required")
            assert not await KillSwitch.objects.filter(tripped=True).aexists()

            await operator.fill("#ks-trip-reason", "exchange returning stale prices")
            await operator.click("#ks-trip button[type=submit]")
            await operator.wait_for_url(daphne_url + "/risk/")
            await expect(operator.locator("#ks-state")).to_have_text("TRIPPED")
            await expect(operator.locator("#killswitch-banner")).to_be_visible()
            await expect(operator.locator("#ks-reset")).to_be_visible()
            await expect(operator.locator("#ks-trip")).to_be_hidden()

            # The others hear it over the websocket, without a reload.
            banner = watcher.locator("#killswitch-banner")
            await expect(banner).to_be_visible(timeout=LIVE)
            await expect(banner).to_contain_text("KILL SWITCH TRIPPED")
            await expect(banner.locator(".ks-reason")).to_have_text("exchange returning stale prices")
            await expect(banner.locator(".ks-actor")).to_have_text("olga")
            await expect(watcher.locator("#toasts .toast.error").last).to_contain_text("Kill switch TRIPPED by olga")
            await expect(risk_viewer.locator("#ks-state")).to_have_text("TRIPPED", timeout=LIVE)
            await expect(risk_viewer.locator("#killswitch-banner")).to_be_visible()

            ev = await AuditEvent.objects.select_related("actor").filter(action="killswitch.tripped").afirst()
            assert ev is not None and ev.actor.username == "olga" and ev.reason == "exchange returning stale prices"
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await operator.screenshot(path=str(SCREENSHOT), full_page=True)

            # Reset: reason required too, then every banner clears live.
            await operator.click("#ks-reset button[type=submit]")
            await expect(operator.locator("#ks-error")).to_contain_text("a reason is required")
            await expect(watcher.locator("#killswitch-banner")).to_be_visible()
            await operator.fill("#ks-reset-reason", "prices checked against a second venue")
            await operator.click("#ks-reset button[type=submit]")
            await expect(operator.locator("#ks-state")).to_have_text("armed")
            await expect(watcher.locator("#killswitch-banner")).to_be_hidden(timeout=LIVE)
            await expect(risk_viewer.locator("#ks-state")).to_have_text("armed", timeout=LIVE)
            await expect(watcher.locator("#toasts .toast.ok").last).to_contain_text("Kill switch reset by olga")
            assert await AuditEvent.objects.filter(
                action="killswitch.reset", reason="prices checked against a second venue").aexists()
            assert not (await KillSwitch.objects.aget(pk=1)).tripped

            # ghost_review's alert event (the same dict it sends) becomes a toast in every browser: once each
            # page's socket is live again (a form post reloads the operator's page, and its socket reconnects)
            for page in (watcher, risk_viewer, operator):
                await expect(page.locator("#ws-state")).to_have_text("live", timeout=WS_TIMEOUT)
            ghost = desk["ghost"]
            await push("ghosts", {"type": "alert", "level": "error", "ghost_id": ghost.pk,
                                  "message": f"{ghost.name} auto-disabled: win rate 20.0% over 10 trades < floor 30%"})
            for page in (watcher, risk_viewer, operator):
                await expect(page.locator("#toasts .toast.error").last).to_contain_text(
                    "auto-disabled: win rate 20.0%", timeout=LIVE)
            await watcher.locator(f"#ghost-{ghost.pk} .ghost-rules summary").click()
            await watcher.screenshot(path=str(SCREENSHOT.with_name("screenshot-ghosts-performance.png")),
                                     full_page=True)
            assert not errors, errors
        finally:
            await browser.close()


async def test_live_signal_links_to_its_why_page(daphne_url, desk, make_user):
    from tests.factories import make_signal

    await sync_to_async(make_user)("vera", "viewer")
    signal = await sync_to_async(make_signal)(ghost=desk["ghost"], fate="outscored",
                                              fate_detail="score 0.410 < 0.620 of whale-btc")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context()).new_page()
            errors = collect_js_errors(page)
            await login(page, daphne_url, "vera", "/")
            await expect(page.locator("#ws-state")).to_have_text("live", timeout=WS_TIMEOUT)
            # The catch-up snapshot redraws the stream with desk.js: the link must survive that.
            link = page.locator(f"#signal-{signal.pk} a.why-link")
            await expect(link).to_have_attribute("href", f"/signals/{signal.pk}/")
            await link.click()
            await page.wait_for_url(f"{daphne_url}/signals/{signal.pk}/")
            await expect(page.locator("#fate-words")).to_contain_text("another ghost's draft")
            await expect(page.locator("#fate-detail")).to_have_text("score 0.410 < 0.620 of whale-btc")
            await page.screenshot(path=str(SCREENSHOT.with_name("screenshot-signal.png")), full_page=True)
            assert not errors, errors
        finally:
            await browser.close()
