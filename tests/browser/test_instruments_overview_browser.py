"""Issue 11's last views in a real Chromium against Daphne: with two instruments the overview lists both feeds with
their state and price, the chart's instrument selector switches the chart (candles of the chosen one, and its live
bars only) and the signals list, and the trades page filtered by instrument shows only that instrument's trades.
Live events go through the real channel layer as services send them."""

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


def _seed(desk) -> dict:
    from tests.factories import make_candles, make_feed, make_ghost, make_instrument, make_position

    btc, fader = desk["instrument"], desk["ghost"]
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=60)
    btc_bars = make_candles(instrument=btc, start=start, n=60, first=65000.0, seed=3)
    eth = make_instrument(symbol="ETH/USDT")
    eth_bars = make_candles(instrument=eth, start=start, n=40, first=3400.0, seed=4)
    make_feed(instrument=btc, state="connected", source="sim", last_price="65001.5")
    make_feed(instrument=eth, state="reconnecting", source="sim", last_price="3412.55")
    eth_fader = make_ghost(name="fader-eth", instrument=eth)
    btc_trades = [make_position(ghost=fader, opened_at=btc_bars[i].open_time, entry=str(btc_bars[i].close),
                                exit=str(btc_bars[i + 5].close), qty="0.01") for i in (5, 20)]
    eth_trades = [make_position(ghost=eth_fader, opened_at=eth_bars[i].open_time, entry=str(eth_bars[i].close),
                                exit=str(eth_bars[i + 3].close), qty="0.5") for i in (10, 25)]
    return {"btc": btc, "eth": eth, "fader": fader, "eth_fader": eth_fader, "btc_trades": btc_trades,
            "eth_trades": eth_trades, "eth_last": eth_bars[-1], "btc_last": btc_bars[-1]}


def _bar(inst, open_time: datetime, close: float) -> dict:
    return {"type": "bar.closed", "instrument_id": inst.pk, "open_time": open_time.isoformat(), "open": close,
            "high": close, "low": close, "close": close, "volume": 1.0}


def _signal(sid: int, ghost, bar_time: datetime) -> dict:
    return {"type": "signal.created", "id": sid, "ghost_id": ghost.pk, "ghost": ghost.name,
            "bar_time": bar_time.isoformat(), "side": "long", "confidence": 0.7, "entry": 1.0, "stop": 0.9,
            "target": 1.1, "reason": "pushed", "fate": "pending", "fate_detail": ""}


async def test_overview_feeds_chart_selector_and_trades_filter(daphne_url, desk, make_user):
    from tests.browser.test_desk_browser import collect_js_errors, login, push

    s = await sync_to_async(_seed)(desk)
    btc, eth = s["btc"], s["eth"]
    await sync_to_async(make_user)("vera", "viewer")
    bars = "document.getElementById('price-chart').data[0].x.length"
    last_close = "(() => { const c = document.getElementById('price-chart').data[0].close; return c[c.length - 1]; })()"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context(viewport={"width": 1440, "height": 1000})).new_page()
            errors = collect_js_errors(page)
            await login(page, daphne_url, "vera", "/")
            for inst, state, price in ((btc, "connected", "65,001.50"), (eth, "reconnecting", "3,412.55")):
                card = page.locator(f'[data-feed-id="{inst.pk}"]')
                await expect(card).to_contain_text(inst.symbol)
                await expect(card.locator(".feed-state")).to_have_text(state)
                await expect(card.locator(".feed-price")).to_have_text(price)

            await expect(page.locator("#price-chart .main-svg").first).to_be_attached(timeout=10_000)
            assert await page.evaluate(bars) == 60  # BTC/USDT, the first instrument, by default
            assert await page.evaluate(last_close) > 10_000

            # desk.js fetches the form's answer and swaps the chart and signals cards in: no page load, the
            # socket stays (a reload would lose the marker and open a second socket).
            await page.evaluate("window.__samePage = 1")
            await page.select_option("#chart-instrument", str(eth.pk))
            await page.wait_for_url(f"{daphne_url}/?instrument={eth.pk}")
            await expect(page.locator(".chart-card h2")).to_contain_text("ETH/USDT")
            assert await page.evaluate("window.__samePage") == 1
            await expect(page.locator("#ws-state")).to_have_text("live", timeout=10_000)
            await expect(page.locator(".chart-card h2")).to_contain_text("ETH/USDT")
            await expect(page.locator("#price-chart .main-svg").first).to_be_attached(timeout=10_000)
            assert await page.evaluate(bars) == 40
            assert await page.evaluate(last_close) < 10_000

            # Live: a BTC bar does not land on the ETH chart; the next ETH bar does. Same for signals.
            await push(btc.group_name, _bar(btc, s["btc_last"].open_time + timedelta(minutes=1), 65100.0))
            await push("signals", _signal(990101, s["fader"], s["btc_last"].open_time))
            await push(eth.group_name, _bar(eth, s["eth_last"].open_time + timedelta(minutes=1), 3420.0))
            await push("signals", _signal(990102, s["eth_fader"], s["eth_last"].open_time))
            await page.wait_for_function(f"{bars} === 41")
            assert await page.evaluate(last_close) == 3420.0
            await expect(page.locator("#signal-990102")).to_be_attached()
            assert await page.locator("#signal-990101").count() == 0

            await page.goto(daphne_url + "/trades/")
            await page.select_option("#id_instrument", str(eth.pk))
            await page.click(".filters button[type=submit]")
            await page.wait_for_url(f"**/trades/?*instrument={eth.pk}*")
            rows = page.locator("#trades tbody tr")
            await expect(rows).to_have_count(2)
            for t in s["eth_trades"]:
                await expect(page.locator(f"#trade-{t.pk}")).to_contain_text("ETH/USDT")
            for t in s["btc_trades"]:
                assert await page.locator(f"#trade-{t.pk}").count() == 0
            assert not errors, errors
        finally:
            await browser.close()
