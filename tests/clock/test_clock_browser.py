"""The header clock in a real Chromium (issue 14, one clock): it shows the desk's data time (months from the wall
here, as under a replay) and the wall time on a page with no chart, and moves with the ticks pushed over the
websocket, through the real channel layer, as the feeds push them; a feed status naming another source, with a
newer trade, takes the clock over (the newest trade of any feed sets it, as apps.common.clock does)."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from tests.conftest import CHROMIUM, CHROMIUM_ARGS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),  # Daphne reads the same file DB
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
]

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
async_playwright, expect = playwright_api.async_playwright, playwright_api.expect
DATA = datetime(2026, 3, 2, 21, 55, 30, tzinfo=UTC)


def _seed(desk) -> dict:
    from apps.market.models import Instrument
    from tests.factories import make_feed

    make_feed(instrument=desk["instrument"], source="sim", last_price="100", last_trade_at=DATA)
    eth = Instrument.objects.create(exchange=desk["exchange"], symbol="ETH/USDT", base="ETH", quote="USDT")
    make_feed(instrument=eth, source="sim", last_price="3000", last_trade_at=DATA - timedelta(days=1))
    return {"btc": desk["instrument"], "eth": eth}


def _tick(inst, ts: datetime, price: float) -> dict:
    return {"type": "market.tick", "instrument_id": inst.pk, "symbol": inst.symbol, "price": price,
            "ts": ts.isoformat()}


async def test_header_clock_moves_with_pushed_ticks(daphne_url, desk, make_user):
    from django.conf import settings

    from tests.browser.test_desk_browser import collect_js_errors, login, push

    seeded = await sync_to_async(_seed)(desk)
    btc, eth = seeded["btc"], seeded["eth"]
    await sync_to_async(make_user)("vera", "viewer")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context()).new_page()
            errors = collect_js_errors(page)
            await login(page, daphne_url, "vera", "/audit/")  # no chart on it: the clock is the header's own
            data, wall = page.locator("#clock-data"), page.locator("#clock-wall")
            await expect(data).to_have_text("03-02 21:55")
            await expect(page.locator("#clock-source")).to_have_text(f"SIM ×{settings.HFT_SIM_SPEED:g}")
            now = datetime.now(UTC)
            assert await wall.inner_text() in {(now + timedelta(minutes=k)).strftime("%m-%d %H:%M") for k in (-1, 0, 1)}
            assert "Wall time drives human actions" in await page.locator("#desk-clock").get_attribute("title")

            # The data clock follows the ticks, into the next data day, whatever the wall says.
            await push(btc.group_name, _tick(btc, DATA + timedelta(hours=2, minutes=10), 101.0))
            await expect(data).to_have_text("03-03 00:05")
            await expect(data).to_have_attribute("datetime", "2026-03-03T00:05:30.000Z")
            # An older trade of another feed does not move it back (the newest trade of any feed sets the clock). The
            # two groups' messages are not ordered for certain, so this is the weaker check; the replay below is not.
            await push(eth.group_name, _tick(eth, DATA - timedelta(hours=5), 3001.0))
            await push(btc.group_name, _tick(btc, DATA + timedelta(hours=2, minutes=11), 101.5))
            await expect(data).to_have_text("03-03 00:06")
            # A replay on ETH with a newer trade: its feed status takes the clock and names its speed.
            status = {"type": "feed.status", "instrument_id": eth.pk, "symbol": eth.symbol, "state": "connected",
                      "source": "replay:/data/ETHUSDT-1m.csv@300", "last_price": 3002.0,
                      "last_trade_at": (DATA + timedelta(days=3)).isoformat(), "last_error": "",
                      "next_retry_at": None, "rejected": {}, "heartbeat_lapsed": False, "silent_s": None}
            await push("feeds", status)
            await expect(data).to_have_text("03-05 21:55")
            await expect(page.locator("#clock-source")).to_have_text("REPLAY ×300")
            # The same replay starting over (an earlier trade on the feed that sets the clock) moves it back.
            await push(eth.group_name, _tick(eth, DATA + timedelta(days=3) - timedelta(hours=1), 3003.0))
            await expect(data).to_have_text("03-05 20:55")
            assert errors == []
        finally:
            await browser.close()
