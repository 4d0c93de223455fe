"""The equity page in a real Chromium (issue 14): the plotly equity curve with its drawdown panel is drawn from
the page's data (the lab's chart data, plotly served locally), the profit table is there, and no JS error."""

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
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _trades(desk) -> None:
    from tests.factories import make_feed, make_position

    make_feed(instrument=desk["instrument"], last_trade_at=T0 + timedelta(days=6))
    for d, exit_ in enumerate(("103", "99", "104", "98", "101")):
        make_position(ghost=desk["ghost"], opened_at=T0 + timedelta(days=d), entry="100", exit=exit_)


def _open_one(desk) -> None:
    from tests.factories import make_position

    make_position(ghost=desk["ghost"], opened_at=T0 + timedelta(days=5, hours=2), entry="100")


async def test_equity_page_draws_the_curve_and_drawdown(daphne_url, make_user, desk):
    from tests.browser.test_desk_browser import collect_js_errors, login

    await sync_to_async(make_user)("vera", "viewer")
    await sync_to_async(_trades)(desk)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context()).new_page()
            errors = collect_js_errors(page)
            await login(page, daphne_url, "vera", "/equity/?window=30d&by=day")
            chart = page.locator("#equity-chart")
            await expect(chart).to_have_attribute("data-drawn", "1")
            # Two plotly panels (equity above, drawdown beneath), each with its line drawn.
            await expect(chart.locator(".main-svg .scatterlayer .trace")).to_have_count(2)
            await expect(chart.locator("g.subplot.xy2")).to_have_count(1)
            await expect(page.locator("#profit-table tbody tr")).to_have_count(5)  # one row per closing day
            # An open position: the header's equity now is a third trace (a marker), off the realised curve.
            await sync_to_async(_open_one)(desk)
            await page.reload()
            await expect(chart).to_have_attribute("data-drawn", "1")
            await expect(chart.locator(".main-svg .scatterlayer .trace")).to_have_count(3)
            assert errors == []
        finally:
            await browser.close()
