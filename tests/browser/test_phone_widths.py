"""Issue 14, "Phones": every page of the desk in a real Chromium at 390x844 against a live Daphne, with real data in
it (the hardening tests' world: real candles, positions, signals, a finished lab run, a finished study, audit rows,
an alert channel with a delivery; plus a second finished run to compare, a finished backtest against the desk, a
history download, a REPLAY feed whose badge once spilled out, a degraded ghost with a traceback, and the kill
switch tripped, its banner in every page's header).

For each page: the document is no wider than the viewport AND no visible element reaches past its right (or
left) edge, inside a scrolling box or not (a table scrolled sideways inside its card hides its numbers just the
same); the failures name the element. Then: the tab menu opens and reaches every tab; a trade card shows its key
numbers (qty, entry, exit, net P&L) on screen; and at 1440 px the axis labels of the overview's price chart, a lab
run's charts and the equity chart are inside their charts. A full-page screenshot per page goes to
$PHONE_SHOTS_DIR (default: a pytest tmp dir; the path is printed with -s).

One browser, one Daphne, one world: 50-60 s on 2 cores (the world, with its lab runs and study, ~8 s).
"""

import os
from datetime import timedelta
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async

from tests.conftest import CHROMIUM, CHROMIUM_ARGS

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),  # Daphne reads the same file DB
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
async_playwright, expect = playwright_api.async_playwright, playwright_api.expect

# An iPhone 12-15 in CSS pixels, the width; PHONE_WIDTH=768 checks a tablet the same way (up to 800 px the
# tabs are a menu and tables are cards).
PHONE = {"width": int(os.environ.get("PHONE_WIDTH") or 390), "height": 844}
DESKTOP = {"width": 1440, "height": 900}

# Visible elements whose box reaches past the viewport's left or right edge, outermost only (a wide table is
# reported once, not once per cell), then text that spills past it out of a box that fits. Zero-size,
# visibility:hidden and clipped-to-nothing boxes are skipped; clipping by a scrolling ancestor is NOT an excuse
# (that is the sideways scrolling the issue is about).
OFFENDERS = """
() => {
  const vw = window.innerWidth, out = [], bad = new Set();
  const name = (el) => {
    let s = el.tagName.toLowerCase();
    if (el.id) s += "#" + el.id;
    const cls = (typeof el.className === "string" ? el.className : "").trim().split(/\\s+/).filter(Boolean);
    if (cls.length) s += "." + cls.slice(0, 3).join(".");
    return s;
  };
  const where = (el) => {
    const path = [];
    for (let p = el.parentElement; p && p !== document.body && path.length < 3; p = p.parentElement) {
      path.unshift(name(p));
    }
    return path.join(" > ");
  };
  // inside a box clipped to nothing (a screen-reader-only header row): not on screen, whatever its text does
  const hiddenAway = (el) => {
    for (let p = el; p && p !== document.body; p = p.parentElement) {
      const cs = getComputedStyle(p);
      if (cs.visibility === "hidden") return true;
      if (cs.overflowX !== "visible" && p.getBoundingClientRect().width < 2) return true;
    }
    return false;
  };
  const past = (r) => (r.right > vw + 1 || r.left < -1) && r.right > 0;  // r.right <= 0: parked off-screen on purpose
  for (const el of document.querySelectorAll("body *")) {
    const r = el.getBoundingClientRect();
    if (r.width < 2 || r.height < 2 || !past(r) || hiddenAway(el)) continue;
    bad.add(el);
    if (el.parentElement && bad.has(el.parentElement)) continue;
    out.push(`${where(el)} > ${name(el)} [${Math.round(r.left)}..${Math.round(r.right)}] ` +
             JSON.stringify((el.textContent || "").trim().slice(0, 40)));
  }
  // text that does not wrap spills out of a box that fits (a nowrap cell): the box is fine, its words are not
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const range = document.createRange();
    range.selectNodeContents(n);
    const r = range.getBoundingClientRect();
    const el = n.parentElement;
    if (r.width < 2 || !past(r) || bad.has(el) || hiddenAway(el)) continue;
    bad.add(el);
    const text = JSON.stringify(n.textContent.trim().slice(0, 40));
    out.push(`text in ${where(el)} > ${name(el)} [..${Math.round(r.right)}] ${text}`);
  }
  return {scroll: document.documentElement.scrollWidth, inner: vw, out: out.slice(0, 8)};
}
"""

