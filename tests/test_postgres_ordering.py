"""Order the desk shows that the database must keep. PostgreSQL's jsonb does not keep an object's key order (it
stores keys shortest first); SQLite's JSON text does. Run on SQLite and again on PostgreSQL (`make test` with
HFT_TEST_DATABASE_URL)."""

import re

import pytest

from apps.ghosts.events import ghost_payload
from apps.ghosts.models import Ghost
from apps.ghosts.services import ghost_record_evaluation
from tests.lab.conftest import btc, lab_request  # noqa: F401 - btc is a fixture

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

# the trend filter's summary (apps.engine.trend.state_summary), in the order the engine writes it
TREND_STATE = {"direction": "up", "regime": "trending", "confidence": "0.81", "score": "+1.20 (1m +1 (z +1.1))",
               "volatility": "1m ATR 0.050% = x1.10 of the 24h baseline", "blocks": "none",
               "size": "long x1.00, short x0.50", "as_of": "2026-03-02 10:00 UTC"}


def test_a_ghosts_state_is_shown_in_the_engines_order_after_it_was_stored(desk, op_client):
    ghost = desk["ghost"]
    ghost_record_evaluation(ghost_id=ghost.pk, error=None, state=TREND_STATE)
    stored = Ghost.objects.get(pk=ghost.pk)
    order = list(TREND_STATE)
    # the ghosts page
    html = op_client.get("/ghosts/").content.decode()
    block = html[html.index('class="ghost-state'):]
    block = block[: block.index("</dl>")]
    assert re.findall(r"<dt>([^<]*)</dt>", block) == order
    # what browsers get pushed, and the catch-up after a reconnect (state.json): pairs, in order
    assert [label for label, _ in ghost_payload(stored, type_="ghost.status", actor="system")["state"]] == order
    events = op_client.get("/state.json").json()["events"]
    pushed = next(e for e in events if e["type"] == "ghost.status" and e["ghost_id"] == ghost.pk)
    assert [label for label, _ in pushed["state"]] == order
    assert dict(stored.state_items) == TREND_STATE


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)  # Daphne reads the same database
async def test_a_browser_shows_a_pushed_state_in_the_engines_order(daphne_url, desk, make_user):
    from pathlib import Path

    from asgiref.sync import sync_to_async

    from tests.browser.test_desk_browser import login
    from tests.conftest import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    from playwright.async_api import async_playwright, expect

    ghost = desk["ghost"]
    await sync_to_async(make_user)("vera", "viewer")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context()).new_page()
            await login(page, daphne_url, "vera", "/ghosts/")
            await sync_to_async(ghost_record_evaluation)(ghost_id=ghost.pk, error=None, state=TREND_STATE)
            labels = page.locator(f"#ghost-{ghost.pk} .ghost-state dt")
            await expect(labels).to_have_text(list(TREND_STATE))  # pushed; then the page as the server renders it
            await page.reload()
            await expect(labels).to_have_text(list(TREND_STATE))
        finally:
            await browser.close()


def test_a_lab_runs_risk_limits_are_listed_in_the_engines_order(btc, operator, op_client):  # noqa: F811
    from apps.engine.risk import RiskLimits
    from apps.lab.services import lab_run_create

    run = lab_run_create(actor=operator, settings=lab_request(btc), queue=False)
    html = op_client.get(f"/lab/runs/{run.pk}/").content.decode()
    row = re.search(r"<dt>Risk limits</dt><dd[^>]*>([^<]*)</dd>", html).group(1)
    assert [part.split(" ")[0] for part in row.split(", ")] == list(RiskLimits().to_params())
