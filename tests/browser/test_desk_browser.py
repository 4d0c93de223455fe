"""The desk in a real Chromium (async Playwright) against a live Daphne on the test database.

What only a browser proves: the login form with its CSRF token, desk.js opening the websocket,
the toggle's fetch POST, and a second browser receiving the change over Redis + Channels.
Events for the live-update test are pushed through the real channel layer, exactly as services do.
"""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from apps.audit.models import AuditEvent
from apps.ghosts.models import Ghost
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, PASSWORD_SUFFIX, ROOT

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),  # Daphne reads and writes the same file DB
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    ),
]

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
async_playwright, expect = playwright_api.async_playwright, playwright_api.expect

SCREENSHOT = ROOT / ".run" / "screenshot-overview.png"
SCREENSHOT_PHONE = ROOT / ".run" / "screenshot-overview-phone.png"
WS_TIMEOUT = 10_000  # ms: first websocket connect includes Daphne importing the consumer


async def login(page, base: str, username: str, next_path: str = "/") -> None:
    """Through the real login form (its CSRF token included), then wait for the live socket."""
    await page.goto(base + next_path)
    await expect(page.locator("#id_username")).to_be_visible()
    await page.fill("#id_username", username)
    await page.fill("#id_password", username + PASSWORD_SUFFIX)
    await page.click("button[type=submit]")
    await page.wait_for_url(base + next_path)
    await expect(page.locator("#ws-state")).to_have_text("live", timeout=WS_TIMEOUT)


def collect_js_errors(page) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    return errors


async def push(group: str, event: dict) -> None:
    await get_channel_layer().group_send(group, {"type": "desk.event", "event": event})


async def test_operator_toggle_reaches_every_open_browser(daphne_url, desk, make_user):
    ghost = desk["ghost"]
    row = f"#ghost-{ghost.pk}"
    await sync_to_async(make_user)("olga", "operator")
    await sync_to_async(make_user)("vera", "viewer")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            watcher = await (await browser.new_context()).new_page()  # a second person, already watching
            operator = await (await browser.new_context()).new_page()
            errors = collect_js_errors(operator) + collect_js_errors(watcher)
            await login(watcher, daphne_url, "vera", "/ghosts/")
            await login(operator, daphne_url, "olga", "/ghosts/")
            await expect(operator.locator(f"{row} .ghost-status")).to_have_text("active")
            await expect(watcher.locator(f"{row} .ghost-status")).to_have_text("active")

            # No reason: a clear inline error, and nothing is sent.
            await operator.click(f"{row} .toggle-btn")
            await expect(operator.locator(f"{row} .toggle-error")).to_contain_text("Type a reason first")
            assert await sync_to_async(lambda: Ghost.objects.get(pk=ghost.pk).enabled)()

            await operator.fill(f"{row} input.reason", "spread too wide on the test desk")
            await operator.click(f"{row} .toggle-btn")
            await expect(operator.locator(f"{row} .ghost-status")).to_have_text("disabled")
            await expect(operator.locator(f"{row} .toggle-btn")).to_have_text("Enable")
            await expect(operator.locator(f"{row} .toggle-error")).to_be_hidden()
            await expect(operator.locator(f"{row} input.reason")).to_have_value("")
            # The other browser hears it over the websocket, without a reload.
            await expect(watcher.locator(f"{row} .ghost-status")).to_have_text("disabled", timeout=5_000)
            await expect(watcher.locator(f"{row} .ghost-reason")).to_have_text(
                "spread too wide on the test desk"
            )
            await expect(watcher.locator("#toasts .toast").last).to_contain_text("disabled by olga")

            event = (
                await AuditEvent.objects.select_related("actor")
                .filter(action="ghost.disabled", object_id=str(ghost.pk))
                .afirst()
            )
            assert event is not None and event.actor.username == "olga"
            assert event.reason == "spread too wide on the test desk"
            assert event.before["enabled"] is True and event.after["enabled"] is False
            assert not (await Ghost.objects.aget(pk=ghost.pk)).enabled

            # And back: the hidden field flipped, so the same button now enables.
            await operator.fill(f"{row} input.reason", "spread normal again")
            await operator.click(f"{row} .toggle-btn")
            await expect(watcher.locator(f"{row} .ghost-status")).to_have_text("active", timeout=5_000)
            assert await AuditEvent.objects.filter(
                action="ghost.enabled", reason="spread normal again"
            ).aexists()
            assert not errors, errors
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await operator.screenshot(path=str(SCREENSHOT.with_name("screenshot-ghosts.png")))
        finally:
            await browser.close()