# Charts draw after load (plotly is deferred, some fetch their data): wait until every shown chart holder has
# its svg, or says it is empty, so the width is measured and the picture taken on the drawn page.
CHARTS_DRAWN = """
() => [...document.querySelectorAll(".chart, .lab-chart, .logit-chart, [id$='-chart']")]
  .filter((e) => !e.hidden && e.offsetParent !== null)
  .every((e) => e.querySelector(".main-svg") || e.querySelector(".empty") || e.textContent.trim())
"""


def _world() -> dict:
    """The hardening world, its queued lab runs finished (compare needs two done runs, the desk comparison a
    result), a history download, the feed on a replay whose badge is long, a second feed down with its error,
    a degraded ghost and the kill switch tripped."""
    from apps.ghosts.models import Ghost
    from apps.ghosts.services import ghost_create
    from apps.lab.models import BacktestSignal
    from apps.lab.services import lab_run_execute
    from apps.market.models import FeedStatus, HistoryDownload
    from apps.market.services import instrument_ensure
    from apps.research.models import Study
    from apps.signals.models import Signal
    from apps.trading.models import Position
    from apps.trading.risk_services import kill_switch_trip
    from tests.hardening.world import END, START, build_world

    w = build_world()
    done, queued = w.ids["run_id"]
    assert lab_run_execute(run_id=queued).status == "done"
    desk_run = w.route_ids["lab:desk-compare-run"]["run_id"][0]
    lab_run_execute(run_id=desk_run)
    inst = instrument_ensure(exchange_code="binance", symbol="BTC/USDT")
    FeedStatus.objects.filter(instrument=inst).update(
        source="replay:../shared/data/binance_BTCUSDT_1m_90d.csv@120", state="connected", last_price="106543.21",
        last_trade_at=END - timedelta(minutes=1))
    eth = instrument_ensure(exchange_code="binance", symbol="ETH/USDT")
    FeedStatus.objects.create(instrument=eth, source="live", state="reconnecting", last_price="3412.55",
                              last_error="NetworkError: binance GET /api/v3/exchangeInfo timed out after 10000 ms")
    # A second ghost the way a bad evaluation leaves it: degraded, with its state summary and a long traceback.
    sick = ghost_create(name="whale-follower-btc-long-name", kind="whale_follower", instrument=inst, enabled=True)
    trace = ("Traceback (most recent call last):\n  File \"/work/main/apps/engine/ghosts/whale_follower.py\", "
             "line 212, in evaluate\n    ratio = window_volume_sum_over_lookback_minutes / median_volume\n"
             "ZeroDivisionError: float division by zero in the rolling median of a window with no trades at all")
    Ghost.objects.filter(pk=sick.pk).update(
        status="degraded", status_reason="evaluation failed 3 times in a row: ZeroDivisionError", last_error=trace,
        state=[["trend", "STRONG_DOWN"], ["median volume (1440 bars)", "123.456789 BTC"],
               ["last spike", "-1.2345% in 11 min at 2025-06-24T23:58:00+00:00"], ["cooldown until", "—"]])
    # The kill switch tripped: its banner joins the header on every page (and pushed the page down on phones).
    kill_switch_trip(actor=w.users["operator"], flatten=False,
                     reason="daily loss limit reached: -3.02% of start-of-day equity at 2025-06-24 23:59 UTC")
    HistoryDownload.objects.create(instrument=inst, since=START, until=END, state="done", expected=5760,
                                   fetched=5760, stored=5760, requested_by=w.users["operator"])
    study = Study.objects.filter(status="done").order_by("pk").first()
    trial = study.trials.order_by("pk").first()
    position = Position.objects.filter(status="closed").order_by("pk").first()
    return {
        "run": done, "other_run": queued, "desk_run": desk_run,
        "lab_signal": BacktestSignal.objects.filter(run_id=done).order_by("pk").first().pk,
        "study": study.pk, "trial": trial.pk, "signal": Signal.objects.order_by("pk").first().pk,
        "closed_position": position.pk, "instrument": inst.pk,
    }


