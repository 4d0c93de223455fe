"""The lab in a real Chromium against a live Daphne, a real Celery worker on the `research` queue and the real
90-day BTC/USDT candles imported into the test database:

- an operator sees what is stored and which ghosts will be idle before the run, starts a run with the form,
  watches its progress arrive over the desk socket, opens the results with their charts (the price chart is
  re-bucketed by the server when zoomed), exports the trades, starts a second run from a copy of the first
  and compares the two;
- a viewer sees the runs and their results, has no form and no cancel button, and a forged POST with a valid
  CSRF token (start, cancel) gets 403 and changes nothing.
"""

import csv
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from apps.lab.models import BacktestRun, BacktestTrade
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, ROOT

pytestmark = [
    pytest.mark.browser,
    pytest.mark.services,
    pytest.mark.django_db(transaction=True),  # Daphne and the worker read and write the same file DB
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
async_playwright, expect = playwright_api.async_playwright, playwright_api.expect

SCREENSHOT = ROOT / ".run" / "screenshot-lab-run.png"
FIRST, END = datetime(2025, 5, 20, tzinfo=UTC), datetime(2025, 8, 19, tzinfo=UTC)
RUN_TIMEOUT = 120_000  # ms: a 90-day run of the five desk ghosts on 2 shared cores, worker start included

# Every lab.progress event the page handles, with what the progress card shows right after lab.js drew it;
# kept in sessionStorage because the page reloads itself when the run finishes.
RECORD_PROGRESS = """
document.addEventListener("desk:lab", (e) => setTimeout(() => {
  const fill = document.getElementById("progress-fill");
  const log = JSON.parse(sessionStorage.getItem("labLog") || "[]");
  log.push({run: e.detail.run_id, status: e.detail.status, stage: e.detail.stage, done: e.detail.bars_done,
            total: e.detail.bars_total, width: fill ? fill.style.width : null,
            shown: (document.getElementById("progress-done") || {}).textContent || null});
  sessionStorage.setItem("labLog", JSON.stringify(log));
}, 0));
"""


def _import(start: datetime, end: datetime) -> int:
    from apps.market.services import instrument_ensure
    from tests.lab.conftest import import_real

    return import_real(instrument_ensure(exchange_code="binance", symbol="BTC/USDT"), start, end)


async def _csv_rows(download) -> list[dict]:
    path = await download.path()
    return list(csv.DictReader(io.StringIO(Path(path).read_text())))


async def test_operator_runs_watches_reads_exports_and_compares(daphne_url, make_user):
    from tests.browser.test_desk_browser import WS_TIMEOUT, collect_js_errors, login
    from tests.e2e.procs import proc_kill, worker_start, worker_wait

    await sync_to_async(make_user)("olga", "operator")
    bars = await sync_to_async(_import)(FIRST, END)
    assert bars == 130_708
    worker = None
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            ctx = await browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
            await ctx.add_init_script(RECORD_PROGRESS)
            page = await ctx.new_page()
            errors = collect_js_errors(page)
            await login(page, daphne_url, "olga", "/lab/")
            await expect(page.locator("#runs-empty")).to_contain_text("No runs yet")

            # Before the run: what is stored for the instrument and range, and which ghosts will be idle, why.
            await expect(page.locator("#cov-candles")).to_have_text("130,708")
            await expect(page.locator("#cov-taker")).to_contain_text("0%")
            cvd = page.locator("#ghost-row-cvd_detector")
            await expect(cvd.locator(".badge.ready")).to_have_text("idle")
            await expect(cvd.locator(".ready-notes")).to_contain_text("no taker buy/sell volume")
            await expect(page.locator("#ghost-row-liquidation_hunter .ready-notes")).to_contain_text("no liquidation")
            # a shorter range: the form asks the server again and says so
            await page.fill("#id_end", "2025-05-24")
            await page.locator("#id_end").dispatch_event("change")
            await expect(page.locator("#cov-candles")).to_have_text("5,760")
            await expect(page.locator("#ghost-row-trend_filter .ready-notes")).to_contain_text("needs 8.4 days")
            await page.fill("#id_end", END.strftime("%Y-%m-%d"))
            await page.locator("#id_end").dispatch_event("change")
            await expect(page.locator("#cov-candles")).to_have_text("130,708")
            await expect(page.locator("#ghost-row-trend_filter .badge.ready")).to_have_text("partial")
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT.with_name("screenshot-lab-form.png")), full_page=True)

            # Start: the five desk ghosts (the form's default) over the 90 days; the worker is not up yet, so the
            # page is open and listening before the first event.
            await page.fill("#id_name", "desk ghosts, 90 days")
            await page.click("#start-run")
            await page.wait_for_url(re.compile(r".*/lab/runs/\d+/$"))
            run_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
            await expect(page.locator("#run-status")).to_have_text("queued")
            await expect(page.locator("#progress")).to_be_visible()
            await expect(page.locator("#ws-state")).to_have_text("live", timeout=WS_TIMEOUT)
            worker = await sync_to_async(worker_start)("lab-browser", queues="research", concurrency=1, wait=False)
            await sync_to_async(worker_wait)(worker)

            # The run ends "done"; the page reloads itself with the results.
            await expect(page.locator("#figures")).to_be_visible(timeout=RUN_TIMEOUT)
            await expect(page.locator("#run-status")).to_have_text("done")
            log = json.loads(await page.evaluate("sessionStorage.getItem('labLog')"))
            mine = [e for e in log if e["run"] == run_id]
            running = [e for e in mine if e["status"] == "running"]
            # every stage seen is a real one, in order; the sub-second "loading bars" push was once missed by a
            # page under load 7 (the socket's catch-up had not run yet), so it is not required
            order = ["loading bars", "evaluating ghosts", "walking", "storing"]
            stages = [e["stage"] for e in running]
            assert set(stages) <= set(order) and {"walking", "storing"} <= set(stages), mine
            assert stages == sorted(stages, key=order.index), mine
            storing = next(e for e in running if e["stage"] == "storing")
            assert storing["done"] == storing["total"] == 130_708 and float(storing["width"].rstrip("%")) == 100
            assert storing["shown"] == "130,708"  # the card showed the bars done as the event said
            assert mine[-1]["status"] == "done"

            # The results: figures with their formulas, per-ghost fates, criteria, and the charts.
            run = await BacktestRun.objects.aget(pk=run_id)
            net = next(f for f in run.summary["figures"] if f["key"] == "net_pnl")
            await expect(page.locator(".fig-net_pnl .big")).to_contain_text(net["display"].split(" ")[0])
            assert "final equity − start capital" in await page.locator(".fig-net_pnl").get_attribute("title")
            await expect(page.locator("#ghost-table tbody tr")).to_have_count(5)
            await expect(page.locator("#criteria tr.gate")).to_have_count(6)
            for chart in ("#equity-chart", "#price-chart", "#daily-chart", "#hist-chart"):
                await expect(page.locator(f"{chart} .main-svg").first).to_be_visible(timeout=20_000)
            price = page.locator("#price-chart")
            await expect(price).to_have_attribute("data-width", "120")  # 90 days in 2-hour buckets: 1,080 of them
            assert int(await price.get_attribute("data-buckets")) <= 2000
            # zoom to two hours: the server sends the raw 1m candles of that window
            await page.evaluate("""() => Plotly.relayout(document.getElementById('price-chart'),
                {'xaxis.range': ['2025-06-22 10:00:00', '2025-06-22 12:00:00']})""")
            await expect(price).to_have_attribute("data-width", "1", timeout=10_000)
            await expect(price).to_have_attribute("data-buckets", "120")
            await page.evaluate("() => Plotly.relayout(document.getElementById('price-chart'),"
                                " {'xaxis.autorange': true})")
            await expect(price).to_have_attribute("data-width", "120", timeout=10_000)
            await page.screenshot(path=str(SCREENSHOT), full_page=True)

            # Export the trades: every trade of the run, as stored.
            n_trades = await BacktestTrade.objects.filter(run_id=run_id).acount()
            async with page.expect_download() as dl:
                await page.click("#csv-link")
            rows = await _csv_rows(await dl.value)
            assert len(rows) == n_trades > 0
            first = await BacktestTrade.objects.filter(run_id=run_id).order_by("seq").afirst()
            assert rows[0]["entry_price"] == str(first.entry_price) and rows[0]["net_pnl"] == str(first.net_pnl)

            # A second run from a copy of the first, the spike fader long only; then compare the two.
            await page.click("#copy-run")
            await expect(page.locator("#preset-note")).to_contain_text(f"Settings of run #{run_id}")
            await page.select_option("select[name=g_spike_fader_direction]", "long")
            await page.fill("#id_name", "fader long only")
            await page.click("#start-run")
            await page.wait_for_url(re.compile(r".*/lab/runs/\d+/$"))
            second = int(page.url.rstrip("/").rsplit("/", 1)[1])
            await expect(page.locator("#figures")).to_be_visible(timeout=RUN_TIMEOUT)
            await page.goto(daphne_url + "/lab/")
            await page.check(f"#run-{run_id} input[name=runs]")
            await page.check(f"#run-{second} input[name=runs]")
            await page.click("#compare-btn")
            await page.wait_for_url(re.compile(r".*/lab/compare/\?runs="))
            await expect(page.locator("#compare-chart .main-svg").first).to_be_visible(timeout=20_000)
            await expect(page.locator("#compare-chart .scatterlayer .trace")).to_have_count(2)
            setting = page.locator('[data-setting="ghosts.spike_fader.direction"]')
            await expect(setting).to_contain_text("both")
            await expect(setting).to_contain_text("long")
            await expect(page.locator('[data-figure="net_pnl"]')).to_be_visible()
            await page.screenshot(path=str(SCREENSHOT.with_name("screenshot-lab-compare.png")), full_page=True)
            assert errors == [], errors
        finally:
            await browser.close()
            if worker is not None:
                await sync_to_async(proc_kill)(worker)


