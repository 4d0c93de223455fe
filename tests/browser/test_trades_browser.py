"""The trades page in a real Chromium against a live Daphne: the keyset pager's links (older, newer, newest) walk
every row once with the filters kept, and the CSV link downloads the filtered export streamed through ASGI."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from tests.browser.test_desk_browser import collect_js_errors, login
from tests.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.factories import make_position

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),  # Daphne reads the same file DB
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
async_playwright, expect = playwright_api.async_playwright, playwright_api.expect

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def _ledger(ghost) -> list[str]:
    made = [make_position(ghost=ghost, opened_at=T0 + timedelta(minutes=i), side="long" if i % 2 else "short",
                          entry="100", exit="101") for i in range(120)]
    return [str(p.pk) for p in reversed(made)]


async def _ids(page) -> list[str]:
    return [i.removeprefix("trade-") for i in await page.locator("#trades tbody tr").evaluate_all(
        "rows => rows.map(r => r.id)")]


async def test_pager_links_walk_the_trades_and_the_csv_keeps_the_filter(daphne_url, desk, make_user, tmp_path):
    newest_first = await sync_to_async(_ledger)(desk["ghost"])
    await sync_to_async(make_user)("vera", "viewer")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context(accept_downloads=True)).new_page()
            errors = collect_js_errors(page)
            await login(page, daphne_url, "vera", "/trades/")
            seen = await _ids(page)
            assert len(seen) == 50
            await expect(page.locator("a[rel=prev]")).to_have_count(0)
            for expected in (50, 20):
                await page.click("a[rel=next]")
                await expect(page.locator("a[rel=first]")).to_be_visible()
                got = await _ids(page)
                assert len(got) == expected
                seen += got
            assert seen == newest_first  # every trade once, newest first
            await expect(page.locator("a[rel=next]")).to_have_count(0)
            await page.click("a[rel=prev]")
            assert await _ids(page) == newest_first[50:100]
            await page.click("a[rel=first]")
            assert await _ids(page) == newest_first[:50]

            # A filter through the form; the older link keeps it, and the CSV link carries it (never the cursor).
            await page.select_option("#id_side", "long")
            await page.click("form.filters button[type=submit]")
            await page.click("a[rel=next]")
            assert "side=long" in page.url and "before=" in page.url
            assert len(await _ids(page)) == 10
            async with page.expect_download() as info:
                await page.click("#csv-link")
            download = await info.value
            path = tmp_path / "trades.csv"
            await download.save_as(path)
            lines = path.read_text().splitlines()
            assert lines[0].startswith("id,opened_at") and len(lines) == 61
            assert {line.split(",")[5] for line in lines[1:]} == {"long"}
            assert not errors, errors
        finally:
            await browser.close()
