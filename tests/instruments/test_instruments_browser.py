"""The Instruments page in a real Chromium against Daphne, with a real Celery worker (issue 11): an operator adds
kraken BTC/USDT picked from the cached ccxt markets (parsed by ccxt from the Kraken listing served on 127.0.0.1),
creates a ghost on it, starts its sim feed and sees it connect with a price; a viewer gets the page read-only, and
a forged POST with a valid CSRF token gets 403 and changes nothing. The operator stops the feed and deletes the
instrument through its confirm page (the counts, the name typed): the row, its ghost and its candles are gone."""

import time
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache

from apps.market import markets as mk
from apps.market.models import Candle, FeedStatus, Instrument
from apps.market.tasks import _lock_key
from tests.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.procs import wait_until
from tests.market.fake_exchange import FakeKrakenRest

pytestmark = [
    pytest.mark.browser,
    pytest.mark.services,
    pytest.mark.postgres,  # passes on PostgreSQL too
    pytest.mark.django_db(transaction=True),  # Daphne and the worker read the same file DB
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
]

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
async_playwright, expect = playwright_api.async_playwright, playwright_api.expect
FEED_BOUND_S = 90


@pytest.fixture
def kraken_markets():
    """kraken's markets in the run dir's cache, where Daphne (same RUN_DIR) reads them; the cache is put back after."""
    path = mk.markets_cache_path("kraken")
    before = path.read_bytes() if path.exists() else None
    with FakeKrakenRest({}) as server:
        mk.markets_fetch("kraken", config={"urls": {"api": server.urls()}, "enableRateLimit": False})
    yield
    if before is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(before)


