"""desk.js reconnects with a backoff capped at about 5 s (issue 12 leftover; it was 15 s, so a desk that make run had
restarted in two seconds still looked dead on an open page for up to 19 s).

A real Chromium on a page served by Daphne. After login, the page's WebSocket is replaced by one that never
connects (closes at once, 1006, as when the server is down), and Playwright's fake clock runs two minutes of the
page's time in a moment: every attempt's time is recorded by the page's own (faked) clock.
"""

from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from tests.conftest import CHROMIUM, CHROMIUM_ARGS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
]

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")

CAP_MS = 5000
JITTER = 1.25  # desk.js multiplies each delay by 0.75..1.25

# A WebSocket that fails like a server that is down: constructed, then closed (1006) without ever opening.
DEAD_SOCKET = """
window.__wsAttempts = [];
window.WebSocket = class {
  constructor(url) {
    window.__wsAttempts.push(Date.now());
    this.readyState = 0; this.listeners = {};
    setTimeout(() => { this.readyState = 3; (this.listeners.close || []).forEach((f) => f({ code: 1006 })); }, 10);
  }
  addEventListener(type, fn) { (this.listeners[type] = this.listeners[type] || []).push(fn); }
  close() {}
  send() {}
};
window.WebSocket.CLOSED = 3;
"""


async def test_reconnect_attempts_come_at_most_about_5_s_apart(daphne_url, desk, make_user):
    from tests.browser.test_desk_browser import collect_js_errors, login

    await sync_to_async(make_user)("vera", "viewer")
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context()
            page = await context.new_page()
            errors = collect_js_errors(page)
            await login(page, daphne_url, "vera", "/")  # the real socket first: the page works
            await context.add_init_script(DEAD_SOCKET)
            await page.clock.install()
            await page.reload()
            await playwright_api.expect(page.locator("#ws-state")).to_have_text("offline")
            await page.clock.run_for(120_000)
            times = await page.evaluate("window.__wsAttempts")
            gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
            print(f"\nreconnect gaps over 120 s of page time (ms): {gaps}")
            assert len(times) >= 120_000 / (CAP_MS * JITTER), f"only {len(times)} attempts in 120 s: {gaps}"
            assert max(gaps) <= CAP_MS * JITTER + 50, gaps  # + the fake socket's own 10 ms
            assert gaps[0] <= 500 * JITTER + 50  # the first retry comes at once
            assert max(gaps) >= CAP_MS * 0.75  # backoff still grows to the cap: no reconnect storm
            assert not [e for e in errors if "WebSocket" not in e], errors
        finally:
            await browser.close()