def _pages(ids: dict) -> list[tuple[str, str]]:
    """(name, path) of every page a signed-in user reaches, with a real object behind each id."""
    return [
        ("overview", "/"), ("ghosts", "/ghosts/"), ("trades", "/trades/"), ("targets", "/targets/"),
        ("equity", "/equity/"), ("risk", "/risk/"), ("instruments", "/instruments/"), ("history", "/history/"),
        ("instrument-delete", f"/instruments/{ids['instrument']}/delete/"),
        ("alerts", "/alerts/"), ("audit", "/audit/"), ("signal-detail", f"/signals/{ids['signal']}/"),
        ("password-change", "/accounts/password_change/"),
        ("lab-runs", "/lab/"), ("lab-run", f"/lab/runs/{ids['run']}/"),
        ("lab-run-trades", f"/lab/runs/{ids['run']}/trades/"),
        ("lab-trade-why", f"/lab/runs/{ids['run']}/signals/{ids['lab_signal']}/"),
        ("lab-compare", f"/lab/compare/?runs={ids['run']}&runs={ids['other_run']}"),
        ("lab-criteria", "/lab/criteria/"), ("desk-compare", "/lab/desk/"),
        ("desk-compare-run", f"/lab/desk/{ids['desk_run']}/"),
        ("studies", "/lab/studies/"), ("study", f"/lab/studies/{ids['study']}/"),
        ("study-trials", f"/lab/studies/{ids['study']}/trials/"),
        ("study-trial", f"/lab/studies/{ids['study']}/trials/{ids['trial']}/"),
    ]


async def _measure(page, shots: Path, name: str) -> list[str]:
    """The problems of the page now open, as sentences (empty: it fits), and its full-page screenshot."""
    # Folded parts count too (a ghost's rules and parameters, a traceback, the lab's limits): open them all.
    await page.evaluate("() => document.querySelectorAll('details').forEach((d) => { d.open = true; })")
    try:
        await page.wait_for_function(CHARTS_DRAWN, timeout=8_000)
    except playwright_api.TimeoutError:
        pass  # a chart that never draws is its own test's failure; measure what is there
    found = await page.evaluate(OFFENDERS)
    await page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    problems = []
    if found["scroll"] > found["inner"]:
        problems.append(f"{name}: page is {found['scroll']} px wide at {found['inner']} px")
    problems += [f"{name}: sticks out: {o}" for o in found["out"]]
    for p in problems:
        print(p)  # all of them in the log, also when a later step of the test fails first
    return problems


