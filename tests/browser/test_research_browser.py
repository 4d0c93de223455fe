"""Parameter studies in a real Chromium against a live Daphne, real Celery workers on the `research` queue and
real BTC/USDT candles (20 days of the 90-day file) imported into the test database:

- an operator fills the new-study form (the search space table, the walk-forward lengths with the folds said
  as they are typed), starts a small study, pauses and resumes it, watches its trials arrive per fold over
  the desk socket, opens the results (out-of-sample headline, per-fold IS vs OOS, DSR and PBO, the stitched
  equity, importance and parcoords charts) and applies a trial to a ghost; the Ghosts page then says where
  the ghost's parameters came from;
- a viewer sees the studies and a study's results, has no form, no controls and no apply card, and forged
  POSTs with a valid CSRF token (start, pause, cancel, apply) get 403 and change nothing.
"""

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from apps.research.models import Study, Trial
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, ROOT

pytestmark = [
    pytest.mark.browser,
    pytest.mark.services,
    pytest.mark.django_db(transaction=True),  # Daphne and the workers read and write the same file DB
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
async_playwright, expect = playwright_api.async_playwright, playwright_api.expect

SCREENSHOT = ROOT / ".run" / "screenshot-research-study.png"
START, END = datetime(2025, 6, 10, tzinfo=UTC), datetime(2025, 6, 30, tzinfo=UTC)
STUDY_TIMEOUT = 120_000  # ms: 4 folds x 8 trials over 20 days on 2 shared cores, worker start included

# Every study.progress event the page handles, with what the page showed right after research.js drew it;
# kept in sessionStorage because the page reloads itself when the study finishes.
RECORD_PROGRESS = """
document.addEventListener("desk:study", (e) => setTimeout(() => {
  const log = JSON.parse(sessionStorage.getItem("studyLog") || "[]");
  const cell = (id) => (document.getElementById(id) || {}).textContent || null;
  log.push({study: e.detail.study_id, status: e.detail.status, done: e.detail.trials_done,
            total: e.detail.trials_total, folds: e.detail.folds, shown: cell("progress-done"),
            badge: cell("study-status"),
            fold0: (document.querySelector("#fold-progress-0 .fold-done") || {}).textContent || null});
  sessionStorage.setItem("studyLog", JSON.stringify(log));
}, 0));
"""


def _setup() -> dict:
    """The candles, and a spike fader ghost on the desk to apply a trial to."""
    from apps.ghosts.services import ghost_create
    from apps.market.services import instrument_ensure
    from tests.lab.conftest import import_real

    inst = instrument_ensure(exchange_code="binance", symbol="BTC/USDT")
    bars = import_real(inst, START, END)
    ghost = ghost_create(name="fader-btc", kind="spike_fader", instrument=inst, enabled=False)
    return {"instrument": inst, "bars": bars, "ghost": ghost}


async def test_operator_starts_watches_reads_and_applies_a_study(daphne_url, make_user):
    from tests.browser.test_desk_browser import WS_TIMEOUT, collect_js_errors, login
    from tests.e2e.procs import proc_kill, worker_start, worker_wait
    from tests.lab.conftest import SENSITIVE_FADER

    await sync_to_async(make_user)("olga", "operator")
    setup = await sync_to_async(_setup)()
    assert setup["bars"] == 20 * 1440
    ghost = setup["ghost"]
    worker = None
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            ctx = await browser.new_context(viewport={"width": 1440, "height": 900})
            await ctx.add_init_script(RECORD_PROGRESS)
            page = await ctx.new_page()
            errors = collect_js_errors(page)
            await login(page, daphne_url, "olga", "/lab/studies/")
            await expect(page.locator("#studies-empty")).to_contain_text("No studies yet")

            # The form: the spike fader's default space with the config's validated bounds; other kinds hidden.
            row = page.locator("#space-row-spike_fader-spike_threshold_pct")
            await expect(row.locator(".bound")).to_have_text("> 0 and < 50 (percent)")
            await expect(row.locator("input.space-on")).to_be_checked()
            await expect(page.locator("#space-trend_filter")).to_be_hidden()
            await page.select_option("#id_target", "desk")
            await expect(page.locator("#space-trend_filter")).to_be_visible()
            await expect(page.locator("#space-textbook_fader")).to_be_hidden()  # a lab-only kind is not the desk's
            await page.select_option("#id_target", "spike_fader")
            await expect(page.locator("#space-trend_filter")).to_be_hidden()

            await page.fill("#id_name", "fader 6/3 rolling")
            await page.fill("#id_start", START.strftime("%Y-%m-%d"))
            await page.fill("#id_end", END.strftime("%Y-%m-%d"))
            # search two parameters only; the others keep the fixed values
            await page.evaluate("""() => document.querySelectorAll('#space-spike_fader input.space-on')
                                    .forEach((c) => { c.checked = false; })""")
            for name, low, high, step in (("spike_threshold_pct", "0.5", "1.5", "0.05"),
                                          ("take_profit_pct", "0.2", "0.45", "0.05")):
                p = f"sp_spike_fader__{name}__"
                await page.check(f"#{p}on")
                await page.fill(f"input[name={p}low]", low)
                await page.fill(f"input[name={p}high]", high)
                await page.fill(f"input[name={p}step]", step)
            await page.fill("#id_fixed_spike_fader", json.dumps(SENSITIVE_FADER))
            await page.select_option("#id_objective", "net_pnl")
            await page.fill("#id_min_trades", "1")
            await page.fill("#id_train_days", "6")
            await page.fill("#id_test_days", "3")
            await expect(page.locator("#fold-note")).to_contain_text("4 fold(s): the first trains 2025-06-10 → "
                                                                     "2025-06-16")
            await page.fill("#id_train_days", "30")
            await expect(page.locator("#fold-note")).to_contain_text("no fold fits")
            await page.fill("#id_train_days", "6")
            await expect(page.locator("#fold-note")).to_contain_text("4 fold(s)")
            await page.fill("#id_seed", "7")
            await page.fill("#id_budget_trials", "8")
            await page.select_option("#id_sizing_mode", "stake")
            await page.fill("#id_stake", "1000")
            await page.screenshot(path=str(SCREENSHOT.with_name("screenshot-research-form.png")), full_page=True)

            # Start: the worker is not up yet, so the page is open and listening before the first trial.
            await page.click("#start-study")
            await page.wait_for_url(re.compile(r".*/lab/studies/\d+/$"))
            study_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
            await expect(page.locator("#study-status")).to_have_text("queued")
            await expect(page.locator("#fold-progress tbody tr")).to_have_count(4)
            await expect(page.locator("#ws-state")).to_have_text("live", timeout=WS_TIMEOUT)
            # pause and resume from the page (over fetch; the socket brings the state back)
            await page.click("#pause-btn")
            await expect(page.locator("#study-status")).to_have_text("paused")
            await expect(page.locator("#resume-btn")).to_be_visible()
            await expect(page.locator("#pause-btn")).to_be_hidden()
            assert (await Study.objects.aget(pk=study_id)).status == "paused"
            await page.click("#resume-btn")
            await expect(page.locator("#study-status")).to_have_text("running")
            await expect(page.locator("#pause-btn")).to_be_visible()
            worker = await sync_to_async(worker_start)("research-browser", queues="research", concurrency=2,
                                                       wait=False)
            await sync_to_async(worker_wait)(worker)

            # The study ends "done"; the page reloads itself with the results.
            await expect(page.locator("#oos-figures")).to_be_visible(timeout=STUDY_TIMEOUT)
            await expect(page.locator("#study-status")).to_have_text("done")
            log = json.loads(await page.evaluate("sessionStorage.getItem('studyLog')"))
            mine = [e for e in log if e["study"] == study_id]
            running = [e for e in mine if e["status"] == "running"]
            states = [e["status"] for e in mine]
            changes = [x for i, x in enumerate(states) if i == 0 or states[i - 1] != x]
            # the create push may arrive before the socket is up: "queued" first or not
            assert changes[-3:] == ["paused", "running", "done"] and set(changes) <= {"queued", "paused", "running",
                                                                                     "done"}, changes
            assert len({e["done"] for e in running}) >= 3, running  # the count moved while it ran
            # the page drew what each event said: the total and the first fold's count
            assert all(e["shown"] == f"{e['done']:,}" and e["fold0"] == str(e["folds"][0]["done"]) for e in running)
            assert mine[-1]["status"] == "done" and mine[-1]["done"] == mine[-1]["total"] == 32
            assert any(f["best_train"] is not None for e in running for f in e["folds"])

            # The results: the out-of-sample headline, folds, overfitting checks and the three charts.
            study = await Study.objects.aget(pk=study_id)
            res = study.results
            net = next(f for f in res["oos"]["figures"] if f["key"] == "net_pnl")["value"]
            await expect(page.locator("#oos-figures .fig-net_pnl .big")).to_contain_text(f"{net:+,.2f}")
            await expect(page.locator("#fold-table tbody tr")).to_have_count(4)
            assert "PSR(SR0)" in await page.locator("#dsr").get_attribute("title")
            assert "CSCV" in await page.locator("#pbo").get_attribute("title")
            for chart in ("#oos-equity-chart", "#importance-chart", "#parcoords-chart"):
                await expect(page.locator(f"{chart} .main-svg").first).to_be_visible(timeout=20_000)
            await expect(page.locator("#parcoords-chart .parcoords")).to_have_count(1)
            await page.screenshot(path=str(SCREENSHOT), full_page=True)

            # Apply: a trial row's button fills the form; a reason; the Ghosts page says where the params came from.
            chosen = next(f for f in reversed(res["folds"]) if f["trial_id"])
            await page.click(f"#trial-{chosen['trial_id']} a.use-trial")
            await expect(page.locator("#id_trial")).to_have_value(str(chosen["trial_id"]))
            await page.click("#apply-btn")  # no reason yet: refused, with the reason why
            await expect(page.locator("#apply-errors")).to_contain_text("a reason is required")
            await page.fill("#id_reason", "fold 4's choice; the study's OOS figures")
            await page.click("#apply-btn")
            await page.wait_for_url(re.compile(r".*/#ghost-\d+$|.*/ghosts/.*"))
            source = page.locator(f"#params-source-{ghost.pk}")
            await expect(source).to_contain_text(f"study #{study_id}, fold {chosen['index'] + 1}, "
                                                 f"trial {chosen['trial_id']}")
            await expect(source).to_contain_text("by olga")
            await ghost.arefresh_from_db()
            trial = await Trial.objects.aget(pk=chosen["trial_id"])
            assert all(ghost.params[k] == v for k, v in trial.params.items())
            errors = [e for e in errors if "status of 400" not in e]  # the refused apply above, on purpose
            assert errors == [], errors
        finally:
            await browser.close()
            if worker is not None:
                await sync_to_async(proc_kill)(worker)


async def test_viewer_reads_studies_but_forged_posts_get_403(daphne_url, make_user):
    from apps.research.services import study_create, study_run_inline
    from tests.browser.test_desk_browser import collect_js_errors, login
    from tests.research.conftest import study_request

    operator = await sync_to_async(make_user)("olga", "operator")
    await sync_to_async(make_user)("vera", "viewer")
    setup = await sync_to_async(_setup)()
    ghost = setup["ghost"]

    def studies() -> tuple[Study, Study]:
        req = study_request(setup["instrument"], start="2025-06-19", end="2025-06-28")
        done = study_run_inline(study_id=study_create(actor=operator, settings=req, queue=False).pk)
        queued = study_create(actor=operator, settings=req, queue=False)  # no worker: it stays queued
        return done, queued

    done, queued = await sync_to_async(studies)()
    assert done.status == "done"
    trial = await Trial.objects.filter(study=done, status="done").afirst()
    before = dict(ghost.params)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await (await browser.new_context()).new_page()
            errors = collect_js_errors(page)
            await login(page, daphne_url, "vera", "/lab/studies/")
            await expect(page.locator(f"#study-{done.pk}")).to_contain_text("done")
            await expect(page.locator("#study-form")).to_have_count(0)
            await expect(page.locator("#readonly-note")).to_contain_text("only operators")
            await page.click(f"#study-{done.pk} a >> nth=0")
            await expect(page.locator("#oos-figures")).to_be_visible()
            await expect(page.locator("#apply")).to_have_count(0)
            await expect(page.locator("a.use-trial")).to_have_count(0)
            await page.goto(f"{daphne_url}/lab/studies/{queued.pk}/")
            await expect(page.locator("#study-status")).to_have_text("queued")
            await expect(page.locator("#pause-btn")).to_have_count(0)

            # Hand-made POSTs with the page's own CSRF token: refused for the role, and nothing changes.
            result = await page.evaluate(
                """async ([done, queued, trial, ghost, instrument]) => {
                    const token = document.querySelector('meta[name="csrf-token"]').content;
                    const post = async (url, fields) => {
                        const body = new FormData();
                        Object.entries(fields).forEach(([k, v]) => body.append(k, v));
                        const r = await fetch(url, {method: "POST", body, headers: {"X-CSRFToken": token}});
                        return r.status;
                    };
                    return {
                        start: await post("/lab/studies/", {instrument, start: "2025-06-19", end: "2025-06-28",
                                                            target: "spike_fader", train_days: "3", test_days: "2"}),
                        pause: await post(`/lab/studies/${queued}/pause/`, {why: "forged"}),
                        cancel: await post(`/lab/studies/${queued}/cancel/`, {why: "forged"}),
                        apply: await post(`/lab/studies/${done}/apply/`, {trial, ghost, reason: "forged"}),
                    };
                }""",
                [done.pk, queued.pk, trial.pk, ghost.pk, str(setup["instrument"].pk)],
            )
            assert result == {"start": 403, "pause": 403, "cancel": 403, "apply": 403}, result
            assert await Study.objects.acount() == 2
            assert (await Study.objects.aget(pk=queued.pk)).status == "queued"
            await ghost.arefresh_from_db()
            assert ghost.params == before and ghost.params_source is None
            errors = [e for e in errors if "403" not in e]  # the refused fetches log a console error each
            assert errors == [], errors
        finally:
            await browser.close()
