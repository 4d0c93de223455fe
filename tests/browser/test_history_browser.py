"""The History page in a real Chromium: history.progress events pushed through the real channel layer
(as history_services does) update the download's row live, and a download started elsewhere appears."""

from datetime import UTC, datetime
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from apps.market.history_services import download_payload, history_download_create
from tests.conftest import CHROMIUM, CHROMIUM_ARGS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),  # Daphne reads the same file DB
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
]

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
async_playwright, expect = playwright_api.async_playwright, playwright_api.expect


async def test_progress_events_update_the_rows_live(daphne_url, make_user):
    from tests.browser.test_desk_browser import collect_js_errors, login

    await sync_to_async(make_user)("vera", "viewer")
    create = sync_to_async(history_download_create)
    row = await create(exchange_code="binance", symbol="BTC/USDT", timeframe="1m",
                       since=datetime(2020, 1, 1, tzinfo=UTC), until=datetime(2020, 1, 2, tzinfo=UTC))
    layer = get_channel_layer()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context()).new_page()
            errors = collect_js_errors(page)
            await login(page, daphne_url, "vera", "/history/")
            tr = page.locator(f"#download-{row.pk}")
            await expect(tr.locator(".dl-state")).to_have_text("queued")

            row.state, row.stored = "running", 576
            event = download_payload(row, fraction=0.4)
            await layer.group_send("feeds", {"type": "desk.event", "event": dict(event)})
            await expect(tr.locator(".dl-state")).to_have_text("running")
            await expect(tr.locator(".dl-pct")).to_have_text("40%")
            await expect(tr.locator(".dl-stored")).to_have_text("576")

            gap = ["2020-01-01T10:00:00+00:00", "2020-01-01T10:04:00+00:00", 5]
            row.state, row.stored, row.gaps = "done", 1440, [gap]
            await layer.group_send("feeds", {"type": "desk.event", "event": dict(download_payload(row))})
            await expect(tr.locator(".dl-state")).to_have_text("done")
            await expect(tr.locator(".dl-pct")).to_have_text("100%")
            await expect(tr.locator(".dl-gaps")).to_have_text("1 / 5")

            other = await create(exchange_code="kraken", symbol="BTC/USDT", timeframe="1h",
                                 since=datetime(2024, 1, 30, 15, tzinfo=UTC), until=datetime(2024, 2, 1, tzinfo=UTC))
            payload = await sync_to_async(lambda: dict(download_payload(other)))()
            await layer.group_send("feeds", {"type": "desk.event", "event": payload})
            new = page.locator(f"#download-{other.pk}")
            await expect(new).to_contain_text("kraken:BTC/USDT")
            await expect(new.locator(".dl-state")).to_have_text("queued")
            assert errors == []
        finally:
            await browser.close()
