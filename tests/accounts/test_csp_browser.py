"""The Content-Security-Policy in a real Chromium against a live Daphne: the pages the browser suite does not
already watch for console errors (it watches the overview, ghosts, risk, history, lab and research pages, plotly
charts included) work under it with no violation, the websocket goes live (connect-src), and an injected
inline handler, the usual XSS payload, does not run."""

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
async_playwright, expect = playwright_api.async_playwright, playwright_api.expect

RECORD_VIOLATIONS = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
    (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`));
"""

PAGES = ["/trades/", "/targets/", "/alerts/", "/audit/", "/admin/", "/admin/auth/user/", "/admin/password_change/"]


async def test_pages_work_under_the_policy_and_injected_script_does_not_run(daphne_url, desk, make_user):
    from tests.browser.test_desk_browser import collect_js_errors, login

    user = await sync_to_async(make_user)("olga", "operator")
    user.is_staff = user.is_superuser = True
    await user.asave()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context()).new_page()
            await page.add_init_script(RECORD_VIOLATIONS)
            errors = collect_js_errors(page)
            failed = []  # which resource a "Failed to load resource" console error was about
            page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            await login(page, daphne_url, "olga", "/")  # waits for the websocket to go live
            for path in PAGES + [f"/admin/auth/user/{user.pk}/change/"]:
                response = await page.goto(daphne_url + path)
                assert response.status == 200, path
                assert "script-src 'self'" in response.headers["content-security-policy"]
                await page.wait_for_load_state("load")
                assert await page.evaluate("window.__csp") == [], path
            # A 404 the browser logs for a request of its own (not the page's) never reaches `failed`; every page
            # resource does. /favicon.ico itself answers 200 (tests/test_readme_commands.py).
            errors = [e for e in errors if "status of 404" not in e]
            assert errors == [] and failed == [], (errors, failed)

            await page.goto(daphne_url + "/ghosts/")
            await page.evaluate("""() => {
                const div = document.createElement("div");
                div.innerHTML = '<img src="/no-such.png" onerror="window.__pwned = 1">';
                document.body.appendChild(div);
            }""")
            await page.wait_for_function("window.__csp.length > 0")
            assert await page.evaluate("window.__pwned") is None
            assert any(v.startswith("script-src") for v in await page.evaluate("window.__csp"))
        finally:
            await browser.close()