async def test_viewer_has_no_toggle_and_forged_requests_are_refused(daphne_url, desk, make_user):
    ghost = desk["ghost"]
    await sync_to_async(make_user)("vera", "viewer")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context()).new_page()
            await login(page, daphne_url, "vera", "/ghosts/")
            await expect(page.locator(f"#ghost-{ghost.pk} .ghost-status")).to_have_text("active")
            await expect(page.locator(".toggle-btn")).to_have_count(0)
            await expect(page.locator("input.reason")).to_have_count(0)
            await expect(page.locator("#role-badge")).to_have_text("viewer")

            # A hand-made POST with a valid CSRF token (the page's own) is still refused: role, not token.
            result = await page.evaluate(
                """async (url) => {
                    const token = document.querySelector('meta[name="csrf-token"]').content;
                    const body = new FormData();
                    body.append("enabled", "0");
                    body.append("reason", "forged by a viewer");
                    const r = await fetch(url, {method: "POST", body,
                        headers: {"X-CSRFToken": token, "Accept": "application/json"}});
                    return {status: r.status, body: await r.json()};
                }""",
                f"/ghosts/{ghost.pk}/toggle/",
            )
            assert result["status"] == 403, result
            assert "operator" in result["body"]["error"]

            # The websocket command is refused too, and the refusal shows as a toast.
            await page.evaluate(
                "(id) => window.hftDesk.send({action: 'ghost.toggle', ghost_id: id, enabled: false,"
                " reason: 'forged'})",
                ghost.pk,
            )
            await expect(page.locator("#toasts .toast.error")).to_contain_text("only operators")

            assert (await Ghost.objects.aget(pk=ghost.pk)).enabled
            assert not await AuditEvent.objects.filter(action__startswith="ghost.dis").aexists()
        finally:
            await browser.close()


def _seed_overview(desk) -> dict:
    """An hour and a half of a desk's life: candles, trades with markers, signals with every kind of fate."""
    from apps.revenue.services import revenue_target_set
    from tests.factories import (
        make_candles,
        make_feed,
        make_ghost,
        make_instrument,
        make_position,
        make_signal,
    )

    inst, fader = desk["instrument"], desk["ghost"]
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=150)
    candles = make_candles(instrument=inst, start=start, n=150, first=65000.0, seed=11)
    last = candles[-1]
    make_feed(
        instrument=inst,
        state="connected",
        source="sim",
        last_price=str(last.close),
        last_trade_at=last.open_time + timedelta(seconds=50),
    )
    eth = make_instrument(symbol="ETH/USDT")
    make_feed(
        instrument=eth,
        state="reconnecting",
        source="live",
        last_price="3412.55",
        last_error="NetworkError: binance GET /api/v3/exchangeInfo timed out after 10000 ms",
        next_retry_at=datetime.now(UTC) + timedelta(seconds=40),
    )
    second = make_ghost(name="fader-btc-slow", instrument=inst)

    def px(i: int):
        return str(candles[i].close)

    make_position(
        ghost=fader, opened_at=candles[20].open_time, side="short", entry=px(20), exit=px(31), qty="0.05"
    )
    make_position(
        ghost=second,
        opened_at=candles[45].open_time,
        side="long",
        entry=px(45),
        exit=px(60),
        qty="0.05",
        exit_reason="stop",
    )
    make_position(
        ghost=fader, opened_at=candles[80].open_time, side="long", entry=px(80), exit=px(101), qty="0.05"
    )
    make_position(ghost=second, opened_at=candles[130].open_time, side="long", entry=px(130), qty="0.05")
    make_signal(
        ghost=fader,
        bar_time=candles[140].open_time,
        side="short",
        confidence="0.64",
        entry=px(140),
        fate="position_open",
        reason="1.3% up-spike in 11 min faded; volume 3.1x median",
        fate_detail="ghost already holds a position; not reversed",
    )
    make_signal(
        ghost=second,
        bar_time=candles[145].open_time,
        side="long",
        confidence="0.71",
        entry=px(145),
        fate="blocked_trend",
        reason="1.5% down-spike in 14 min; trend filter says STRONG_DOWN",
    )
    revenue_target_set(ghost_id=None, amount="150", period="day", actor=None)
    revenue_target_set(ghost_id=fader.pk, amount="60", period="day", actor=None)
    return {"instrument": inst, "eth": eth, "fader": fader, "second": second, "last": last}


