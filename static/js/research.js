/* hftweb research pages: a study's live progress, the new-study form (search space per ghost, budget), and
 * the results' plotly charts (stitched out-of-sample equity, parameter importance, parallel coordinates).
 *
 * Progress: desk.js re-dispatches each "study.progress" event as a "desk:study" DOM event; progress.js (loaded
 * before this file) follows them, polls the study page's progress.json while the study is active and reloads it
 * at the end; this file draws a study's row, card, folds and controls.
 *
 * Plain ES2020, no build step. Server strings reach the page through textContent only.
 */
(function () {
  "use strict";
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));
  const QUOTE = document.body.dataset.quote || "USDT";
  const { TERMINAL, finite, fmtInt, pct, eta, drawBar, track } = window.hftProgress; // progress.js
  const fmtScore = (x) => (finite(x) ? x.toFixed(3) : "—");
  const ACTIVE = new Set(["queued", "running"]);
  function setBadge(el, status) {
    if (!el) return;
    el.textContent = status;
    el.className = "badge run-status study-status " + status;
  }

  // ---- progress: the studies list ------------------------------------------------------------------------------
  function onStudyRow(ev) {
    const tr = document.getElementById("study-" + ev.study_id);
    if (!tr) return;
    tr.dataset.status = ev.status;
    setBadge($(".study-status", tr), ev.status);
    const fill = $(".run-progress .fill", tr);
    if (fill) fill.style.width = pct(ev.trials_done, ev.trials_total).toFixed(1) + "%";
    const n = $(".study-trials", tr);
    if (n) n.textContent = `${fmtInt(ev.trials_done)} / ${fmtInt(ev.trials_total)}`;
    const bar = $(".run-progress", tr);
    if (bar) bar.hidden = !ACTIVE.has(ev.status) && ev.status !== "paused";
  }

  // ---- progress: one study's page ------------------------------------------------------------------------------
  const card = $("#progress");
  function showControls(status) {
    // each control says in data-when the states it applies to ("running queued", "paused" ...)
    $$("[data-when]").forEach((el) => { el.hidden = !el.dataset.when.split(" ").includes(status); });
  }
  function onStudyPage(ev, was) {
    setBadge($("#study-status"), ev.status);
    drawBar(card, ev.trials_done, ev.trials_total);
    $("#progress-done").textContent = fmtInt(ev.trials_done);
    $("#progress-total").textContent = fmtInt(ev.trials_total);
    $("#progress-eta").textContent = ev.status === "paused" ? "paused" : eta(ev.eta_s);
    let best = null;
    (ev.folds || []).forEach((f) => {
      const tr = document.getElementById("fold-progress-" + f.index);
      if (finite(f.best_train) && (best === null || f.best_train > best.best_train)) best = f;
      if (!tr) return;
      $(".fold-done", tr).textContent = fmtInt(f.done);
      const total = Number(tr.dataset.total || 0);
      const fill = $(".fill", tr);
      if (fill) fill.style.width = pct(f.done, total).toFixed(1) + "%";
      $(".fold-best-train", tr).textContent = fmtScore(f.best_train);
      $(".fold-best-test", tr).textContent = fmtScore(f.best_test);
    });
    const bestEl = $("#progress-best");
    if (bestEl) bestEl.textContent = best ? `${fmtScore(best.best_train)} (fold ${best.index + 1})` : "—";
    if (was !== ev.status) showControls(ev.status);
  }
  if (card && !TERMINAL.has(card.dataset.status)) showControls(card.dataset.status);
  const studyPage = track({ eventName: "desk:study", idKey: "study_id", idData: "studyId", label: "Study", card,
    onRow: onStudyRow, onPage: onStudyPage });

  // pause / resume / cancel: posted with fetch (the forms also work without JS: they redirect back)
  $$("form.study-action").forEach((f) => {
    f.addEventListener("submit", async (e) => {
      e.preventDefault();
      const btn = $("button", f);
      const label = btn.textContent;
      btn.disabled = true;
      try {
        const r = await fetch(f.action, { method: "POST", body: new FormData(f), credentials: "same-origin",
          headers: { Accept: "application/json" } });
        const data = await r.json().catch(() => null);
        if (!r.ok || !data || !data.ok) {
          if (window.hftDesk) window.hftDesk.toast((data && data.error) || `refused (HTTP ${r.status})`, "error");
        } else {
          studyPage(data.progress);
        }
      } catch (err) { /* the socket or the next poll shows the state */ }
      btn.disabled = false;
      btn.textContent = label;
    });
  });

  // ---- the new-study form ----------------------------------------------------------------------------------------
  const form = $("#study-form");
  if (form) {
    const target = $("#id_target", form);
    const showTarget = () => {
      // only the chosen target's search space is shown and posted (disabled inputs are not submitted)
      $$("[data-space]", form).forEach((el) => {
        const on = el.dataset.space === target.value || (target.value === "desk" && el.dataset.desk === "1");
        el.hidden = !on;
        $$("input, select, textarea", el).forEach((i) => { i.disabled = !on; });
      });
    };
    const budget = () => {
      const mode = $("#id_budget_mode", form).value;
      $$("[data-budget]", form).forEach((f) => { f.hidden = f.dataset.budget !== mode; });
    };
    const sizing = () => {
      const mode = $("#id_sizing_mode", form);
      if (!mode) return;
      $$("[data-sizing]", form).forEach((f) => { f.hidden = f.dataset.sizing !== mode.value; });
    };
    const stepHint = () => {
      const step = $("#id_step_days", form);
      step.placeholder = $("#id_test_days", form).value || "";
    };
    target.addEventListener("change", showTarget);
    $("#id_budget_mode", form).addEventListener("change", budget);
    if ($("#id_sizing_mode", form)) $("#id_sizing_mode", form).addEventListener("change", sizing);
    $("#id_test_days", form).addEventListener("input", stepHint);
    // a row's range inputs are greyed while the row is not searched (its value is the fixed parameter)
    form.addEventListener("change", (e) => {
      if (e.target.classList.contains("space-on")) e.target.closest("tr").classList.toggle("off", !e.target.checked);
    });
    const inst = $("#id_instrument", form);
    if (inst) {
      inst.addEventListener("change", () => {
        const opt = inst.selectedOptions[0];
        if (opt && opt.dataset.first && opt.dataset.last) { $("#id_start").value = opt.dataset.first; $("#id_end").value = opt.dataset.last; }
      });
    }
    // how many folds the range and lengths make, said by the server (apps.engine.walkforward.make_folds)
    let foldTimer = null;
    let foldSeq = 0;
    const folds = async () => {
      const mine = ++foldSeq;
      const q = new URLSearchParams();
      ["start", "end", "scheme", "train_days", "test_days", "step_days"].forEach((n) => {
        const el = form.elements[n];
        if (el) q.append(n, el.value);
      });
      try {
        const r = await fetch(form.dataset.foldsUrl + "?" + q, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (!r.ok || mine !== foldSeq) return;
        const d = await r.json();
        if (mine === foldSeq) $("#fold-note").textContent = d.note || "";
      } catch (e) { /* the server checks again on start */ }
    };
    ["#id_start", "#id_end", "#id_scheme", "#id_train_days", "#id_test_days", "#id_step_days"].forEach((sel) => {
      const el = $(sel, form);
      if (el) el.addEventListener(el.tagName === "SELECT" || el.type === "date" ? "change" : "input", () => {
        clearTimeout(foldTimer); foldTimer = setTimeout(folds, 250);
      });
    });
    showTarget(); budget(); sizing(); stepHint();
    form.addEventListener("submit", () => { const b = $("#start-study"); b.disabled = true; b.textContent = "Starting…"; });
  }

  // ---- apply: a trial row's button fills the apply form ----------------------------------------------------------
  const apply = $("#apply-form");
  if (apply) {
    $$("a.use-trial").forEach((b) => b.addEventListener("click", (e) => {
      e.preventDefault(); // on the study page: fill the form below instead of reloading it
      $("#id_trial", apply).value = b.dataset.trial;
      apply.scrollIntoView({ behavior: "smooth", block: "center" });
      $("#id_reason", apply).focus();
    }));
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
  const FOLD_COLORS = ["#00d4ff", "#a855f7", "#ffaa00", "#00ff88", "#ff6bd6", "#7aa2ff"];
  const layout = (extra) => Object.assign({}, THEME, extra);
  const msToX = (ms) => new Date(ms).toISOString().slice(0, 19).replace("T", " ");

  function readJson(id) {
    const el = document.getElementById(id);
    if (!el) return null;
    try { return JSON.parse(el.textContent); } catch (e) { return null; }
  }

  function equityChart(d) {
    const holder = $("#oos-equity-chart");
    if (!holder || !d || !d.t.length) return;
    const x = d.t.map(msToX);
    // one shaded band per fold's test window, so the reader sees where each fold's chosen params traded
    const shapes = (d.folds || []).map((f, i) => ({
      type: "rect", xref: "x", yref: "paper", x0: msToX(f.start), x1: msToX(f.end), y0: 0, y1: 1, layer: "below",
      line: { width: 0 }, fillcolor: FOLD_COLORS[i % FOLD_COLORS.length], opacity: 0.06,
    }));
    const annotations = (d.folds || []).map((f) => ({
      xref: "x", yref: "paper", x: msToX(f.start), y: 0.94, yanchor: "top", xanchor: "left", showarrow: false,
      text: f.label, font: { size: 10, color: "#8590b8" },
    }));
    window.Plotly.newPlot(holder, [
      { type: "scatter", mode: "lines", name: `out-of-sample equity (${QUOTE})`, x, y: d.equity, line: { color: "#00d4ff", width: 1.5 }, xaxis: "x", yaxis: "y" },
      { type: "scatter", mode: "lines", name: "drawdown (%)", x, y: d.drawdown, fill: "tozeroy", line: { color: "#ff3366", width: 1 },
        fillcolor: "rgba(255,51,102,.25)", xaxis: "x", yaxis: "y2" },
    ], layout({
      shapes, annotations,
      grid: { rows: 2, columns: 1, subplots: [["xy"], ["xy2"]], roworder: "top to bottom" },
      xaxis: Object.assign({ type: "date", matches: "x" }, AXIS),
      yaxis: Object.assign({ side: "right", domain: [0.34, 0.94], tickformat: ",.0f", title: { text: QUOTE } }, AXIS),
      yaxis2: Object.assign({ side: "right", domain: [0, 0.28], ticksuffix: "%", rangemode: "tozero" }, AXIS),
    }), CONFIG);
  }

  function importanceChart(d) {
    const holder = $("#importance-chart");
    if (!holder || !d || !d.param.length) return;
    // plotly draws horizontal bars bottom-up: reversed, so the most important parameter is on top
    window.Plotly.newPlot(holder, [{
      type: "bar", orientation: "h", y: d.param.slice().reverse(), x: d.value.slice().reverse(),
      marker: { color: "#a855f7" }, hovertemplate: "%{y}: %{x:.1%}<extra></extra>",
    }], layout({ showlegend: false, hovermode: "closest", margin: { l: 150, r: 20, t: 10, b: 30 },
      xaxis: Object.assign({ tickformat: ".0%", rangemode: "tozero" }, AXIS), yaxis: Object.assign({ automargin: true }, AXIS) }), CONFIG);
  }

  function parcoordsChart(d) {
    const holder = $("#parcoords-chart");
    if (!holder || !d || !d.dimensions.length || !d.n) return;
    window.Plotly.newPlot(holder, [{
      type: "parcoords",
      line: { color: d.color, colorscale: [[0, "#ff3366"], [0.5, "#8590b8"], [1, "#00ff88"]], showscale: true,
        cmin: d.cmin, cmax: d.cmax, colorbar: { title: { text: d.color_label, side: "right" }, thickness: 10 } },
      dimensions: d.dimensions,
      // long parameter names on many axes: tilted so neighbours do not overlap
      labelangle: d.dimensions.length > 5 ? -18 : 0, labelside: "top",
      labelfont: { size: 11, color: "#dfe6ff" }, tickfont: { size: 10, color: "#8590b8" },
      rangefont: { size: 9, color: "#8590b8" },
    }], layout({ margin: { l: 60, r: 60, t: d.dimensions.length > 5 ? 70 : 40, b: 20 } }), CONFIG);
  }

  function logitChart(h) {
    const holder = $("#logit-chart");
    if (!holder || !h || !h.count.length) return;
    const x = h.left.map((l, i) => l + h.width[i] / 2);
    window.Plotly.newPlot(holder, [{
      type: "bar", x, y: h.count, width: h.width.map((w) => w * 0.95),
      marker: { color: h.left.map((l, i) => (l + h.width[i] <= 0 ? "#ff3366" : "#00ff88")) },
      customdata: h.left.map((l, i) => [l, l + h.width[i]]),
      hovertemplate: "λ %{customdata[0]:.1f} to %{customdata[1]:.1f}: %{y} splits<extra></extra>",
    }], layout({ showlegend: false, hovermode: "closest", bargap: 0, margin: { l: 10, r: 40, t: 6, b: 40 },
      xaxis: Object.assign({ title: { text: "logit λ (ends clipped at ±6)", standoff: 6 }, zeroline: true }, AXIS),
      yaxis: Object.assign({ side: "right" }, AXIS) }), Object.assign({}, CONFIG, { displayModeBar: false }));
  }

  function charts() {
    if (!window.Plotly) return;
    const d = readJson("study-chart-data");
    if (!d) return;
    logitChart(d.logits);
    equityChart(d.equity);
    importanceChart(d.importance);
    parcoordsChart(d.parcoords);
  }
  if (window.Plotly) charts(); else window.addEventListener("load", charts);
})();