async def test_operator_adds_instrument_and_ghost_and_starts_its_feed_viewer_cannot(
        daphne_url, celery_workers, desk, make_user, kraken_markets):
    from tests.browser.test_desk_browser import collect_js_errors, login

    assert Path(settings.RUN_DIR).exists()
    await sync_to_async(make_user)("olga", "operator")
    await sync_to_async(make_user)("vera", "viewer")
    inst_id = None
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context()).new_page()
            errors = collect_js_errors(page)
            await login(page, daphne_url, "olga", "/instruments/?exchange=kraken")
            await page.fill("#id_symbol", "BTC/USDT")
            await page.click("#instrument-add-btn")
            row = page.locator('tr[data-symbol="kraken:BTC/USDT"]')
            await expect(row).to_contain_text("spot")
            await expect(row.locator(".feed-state")).to_have_text("no feed")
            inst = await Instrument.objects.aget(exchange__code="kraken", symbol="BTC/USDT")
            inst_id = inst.pk
            assert str(inst.price_tick.normalize()) == "0.1"
            await expect(row).to_contain_text("0.0001")  # the minimum quantity from ccxt's market

            await page.fill("#id_ghost_name", "fader-kraken")
            await page.select_option("#id_ghost_kind", "spike_fader")
            await page.select_option("#id_ghost_instrument", str(inst_id))
            await page.fill("#id_ghost_params", '{"spike_threshold_pct": 1.5}')
            await page.click("#ghost-add-btn")
            ghost_row = page.locator('tr[data-ghost-name="fader-kraken"]')
            await expect(ghost_row).to_contain_text("kraken:BTC/USDT")
            await expect(ghost_row).to_contain_text("disabled")

            row = page.locator('tr[data-symbol="kraken:BTC/USDT"]')
            await row.locator("select[name=kind]").select_option("sim")
            await row.locator(".feed-start").click()
            await expect(row.locator(".feed-state")).to_have_text("starting")
            started = time.monotonic()
            # no reload: the feed's status and ticks reach the open page over its socket (desk.js, data-feed-id)
            try:
                await expect(row.locator(".feed-state")).to_have_text("connected", timeout=FEED_BOUND_S * 1000)
            except AssertionError as exc:  # say which side failed: the runner (database) or the push (page)
                fs = await FeedStatus.objects.aget(instrument_id=inst_id)
                lock = await sync_to_async(cache.get)(_lock_key(inst_id))
                raise AssertionError(f"the page still says starting; the database says {fs.state} "
                                     f"(last price {fs.last_price}, error {fs.last_error!r}); runner lock "
                                     f"{'held' if lock else 'not held'}") from exc
            print(f"\nkraken BTC/USDT sim feed connected after {time.monotonic() - started:.1f} s wall")
            await expect(row.locator(".feed-price")).not_to_be_empty(timeout=FEED_BOUND_S * 1000)
            assert float((await row.locator(".feed-price").text_content()).replace(",", "")) > 0
            assert errors == []

            # the viewer: read-only page, and a forged POST with a valid CSRF token is refused
            viewer_ctx = await browser.new_context()
            vpage = await viewer_ctx.new_page()
            await login(vpage, daphne_url, "vera", "/instruments/")
            await expect(vpage.locator('tr[data-symbol="kraken:BTC/USDT"] .feed-state')).to_have_text("connected")
            assert await vpage.locator("#instrument-add").count() == 0
            assert await vpage.locator(".feed-form").count() == 0
            assert await vpage.locator("#ghost-add").count() == 0
            token = next(c["value"] for c in await viewer_ctx.cookies() if c["name"] == "csrftoken")
            headers = {"X-CSRFToken": token, "Referer": daphne_url + "/instruments/"}
            for url, form in ((f"/instruments/{inst_id}/feed/", {"action": "stop"}),
                              ("/instruments/", {"exchange": "kraken", "symbol": "BTC/USDT"}),
                              ("/instruments/ghosts/", {"name": "x", "kind": "spike_fader", "instrument": inst_id})):
                resp = await vpage.request.post(daphne_url + url, form=form, headers=headers)
                assert resp.status == 403, (url, resp.status)
            resp = await vpage.request.post(daphne_url + f"/instruments/{inst_id}/delete/",
                                            form={"confirm": "kraken:BTC/USDT", "token": "x"}, headers=headers)
            assert resp.status == 403 and await Instrument.objects.filter(pk=inst_id).aexists()
            assert await vpage.locator(".instrument-delete").count() == 0  # no Delete link for a viewer
            fs = await FeedStatus.objects.aget(instrument_id=inst_id)
            assert fs.state == "connected" and fs.source == "sim"

            # the operator stops it from the page
            await page.reload()
            await row.locator(".feed-stop").click()
            await expect(row.locator(".feed-state")).to_have_text("stopped")

            # and deletes the instrument: the confirm page refuses while the runner still holds its lock (about a
            # second after the stop), then counts what goes and wants the name typed
            await sync_to_async(wait_until)(lambda: cache.get(_lock_key(inst_id)) is None, FEED_BOUND_S,
                                            "the stopped runner to let go of its lock")
            await row.locator(".instrument-delete").click()
            await expect(page.locator("h1")).to_have_text("Delete kraken:BTC/USDT")
            await expect(page.locator('#delete-counts tr[data-what="ghost instances"] td.num')).to_have_text("1")
            candles = await Candle.objects.filter(instrument_id=inst_id).acount()
            assert candles > 0  # the sim feed's bars, warm-up included
            for _ in range(3):
                await page.fill("#id_confirm", "kraken:BTC/USDT")
                await page.fill("#id_reason", "browser test")
                async with page.expect_navigation():  # the POST's answer: the list (302) or this page again (400)
                    await page.click("#instrument-delete-btn")
                # a bar the stopping runner stored after the page was drawn: the page shows the new counts and
                # asks again (the designed flow), so confirm again
                if await page.locator("#delete-error").count() == 0:
                    break
                assert "changed since the page was shown" in await page.locator("#delete-error").text_content()
            await expect(page.locator(".messages")).to_contain_text("kraken:BTC/USDT deleted with")
            assert page.url.endswith("/instruments/")
            await expect(page.locator('tr[data-symbol="kraken:BTC/USDT"]')).to_have_count(0)
            await expect(page.locator('tr[data-ghost-name="fader-kraken"]')).to_have_count(0)
            assert not await Instrument.objects.filter(pk=inst_id).aexists()
            assert not await Candle.objects.filter(instrument_id=inst_id).aexists()
            assert errors == []
        finally:
            await browser.close()
            if inst_id is not None:  # never leave a feed running past the test
                await sync_to_async(cache.delete)(_lock_key(inst_id))