async def test_every_page_fits_a_phone(daphne_url, tmp_path):
    from tests.browser.test_desk_browser import collect_js_errors, login

    ids = await sync_to_async(_world)()
    shots = Path(os.environ.get("PHONE_SHOTS_DIR") or tmp_path / "phone-shots")
    shots.mkdir(parents=True, exist_ok=True)
    print(f"phone screenshots: {shots}")
    problems: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            # Signed out: the login page.
            anon = await (await browser.new_context(viewport=PHONE)).new_page()
            await anon.goto(daphne_url + "/accounts/login/")
            problems += await _measure(anon, shots, "login")

            ctx = await browser.new_context(viewport=PHONE, device_scale_factor=2)
            page = await ctx.new_page()
            errors = collect_js_errors(page)
            await login(page, daphne_url, "olga", "/")
            for name, path in _pages(ids):
                await page.goto(daphne_url + path)
                problems += await _measure(page, shots, name)
            # The 404 page, in a tab of its own (its 404 is the point, not a console error of the desk's pages).
            lost = await ctx.new_page()
            await lost.goto(daphne_url + "/no-such-page/")
            problems += await _measure(lost, shots, "404")

            # The tab menu: closed it hides the tabs, open it shows every one on screen, and a tab navigates.
            await page.goto(daphne_url + "/")
            tabs = page.locator("nav.sidebar a")
            assert await tabs.count() == 12
            await expect(tabs.last).to_be_hidden()
            await page.locator("#nav-menu-btn").click()
            for i in range(await tabs.count()):
                tab = tabs.nth(i)
                await expect(tab).to_be_visible()
                box = await tab.bounding_box()
                assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], await tab.inner_text()
            problems += await _measure(page, shots, "menu-open")
            await tabs.filter(has_text="Audit").click()
            await page.wait_for_url(daphne_url + "/audit/")
            await expect(page.locator("nav.sidebar a[aria-current=page]")).to_have_text("Audit")

            # A trade card: the key numbers on screen without scrolling sideways, each with its label.
            await page.goto(daphne_url + "/trades/")
            card = page.locator(f"#trade-{ids['closed_position']}")
            for col in ("qty", "entry", "exit", "pnl"):
                cell = card.locator(f"td[data-col={col}]")
                await expect(cell).to_be_visible()
                box = await cell.bounding_box()
                assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], col
                assert (await cell.get_attribute("data-label")), col
            assert await card.locator("td[data-col=pnl]").inner_text() not in ("", "open")

            # A viewer's refused POST: the 403 page.
            viewer = await (await browser.new_context(viewport=PHONE)).new_page()
            await login(viewer, daphne_url, "vera", "/risk/")
            async with viewer.expect_navigation():
                await viewer.evaluate("""() => { const f = document.createElement("form"); f.method = "post";
                    f.action = "/risk/kill-switch/trip/";
                    const t = document.createElement("input"); t.name = "csrfmiddlewaretoken";
                    t.value = document.querySelector('meta[name="csrf-token"]').content; f.append(t);
                    document.body.append(f); f.submit(); }""")
            assert "403" in await viewer.title() + await viewer.content()
            problems += await _measure(viewer, shots, "403")

            # 1440 px: the overview's price axis labels inside the chart (were cut off: "111,000.0(").
            wide = await browser.new_context(viewport=DESKTOP, storage_state=await ctx.storage_state())
            desk = await wide.new_page()
            for path, holder in (("/", "#price-chart"), (f"/lab/runs/{ids['run']}/", ".lab-chart"),
                                 ("/equity/", "#equity-chart")):
                await desk.goto(daphne_url + path)
                chart = desk.locator(holder).first
                await expect(chart.locator(".main-svg").first).to_be_attached(timeout=10_000)
                cut = await chart.evaluate("""(c) => { const r = c.getBoundingClientRect();
                    return [...c.querySelectorAll(".yaxislayer-above text, .y2axislayer-above text")]
                      .map((t) => [t.textContent, t.getBoundingClientRect()])
                      .filter(([, b]) => b.width > 0 && (b.right > r.right + 1 || b.left < r.left - 1))
                      .map(([s]) => s); }""")
                assert not cut, f"{path}: axis labels cut off at 1440 px: {cut}"
            await desk.screenshot(path=str(shots / "equity-1440.png"), full_page=True)
            await desk.goto(daphne_url + "/")
            await expect(desk.locator("#price-chart .main-svg").first).to_be_attached()
            await desk.screenshot(path=str(shots / "overview-1440.png"), full_page=True)
            # The desktop has its sidebar, no menu button; nothing spills out of its card (the REPLAY badge did);
            # and the fixed header, kill switch banner and all, covers none of the page.
            await expect(desk.locator("#nav-menu-btn")).to_be_hidden()
            await expect(desk.locator("nav.sidebar a").last).to_be_visible()
            spilled = await desk.evaluate("""() => [...document.querySelectorAll(".card *")].filter((e) => {
                const b = e.getBoundingClientRect(), c = e.closest(".card").getBoundingClientRect();
                return b.width > 1 && (b.right > c.right + 1 || b.left < c.left - 1); })
              .map((e) => e.className + " " + JSON.stringify(e.textContent.trim().slice(0, 40))).slice(0, 5)""")
            assert not spilled, f"out of their card at 1440 px: {spilled}"
            below = """() => document.querySelector("main h1").getBoundingClientRect().top -
                document.querySelector(".topbar").getBoundingClientRect().bottom"""
            for width in (1440, 1100, 900):  # at 1100 and 900 the header wraps to two or three rows
                await desk.set_viewport_size({"width": width, "height": 900})
                # nav.js' ResizeObserver fires after the resize: poll (wait_for_function's string form would
                # need the eval the desk's CSP forbids)
                covered = -1.0
                for _ in range(50):
                    covered = await desk.evaluate(below)
                    if covered >= 0:
                        break
                    await desk.wait_for_timeout(100)
                assert covered >= 0, f"the header covers the top {-covered:.0f} px of the page at {width} px"
                await expect(desk.locator("nav.sidebar a").first).to_be_visible()
                sidebar = await desk.evaluate("""() =>
                    document.querySelector("nav.sidebar").getBoundingClientRect().top -
                    document.querySelector(".topbar").getBoundingClientRect().bottom""")
                assert sidebar >= 0, f"the header covers the sidebar's top {-sidebar:.0f} px at {width} px"
            await desk.screenshot(path=str(shots / "overview-900.png"))
            assert not errors, errors
        finally:
            await browser.close()
    assert not problems, "\n".join(problems)