async def test_overview_updates_live_and_screenshot(daphne_url, desk, make_user):
    seeded = await sync_to_async(_seed_overview)(desk)
    inst, eth, fader = seeded["instrument"], seeded["eth"], seeded["fader"]
    await sync_to_async(make_user)("olga", "operator")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1440, "height": 1000})
            page = await context.new_page()
            errors = collect_js_errors(page)
            await login(page, daphne_url, "olga", "/")
            await expect(page.locator("#price-chart .main-svg").first).to_be_attached(timeout=WS_TIMEOUT)
            bars = "document.getElementById('price-chart').data[0].x.length"
            assert await page.evaluate(bars) == 150
            await expect(page.locator("#mode-badge")).to_have_text("PAPER")
            await expect(page.locator(f'[data-feed-id="{eth.pk}"] .feed-error')).to_contain_text("timed out")

            await push(
                inst.group_name,
                {
                    "type": "market.tick",
                    "instrument_id": inst.pk,
                    "symbol": "BTC/USDT",
                    "price": 65432.1,
                    "ts": datetime.now(UTC).isoformat(),
                },
            )
            await expect(page.locator("#last-price")).to_have_text("65,432.10")
            await expect(page.locator(f'[data-feed-id="{inst.pk}"] .feed-price')).to_have_text("65,432.10")

            new_bar = seeded["last"].open_time + timedelta(minutes=1)
            await push(
                inst.group_name,
                {
                    "type": "bar.closed",
                    "instrument_id": inst.pk,
                    "open_time": new_bar.isoformat(),
                    "open": 65400.0,
                    "high": 65480.0,
                    "low": 65390.0,
                    "close": 65432.1,
                    "volume": 12.5,
                },
            )
            await page.wait_for_function(f"{bars} === 151")

            await push(
                "signals",
                {
                    "type": "signal.created",
                    "id": 990001,
                    "ghost_id": fader.pk,
                    "ghost": fader.name,
                    "bar_time": new_bar.isoformat(),
                    "side": "long",
                    "confidence": 0.78,
                    "entry": 65432.1,
                    "stop": 64900.0,
                    "target": 65955.0,
                    "reason": "1.2% down-spike in 9 min faded <b>not bold</b>",
                    "fate": "pending",
                    "fate_detail": "",
                },
            )
            first = page.locator("#signals li.signal").first
            await expect(first).to_have_id("signal-990001")
            await expect(first.locator(".sig-reason")).to_have_text(
                "1.2% down-spike in 9 min faded <b>not bold</b>"
            )
            await push(
                "signals",
                {
                    "type": "signal.updated",
                    "id": 990001,
                    "ghost_id": fader.pk,
                    "ghost": fader.name,
                    "bar_time": new_bar.isoformat(),
                    "side": "long",
                    "confidence": 0.78,
                    "entry": 65432.1,
                    "stop": 64900.0,
                    "target": 65955.0,
                    "reason": "1.2% down-spike in 9 min faded",
                    "fate": "taken",
                    "fate_detail": "filled 0.05 @ 65440",
                },
            )
            await expect(first.locator(".sig-fate")).to_have_text("taken")

            await push(
                "portfolio",
                {
                    "type": "pnl.updated",
                    "equity": 10123.456,
                    "today_pnl": 123.45,
                    "realised_today": 100.0,
                    "unrealised": 23.45,
                    "open_positions": 1,
                    "day": new_bar.date().isoformat(),
                    "ghosts": {str(fader.pk): 30.0},
                },
            )
            await expect(page.locator("#equity")).to_have_text("10,123.46")
            await expect(page.locator("#today-pnl")).to_have_text("+123.45")
            await expect(page.locator("#today-pnl")).to_have_class("num pos")
            await expect(page.locator("#portfolio-target .progress-pct")).to_have_text("82.3%")
            await expect(page.locator("#portfolio-target .progress-pnl")).to_have_text("+123.45")

            await push(
                "feeds",
                {
                    "type": "feed.status",
                    "instrument_id": eth.pk,
                    "state": "connected",
                    "source": "live",
                    "last_price": 3415.0,
                    "last_error": "",
                    "next_retry_at": None,
                },
            )
            await expect(page.locator(f'[data-feed-id="{eth.pk}"] .feed-state')).to_have_text("connected")
            await expect(page.locator(f'[data-feed-id="{eth.pk}"] .feed-error')).to_be_hidden()

            await page.wait_for_timeout(1500)  # let the flash animations settle for the picture
            await page.screenshot(path=str(SCREENSHOT), full_page=True)

            # Fills: a new entry adds a row and a chart marker, its exit removes the row again.
            fill = {
                "type": "trade.filled",
                "position_id": 990002,
                "ghost_id": fader.pk,
                "ghost": fader.name,
                "side": "long",
                "price": 65440.0,
                "quantity": 0.05,
                "fee": 3.27,
                "ts": new_bar.isoformat(),
                "stop": 64900.0,
                "target": 65955.0,
                "exit_reason": "",
                "net_pnl": None,
            }
            markers = "document.getElementById('price-chart').data[1].x.length"
            before_markers = await page.evaluate(markers)
            await push("portfolio", {**fill, "purpose": "entry"})
            await expect(page.locator("#position-990002 td").nth(1)).to_have_text("BTC/USDT")
            assert await page.evaluate(markers) == before_markers + 1
            await push(
                "portfolio",
                {**fill, "purpose": "exit", "price": 65955.0, "exit_reason": "target", "net_pnl": 19.2},
            )
            await expect(page.locator("#position-990002")).to_have_count(0)
            await expect(page.locator("#toasts .toast").last).to_contain_text("closed (target)")

            await push("feeds", {"type": "error", "code": "feed_down", "message": "binance feed lost"})
            await expect(page.locator("#toasts .toast.error")).to_contain_text("binance feed lost")
            assert not errors, errors

            # The same page on a phone: one column, nothing wider than the screen.
            phone = await browser.new_context(
                viewport={"width": 390, "height": 844},
                device_scale_factor=2,
                storage_state=await context.storage_state(),
            )
            mobile = await phone.new_page()
            await mobile.goto(daphne_url + "/")
            await expect(mobile.locator("#ws-state")).to_have_text("live", timeout=WS_TIMEOUT)
            await expect(mobile.locator("#price-chart .main-svg").first).to_be_attached()
            overflow = await mobile.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 1, f"page is {overflow}px wider than a phone screen"
            await mobile.wait_for_timeout(500)
            await mobile.screenshot(path=str(SCREENSHOT_PHONE), full_page=False)
        finally:
            await browser.close()
    assert SCREENSHOT.stat().st_size > 20_000


async def test_state_snapshot_catches_up_after_reconnect(daphne_url, desk, make_user):
    """A toggle made while this browser's socket was down shows once it reconnects (catch-up from the DB)."""
    from apps.ghosts.services import ghost_set_enabled

    ghost = desk["ghost"]
    user = await sync_to_async(make_user)("olga", "operator")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context()).new_page()
            await login(page, daphne_url, "olga", "/ghosts/")
            context = page.context
            await context.set_offline(True)  # drops the websocket
            await expect(page.locator("#ws-state")).to_have_text("offline", timeout=WS_TIMEOUT)
            await sync_to_async(ghost_set_enabled)(
                ghost_id=ghost.pk, enabled=False, actor=user, reason="while you were away"
            )
            await context.set_offline(False)
            await expect(page.locator("#ws-state")).to_have_text("live", timeout=20_000)
            await expect(page.locator(f"#ghost-{ghost.pk} .ghost-status")).to_have_text("disabled")
            await expect(page.locator(f"#ghost-{ghost.pk} .toggle-btn")).to_have_text("Enable")
        finally:
            await browser.close()