async def test_viewer_sees_runs_but_cannot_start_or_cancel(daphne_url, make_user):
    from apps.lab.services import lab_run_create
    from tests.browser.test_desk_browser import collect_js_errors, login
    from tests.lab.conftest import lab_request

    operator = await sync_to_async(make_user)("olga", "operator")
    await sync_to_async(make_user)("vera", "viewer")
    await sync_to_async(_import)(datetime(2025, 6, 21, tzinfo=UTC), datetime(2025, 6, 22, tzinfo=UTC))

    def queued_run() -> BacktestRun:
        from apps.market.models import Instrument

        inst = Instrument.objects.get(symbol="BTC/USDT")
        return lab_run_create(actor=operator, settings=lab_request(inst, start="2025-06-21", end="2025-06-22"),
                              queue=False)  # no worker: it stays queued, so a cancel would show

    run = await sync_to_async(queued_run)()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context()).new_page()
            errors = collect_js_errors(page)
            await login(page, daphne_url, "vera", "/lab/")
            await expect(page.locator(f"#run-{run.pk}")).to_contain_text("queued")
            await expect(page.locator("#run-form")).to_have_count(0)
            await expect(page.locator("#readonly-note")).to_contain_text("only operators")
            await page.click(f"#run-{run.pk} a >> nth=0")
            await expect(page.locator("#run-status")).to_have_text("queued")
            await expect(page.locator("#cancel-btn")).to_have_count(0)

            # Hand-made POSTs with the page's own CSRF token: refused for the role, and nothing changes.
            result = await page.evaluate(
                """async ([runId, instrument]) => {
                    const token = document.querySelector('meta[name="csrf-token"]').content;
                    const post = async (url, fields) => {
                        const body = new FormData();
                        Object.entries(fields).forEach(([k, v]) => body.append(k, v));
                        const r = await fetch(url, {method: "POST", body, headers: {"X-CSRFToken": token}});
                        return r.status;
                    };
                    return {
                        start: await post("/lab/", {instrument, start: "2025-06-21", end: "2025-06-22",
                                                     start_capital: "10000", g_spike_fader_on: "on"}),
                        cancel: await post(`/lab/runs/${runId}/cancel/`, {reason: "forged"}),
                        criteria: await post("/lab/criteria/", {win_rate_min_pct: "1", reason: "forged"}),
                    };
                }""",
                [run.pk, str(run.instrument_id)],
            )
            assert result == {"start": 403, "cancel": 403, "criteria": 403}, result
            assert await BacktestRun.objects.acount() == 1
            again = await BacktestRun.objects.aget(pk=run.pk)
            assert again.status == "queued" and not again.cancel_requested
            errors = [e for e in errors if "403" not in e]  # the refused fetches log a console error each
            assert errors == [], errors
        finally:
            await browser.close()
