"""Logging out in one tab sends the other tabs of that session to the login page: the server closes their
sockets with 4401 and desk.js reloads instead of retrying a socket that would be refused forever."""

from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from tests.browser.test_desk_browser import WS_TIMEOUT, collect_js_errors, login
from tests.conftest import CHROMIUM, CHROMIUM_ARGS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
async_playwright, expect = playwright_api.async_playwright, playwright_api.expect


async def test_logout_in_one_tab_sends_the_others_to_the_login_page(daphne_url, desk, make_user):
    await sync_to_async(make_user)("vera", "viewer")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context()
            first = await context.new_page()
            errors = collect_js_errors(first)
            await login(first, daphne_url, "vera", "/")
            await expect(first.locator("#ws-state")).to_have_text("live", timeout=WS_TIMEOUT)
            second = await context.new_page()  # the same session (one context = one cookie jar)
            await second.goto(f"{daphne_url}/ghosts/")
            await expect(second.locator("#ws-state")).to_have_text("live", timeout=WS_TIMEOUT)
            await second.click("form.logout button[type=submit]")
            await second.wait_for_url("**/accounts/login/**")
            # the first tab did nothing: its socket was closed by the server, and the page reloaded to the login
            await first.wait_for_url("**/accounts/login/**", timeout=WS_TIMEOUT)
            await expect(first.locator("input[name=username]")).to_be_visible()
            assert not [e for e in errors if "WebSocket" not in e], errors
        finally:
            await browser.close()
