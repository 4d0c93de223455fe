/* hftweb lab pages: run progress, the new-run form's data coverage, and the results' plotly charts.
 *
 * Progress: desk.js re-dispatches each "lab.progress" event as a "desk:lab" DOM event; progress.js (loaded before
 * this file) follows them, polls the run page's progress.json while the run is active and reloads it at the end;
 * this file draws a run's row and card.
 *
 * Plain ES2020, no build step. Server strings reach the page through textContent, except the coverage
 * fragment, which is a Django-rendered (autoescaped) template.
 */
(function () {
  "use strict";
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const QUOTE = document.body.dataset.quote || "USDT";
  const { TERMINAL, finite, fmtInt, pct, eta, drawBar, track } = window.hftProgress; // progress.js

  // ---- progress ---------------------------------------------------------------------------------------------
  function onRunRow(ev) {
    const tr = document.getElementById("run-" + ev.run_id);
    if (!tr) return;
    tr.dataset.status = ev.status;
    const badge = $(".run-status", tr);
    if (badge) { badge.textContent = ev.status; badge.className = "badge run-status " + ev.status; }
    const fill = $(".run-progress .fill", tr);
    if (fill) fill.style.width = pct(ev.bars_done, ev.bars_total).toFixed(1) + "%";
    const stage = $(".run-stage", tr);
    if (stage) stage.textContent = TERMINAL.has(ev.status) ? "" : ev.stage || "";
    if (TERMINAL.has(ev.status)) { const bar = $(".run-progress", tr); if (bar) bar.hidden = true; }
  }

  const card = $("#progress");
  function onRunPage(ev) {
    const badge = $("#run-status");
    if (badge) { badge.textContent = ev.status; badge.className = "badge run-status " + ev.status; }
    drawBar(card, ev.bars_done, ev.bars_total);
    $("#progress-stage").textContent = ev.stage || ev.status;
    $("#progress-done").textContent = fmtInt(ev.bars_done);
    $("#progress-total").textContent = fmtInt(ev.bars_total);
    $("#progress-rate").textContent = finite(ev.bars_per_s) && ev.bars_per_s > 0 ? fmtInt(ev.bars_per_s) : "—";
    $("#progress-eta").textContent = eta(ev.eta_s);
  }
  track({ eventName: "desk:lab", idKey: "run_id", idData: "runId", label: "Run", card, onRow: onRunRow, onPage: onRunPage });

  const cancelForm = $("#cancel-form");
  if (cancelForm) {
    cancelForm.addEventListener("submit", async (e) => {
      e.preventDefault(); // progressive enhancement: without JS the form posts and redirects back
      const btn = $("#cancel-btn");
      btn.disabled = true;
      btn.textContent = "Cancelling…";
      try {
        const r = await fetch(cancelForm.action, { method: "POST", body: new FormData(cancelForm), credentials: "same-origin",
          headers: { Accept: "application/json" } });
        const data = await r.json().catch(() => null);
        if (!r.ok || !data || !data.ok) {
          btn.disabled = false;
          btn.textContent = "Cancel run";
          if (window.hftDesk) window.hftDesk.toast((data && data.error) || `cancel refused (HTTP ${r.status})`, "error");
        }
      } catch (err) { btn.disabled = false; btn.textContent = "Cancel run"; }
    });
  }

  // ---- the new-run form: what is stored, and which ghosts will be idle ---------------------------------------
  const form = $("#run-form");
  if (form) {
    const inst = $("#id_instrument", form);
    const start = $("#id_start", form);
    const end = $("#id_end", form);
    let timer = null;
    let seq = 0;

    const fees = () => {
      const opt = inst.selectedOptions[0];
      if (!opt) return;
      $("#id_taker_fee").placeholder = opt.dataset.takerFee || "";
      $("#id_maker_fee").placeholder = opt.dataset.makerFee || "";
      $("#id_slippage_bps").placeholder = opt.dataset.slippageBps || "";
    };
    const sizing = () => {
      const mode = $("#id_sizing_mode").value;
      $$("[data-sizing]", form).forEach((f) => { f.hidden = f.dataset.sizing !== mode; });
    };
    async function coverage() {
      const mine = ++seq;
      const q = new URLSearchParams({ instrument: inst.value, start: start.value, end: end.value });
      $$("tr.ghost-row", form).forEach((tr) => {
        const params = $(".ghost-params-input", tr).value.trim();
        if (params && params !== "{}") q.append("params_" + tr.dataset.kind, params);
        if ($(".ghost-on", tr).checked) q.append("kinds", tr.dataset.kind);
      });
      try {
        const r = await fetch(form.dataset.coverageUrl + "?" + q, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (!r.ok || mine !== seq) return;
        const data = await r.json();
        if (mine !== seq) return;
        $("#coverage").innerHTML = data.html; // rendered and escaped by Django (_coverage.html)
        $("#trend-note").textContent = data.trend_note || "";
        Object.entries(data.ghosts || {}).forEach(([kind, g]) => {
          const tr = document.getElementById("ghost-row-" + kind);
          if (!tr) return;
          tr.className = "ghost-row state-" + g.state;
          const badge = $(".badge.ready", tr);
          badge.textContent = g.state;
          badge.className = "badge ready " + g.state;
          const ul = $(".ready-notes", tr);
          ul.replaceChildren(...g.notes.map((n) => { const li = document.createElement("li"); li.textContent = n; return li; }));
        });
      } catch (e) { /* the form still submits; the server checks the range */ }
    }
    const later = () => { clearTimeout(timer); timer = setTimeout(coverage, 250); };
    inst.addEventListener("change", () => {
      fees();
      const opt = inst.selectedOptions[0];
      if (opt && opt.dataset.first && opt.dataset.last) { start.value = opt.dataset.first; end.value = opt.dataset.last; }
      later();
    });
    [start, end].forEach((e) => e.addEventListener("change", later));
    form.addEventListener("change", (e) => { if (e.target.closest("tr.ghost-row")) later(); });
    $("#id_sizing_mode").addEventListener("change", sizing);
    sizing();
    form.addEventListener("submit", () => { const b = $("#start-run"); b.disabled = true; b.textContent = "Starting…"; });
  }

  // ---- charts ----------------------------------------------------------------------------------------------
  const THEME = {
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
    font: { color: "#8590b8", family: "system-ui, sans-serif", size: 11 },
    margin: { l: 10, r: 70, t: 10, b: 30 }, hovermode: "x unified", dragmode: "zoom",
    legend: { orientation: "h", x: 0, y: 1.08, font: { size: 11 } },
  };
  // automargin: the margins grow to the widest tick label (a fixed 70 px cut six-figure prices off: issue 14)
  const AXIS = { gridcolor: "#1b2452", zerolinecolor: "#232d5e", automargin: true };
  const CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"] };
  const COLORS = ["#00d4ff", "#a855f7", "#ffaa00", "#00ff88"];
  const layout = (extra) => Object.assign({}, THEME, extra);
  const msToX = (ms) => new Date(ms).toISOString().slice(0, 19).replace("T", " ");
  const xToMs = (x) => Date.parse(String(x).replace(" ", "T") + (String(x).endsWith("Z") ? "" : "Z"));

  function readJson(id) {
    const el = document.getElementById(id);
    if (!el) return null;
    try { return JSON.parse(el.textContent); } catch (e) { return null; }
  }

  function equityChart(d) {
    const holder = $("#equity-chart");
    if (!holder || !d || !d.t.length) return;
    const x = d.t.map(msToX);
    window.Plotly.newPlot(holder, [
      { type: "scatter", mode: "lines", name: `equity (${QUOTE})`, x, y: d.equity, line: { color: "#00d4ff", width: 1.5 }, xaxis: "x", yaxis: "y" },
      { type: "scatter", mode: "lines", name: "drawdown (%)", x, y: d.drawdown, fill: "tozeroy", line: { color: "#ff3366", width: 1 },
        fillcolor: "rgba(255,51,102,.25)", xaxis: "x", yaxis: "y2" },
    ], layout({
      grid: { rows: 2, columns: 1, subplots: [["xy"], ["xy2"]], roworder: "top to bottom" },
      xaxis: Object.assign({ type: "date", matches: "x" }, AXIS),
      yaxis: Object.assign({ side: "right", domain: [0.34, 1], tickformat: ",.0f", title: { text: QUOTE } }, AXIS),
      yaxis2: Object.assign({ side: "right", domain: [0, 0.28], ticksuffix: "%", rangemode: "tozero" }, AXIS),
    }), CONFIG);
  }

  function dailyChart(d) {
    const holder = $("#daily-chart");
    if (!holder || !d || !d.day.length) return;
    window.Plotly.newPlot(holder, [{
      type: "bar", x: d.day, y: d.pnl, name: "net P&L",
      marker: { color: d.pnl.map((v) => (v >= 0 ? "#00ff88" : "#ff3366")) },
      customdata: d.trades.map((n, i) => [n, d.fees[i]]),
      hovertemplate: `%{x}: %{y:+,.2f} ${QUOTE}<br>%{customdata[0]} trades, fees %{customdata[1]:,.2f}<extra></extra>`,
    }], layout({ showlegend: false, hovermode: "closest", xaxis: Object.assign({ type: "date" }, AXIS),
      yaxis: Object.assign({ side: "right", tickformat: ",.0f" }, AXIS) }), CONFIG);
  }

  function histChart(h) {
    const holder = $("#hist-chart");
    if (!holder || !h || !h.count.length) return;
    const x = h.left.map((l, i) => l + h.width[i] / 2);
    window.Plotly.newPlot(holder, [{
      type: "bar", x, y: h.count, width: h.width.map((w) => w * 0.95), name: "trades",
      marker: { color: x.map((c) => (c >= 0 ? "#00ff88" : "#ff3366")) },
      customdata: h.left.map((l, i) => [l, l + h.width[i]]),
      hovertemplate: "%{customdata[0]:.3f}% to %{customdata[1]:.3f}%: %{y} trades<extra></extra>",
    }], layout({ showlegend: false, hovermode: "closest", bargap: 0,
      xaxis: Object.assign({ ticksuffix: "%", title: { text: "net return per trade" } }, AXIS),
      yaxis: Object.assign({ side: "right", title: { text: "trades" } }, AXIS) }), CONFIG);
  }

  // price: the server buckets the visible range; each zoom or pan asks for the new range
  const price = { holder: null, url: "", busy: 0, timer: null, range: null };
  function priceTraces(d) {
    const x = d.t.map(msToX);
    const marks = (m, name, symbol, color) => ({
      type: "scatter", mode: "markers", name, x: m.t.map(msToX), y: m.price, text: m.text, hoverinfo: "text+y",
      marker: { symbol, size: 10, color, line: { color: "#0a0e27", width: 1 } },
    });
    return [
      { type: "candlestick", name: d.width_min > 1 ? `${d.width_min}-min buckets` : "1m candles", x, open: d.open, high: d.high,
        low: d.low, close: d.close, increasing: { line: { color: "#00ff88", width: 1 } }, decreasing: { line: { color: "#ff3366", width: 1 } } },
      marks(d.entries_long, "long entry", "triangle-up", "#00ff88"),
      marks(d.entries_short, "short entry", "triangle-down", "#ff3366"),
      marks(d.exits, "exit", "x", "#a855f7"),
    ];
  }
  async function loadPrice(startMs, endMs) {
    const mine = ++price.busy;
    const q = startMs && endMs ? "?" + new URLSearchParams({ start: Math.floor(startMs), end: Math.ceil(endMs) }) : "";
    const r = await fetch(price.url + q, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!r.ok || mine !== price.busy) return;
    const d = await r.json();
    if (mine !== price.busy) return;
    const note = $("#price-note");
    if (note) {
      note.textContent = `${fmtInt(d.t.length)} ${d.width_min > 1 ? d.width_min + "-min buckets" : "1m candles"} of ` +
        `${fmtInt(d.bars)} bars · ${fmtInt(d.trades_shown)} trades${d.trades_more ? " (first " + fmtInt(d.trades_shown) + " shown)" : ""}`;
    }
    const lay = layout({ showlegend: true, hovermode: "closest", uirevision: "price",
      xaxis: Object.assign({ type: "date", rangeslider: { visible: false } }, AXIS, price.range ? { range: price.range } : {}),
      yaxis: Object.assign({ side: "right", tickformat: ",.2f", autorange: true }, AXIS) });
    window.Plotly.react(price.holder, priceTraces(d), lay, CONFIG);
    price.holder.dataset.buckets = String(d.t.length);
    price.holder.dataset.width = String(d.width_min);
  }
  function priceChart() {
    const cardEl = $("#price-card");
    price.holder = $("#price-chart");
    if (!cardEl || !price.holder) return;
    price.url = cardEl.dataset.priceUrl;
    loadPrice().then(() => {
      price.holder.on("plotly_relayout", (ev) => {
        let a = ev["xaxis.range[0]"], b = ev["xaxis.range[1]"];
        if (ev["xaxis.range"]) [a, b] = ev["xaxis.range"];
        if (ev["xaxis.autorange"]) { price.range = null; clearTimeout(price.timer); price.timer = setTimeout(() => loadPrice(), 150); return; }
        if (a === undefined || b === undefined) return;
        price.range = [a, b];
        clearTimeout(price.timer);
        price.timer = setTimeout(() => loadPrice(xToMs(a), xToMs(b)), 200);
      });
    }).catch(() => {});
  }

  function compareChart(d) {
    const holder = $("#compare-chart");
    if (!holder || !d) return;
    window.Plotly.newPlot(holder, d.runs.map((r, i) => ({
      type: "scatter", mode: "lines", name: r.label, x: r.t.map(msToX), y: r.equity,
      line: { color: COLORS[i % COLORS.length], width: 1.5 },
    })), layout({ xaxis: Object.assign({ type: "date" }, AXIS), yaxis: Object.assign({ side: "right", tickformat: ",.0f", title: { text: QUOTE } }, AXIS) }),
    CONFIG);
  }

  function charts() {
    if (!window.Plotly) return;
    const d = readJson("lab-chart-data");
    if (d) {
      equityChart(d.equity);
      dailyChart(d.daily);
      histChart(d.histogram);
      priceChart();
    }
    const c = readJson("lab-compare-data");
    if (c) compareChart(c);
  }
  // plotly.min.js is loaded with `defer` before this script, so it is there by now; wait for it otherwise.
  if (window.Plotly) charts(); else window.addEventListener("load", charts);
})();
