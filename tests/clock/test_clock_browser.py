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


def _seed_day(desk) -> dict:
    """Data day 2 March: a close at 23:50 (+1.598 net) and a long of 0.5 BTC open at 97,331; the feed's last trade
    at 23:58 at that price."""
    from apps.ghosts.services import ghost_create
    from tests.factories import make_feed, make_position

    at = datetime(2026, 3, 2, 23, 58, tzinfo=UTC)
    make_feed(instrument=desk["instrument"], source="sim", last_price="97331", last_trade_at=at)
    make_position(ghost=desk["ghost"], opened_at=at - timedelta(minutes=30), entry="100", qty="2", exit="101",
                  closed_at=at - timedelta(minutes=8))
    other = ghost_create(name="fader-btc-2", kind="spike_fader", instrument=desk["instrument"], enabled=True)
    make_position(ghost=other, opened_at=at - timedelta(hours=1), entry="97331", qty="0.5")
    return {"at": at}


def _feed_step(feed, wall: list, at: datetime, price: float, n: int) -> None:
    """One runner loop of the real pipeline, as the sim/replay/live runners do (a trade in, the publish step)."""
    from apps.market.bar_builder import Trade

    wall[0] += 1.5
    ms = int(at.timestamp() * 1000)
    feed.refresh_positions()
    feed.consume([Trade(ts_ms=ms, price=price, amount=0.01, side="sell", id=str(n))], now_ms=ms)
    feed.publish()


async def test_today_follows_the_marks_and_the_data_day_without_a_reload(daphne_url, desk, make_user):
    """The QA findings under HFT_SIM_SPEED=120: the header's Today sat still while the price moved 97,331 -> 97,130
    with a position open, and kept 12-05's figure and day after the data reached 12-06. The feed's publish step
    pushes pnl.updated (apps.runtime.pipeline): the header, the overview's card and its "day …" label follow."""
    from django.conf import settings

    from apps.runtime.pipeline import FeedPipeline
    from tests.browser.test_desk_browser import collect_js_errors, login

    seeded = await sync_to_async(_seed_day)(desk)
    await sync_to_async(make_user)("vera", "viewer")
    wall = [1000.0]
    feed = FeedPipeline(desk["instrument"], on_bar=None, has_liquidations=False, wall_clock=lambda: wall[0])
    # fee 0.1%: the close nets 2 - 0.402 = +1.598; the open long's entry fee 48.6655
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context()).new_page()
            risk = await (await browser.new_context()).new_page()  # the daily-loss gauge, open beside it
            errors = collect_js_errors(page) + collect_js_errors(risk)
            await login(page, daphne_url, "vera", "/")
            await login(risk, daphne_url, "vera", "/risk/")
            start = float(settings.HFT_START_CAPITAL)
            await expect(risk.locator("#loss-day-start-equity")).to_have_text(f"{start:,.2f}")
            header, day = page.locator("#today-pnl"), page.locator("#pnl-day")
            card = page.locator('.card [data-pnl-field="today_pnl"]')
            await expect(day).to_have_text("2026-03-02")
            await expect(header).to_have_text("−47.07")  # 1.598 - 48.6655
            assert "data time 2026-03-02" in await page.locator("#today-stat").get_attribute("title")

            # 97,331 -> 97,130 on the same data day: marked to market, no fill, no reload.
            await sync_to_async(_feed_step)(feed, wall, seeded["at"] + timedelta(seconds=30), 97130.0, 1)
            await expect(header).to_have_text("−147.57")  # 1.598 - 48.6655 - 100.5
            await expect(card).to_have_text("−147.57")
            await expect(page.locator('[data-pnl-field="unrealised"]')).to_have_text("−149.17")
            equity = start + 1.598 - 48.6655 - 100.5
            await expect(page.locator("#equity")).to_have_text(f"{equity:,.2f}")

            # Data 03-03 00:00:30: a new trading day. Today is the open long's marks alone; the day names follow.
            await sync_to_async(_feed_step)(feed, wall, datetime(2026, 3, 3, 0, 0, 30, tzinfo=UTC), 97130.0, 2)
            await expect(day).to_have_text("2026-03-03")
            await expect(header).to_have_text("−149.17")
            await expect(card).to_have_text("−149.17")
            await expect(page.locator('[data-pnl-field="realised_today"]')).to_have_text("0.00")
            title = await page.locator("#today-stat").get_attribute("title")
            assert "data time 2026-03-03" in title and "2026-03-02" not in title
            # The risk page's gauge: today's loss and the day's starting equity (2 March's close now in it).
            await expect(risk.locator("#risk-today-pnl")).to_have_text("−149.17")
            await expect(risk.locator("#loss-day-start-equity")).to_have_text(f"{start + 1.598:,.2f}")
            assert errors == []
        finally:
            await browser.close()
