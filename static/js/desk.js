/* hftweb desk: live updates over one websocket, plus the ghost toggles.
 *
 * Plain ES2020, no build step, no CDN. Server strings only ever reach the page through textContent
 * (never innerHTML), so a ghost name or a signal reason cannot inject markup.
 *
 * The header clock (data time and wall time) moves with market.tick and feed.status.
 * Events handled (JSON objects with "type"): market.tick, bar.closed, signal.created, signal.updated,
 * trade.filled, pnl.updated, ghost.toggled, ghost.status, feed.status, error; plus positions.snapshot
 * from /state.json, which is fetched on every (re)connect so nothing missed while offline stays stale.
 */
(function () {
  "use strict";

  const body = document.body;
  if (!body.dataset.wsPath) return; // the login page

  const QUOTE = body.dataset.quote || "USDT";
  const MAX_SIGNALS = 50;
  const $ = (sel, root) => (root || document).querySelector(sel);
  const $$ = (sel, root) => Array.from((root || document).querySelectorAll(sel));

  // ---- formatting (mirrors apps/dashboard/templatetags/desk.py) ---------------------------------------
  const finite = (x) => typeof x === "number" && Number.isFinite(x);
  const num = (x) => (x === null || x === undefined || x === "" ? NaN : Number(x));
  const fixed = (x, d) => x.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
  function money(x) { x = num(x); return finite(x) ? fixed(x, 2) : "—"; }
  function signedMoney(x) {
    x = num(x);
    if (!finite(x)) return "—";
    const r = Math.round(x * 100) / 100;
    if (r === 0) return "0.00";
    return (r > 0 ? "+" : "−") + fixed(Math.abs(r), 2); // a true minus sign, as the server renders it
  }
  function pnlClass(x) {
    x = num(x);
    if (!finite(x) || Math.round(x * 100) === 0) return "flat";
    return x > 0 ? "pos" : "neg";
  }
  function price(x) {
    x = num(x);
    if (!finite(x)) return "—";
    const a = Math.abs(x);
    return fixed(x, a >= 1000 ? 2 : a >= 1 ? 4 : 8);
  }
  function qty(x) {
    x = num(x);
    if (!finite(x)) return "—";
    return fixed(x, 8).replace(/0+$/, "").replace(/\.$/, "") || "0";
  }
  const pad = (n) => String(n).padStart(2, "0");
  function utc(iso, withSeconds) {
    const d = new Date(iso);
    if (isNaN(d)) return "";
    const s = `${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
    return withSeconds ? `${s}:${pad(d.getUTCSeconds())}` : s;
  }
  function chartTime(iso) { // plotly ignores zones: naive UTC, as the server's chart data
    const d = new Date(iso);
    return isNaN(d) ? null : d.toISOString().slice(0, 19).replace("T", " ");
  }
  function setSignClass(el, x) {
    el.classList.remove("pos", "neg", "flat");
    el.classList.add(pnlClass(x));
  }
  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  // mirrors the feed_class template filter: "down" (its runner's heartbeat lapsed) is red like error and stopped
  const FEED_BAD = new Set(["error", "stopped", "down"]);
  const feedClass = (s) => (!s ? "off" : s === "connected" ? "ok" : FEED_BAD.has(s) ? "bad" : "warn");
  const statusClass = (s) => ({ active: "ok", degraded: "warn", disabled: "off" })[s] || "off";
  const fateLabel = (f) => String(f || "").replace(/_/g, " ");

  // ---- toasts ---------------------------------------------------------------------------------------
  function toast(message, kind, ms) {
    const box = $("#toasts");
    if (!box) return;
    const t = el("div", "toast " + (kind || ""), message);
    t.setAttribute("role", kind === "error" ? "alert" : "status");
    box.appendChild(t);
    while (box.children.length > 5) box.removeChild(box.firstChild);
    // errors (an auto-disable, a refused action) stay long enough to be read on a busy desk; a click dismisses
    t.addEventListener("click", () => t.remove());
    setTimeout(() => t.remove(), ms || (kind === "error" ? 20000 : 6000));
  }

  // ---- the desk clock (issue 14, one clock) -----------------------------------------------------------------
  // Mirrors apps.common.clock.desk_clock: the data time is the newest trade any feed has seen. Per instrument, the
  // time of its last trade (a pushed tick's ts; a feed status's last_trade_at, also from state.json on every
  // reconnect); the header shows the newest of them, so a replay that starts over moves only its own entry back.
  // The wall time is this browser's clock, redrawn every few seconds.
  const lastTrade = new Map();
  const feedSource = new Map(); // instrument id -> FeedStatus.source, from feed.status events
  const WALL_REDRAW_MS = 5000;
  function speedLabel(source) { // mirrors apps.common.clock.feed_speed_label
    const box = $("#desk-clock");
    const low = String(source || "").trim().toLowerCase();
    if (low.startsWith("replay")) {
      const bodyText = low.slice(low.indexOf(":") + 1);
      const speed = bodyText.includes("@") ? bodyText.slice(bodyText.lastIndexOf("@") + 1).trim() : box.dataset.replaySpeed;
      return speed === "0" || speed === "max" ? "REPLAY max" : `REPLAY ×${speed}`;
    }
    if (low.startsWith("sim")) return `SIM ×${box.dataset.simSpeed}`;
    if (low.startsWith("live") || low.startsWith("ccxt")) return "LIVE";
    return low.toUpperCase();
  }
  function drawDataClock() {
    const t = $("#clock-data");
    if (!t || lastTrade.size === 0) return;
    let newestId = null;
    lastTrade.forEach((ms, id) => { if (newestId === null || ms > lastTrade.get(newestId)) newestId = id; });
    const iso = new Date(lastTrade.get(newestId)).toISOString();
    const src = $("#clock-source");
    if (src && feedSource.has(newestId)) src.textContent = speedLabel(feedSource.get(newestId));
    if (t.dateTime === iso) return;
    t.dateTime = iso;
    t.textContent = utc(iso);
  }
  function clockSeen(instrumentId, iso, source) {
    const ms = Date.parse(iso || "");
    if (source) feedSource.set(String(instrumentId), source);
    if (Number.isNaN(ms)) return;
    lastTrade.set(String(instrumentId), ms);
    drawDataClock();
  }
  function drawWallClock() {
    const t = $("#clock-wall");
    if (!t) return;
    const iso = new Date().toISOString();
    t.dateTime = iso;
    t.textContent = utc(iso);
  }
  function initClock() {
    const box = $("#desk-clock");
    if (!box) return;
    const seeded = Date.parse(box.dataset.dataTime || "");
    if (box.dataset.instrumentId && !Number.isNaN(seeded)) lastTrade.set(box.dataset.instrumentId, seeded);
    drawWallClock();
    setInterval(drawWallClock, WALL_REDRAW_MS);
  }

  // ---- header and feeds -------------------------------------------------------------------------------
  function onTick(ev) {
    const id = String(ev.instrument_id);
    clockSeen(id, ev.ts);
    const header = $("#header-feed");
    if (header && header.dataset.instrumentId === id) $("#last-price").textContent = price(ev.price);
    $$(`[data-feed-id="${CSS.escape(id)}"] .feed-price`).forEach((e) => { e.textContent = price(ev.price); });
  }

  function onFeedStatus(ev) {
    const id = String(ev.instrument_id);
    clockSeen(id, ev.last_trade_at, ev.source);
    const cls = feedClass(ev.state);
    const header = $("#header-feed");
    if (header && header.dataset.instrumentId === id) {
      const st = $("#feed-state");
      st.textContent = ev.state || "—";
      st.className = "feed-state " + cls;
      const dot = $(".dot", header);
      if (dot) dot.className = "dot " + cls;
      if (ev.last_price !== null && ev.last_price !== undefined) $("#last-price").textContent = price(ev.last_price);
    }
    $$(`[data-feed-id="${CSS.escape(id)}"]`).forEach((card) => {
      card.classList.remove("ok", "warn", "bad", "off");
      card.classList.add(cls);
      const st = $(".feed-state", card);
      if (st) st.textContent = ev.state || "—";
      const dot = $(".dot", card);
      if (dot) dot.className = "dot " + cls;
      if (ev.last_price !== null && ev.last_price !== undefined) $(".feed-price", card).textContent = price(ev.last_price);
      const err = $(".feed-error", card);
      if (err) { err.textContent = ev.last_error || ""; err.hidden = !ev.last_error; }
      const rej = $(".feed-rejected", card);
      if (rej && ev.rejected) {
        const parts = Object.entries(ev.rejected).filter(([, n]) => n > 0)
          .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).map(([k, n]) => `${k} ${n.toLocaleString("en-US")}`);
        $(".num", rej).textContent = parts.join(" · ");
        rej.hidden = parts.length === 0;
      }
      const retry = $(".feed-retry", card);
      if (retry) {
        const t = $("time", retry);
        if (ev.next_retry_at && t) {
          const d = new Date(ev.next_retry_at);
          t.textContent = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
          t.dateTime = ev.next_retry_at;
        }
        retry.hidden = !ev.next_retry_at;
      }
    });
  }

  // ---- P&L and progress bars --------------------------------------------------------------------------
  function updateProgress(container, pnl) {
    const amount = num(container.dataset.targetAmount);
    $$(".ghost-pnl-value, .progress-pnl", container).forEach((e) => { e.textContent = signedMoney(pnl); setSignClass(e, pnl); });
    if (!finite(amount) || amount <= 0) return; // "no target set" stays as rendered: never NaN%
    const pct = (num(pnl) / amount) * 100;
    if (!finite(pct)) return;
    const pctEl = $(".progress-pct", container);
    if (pctEl) pctEl.textContent = pct.toFixed(1).replace("-", "−") + "%";
    const bar = $(".progress", container);
    const fill = $(".progress .fill", container);
    const width = Math.max(0, Math.min(100, pct));
    if (fill) { fill.style.width = width.toFixed(1) + "%"; setSignClass(fill, pnl); }
    if (bar) bar.setAttribute("aria-valuenow", width.toFixed(1));
  }

  function onPnl(ev) {
    $$("[data-pnl-field]").forEach((e) => {
      const v = ev[e.dataset.pnlField];
      if (v === undefined) return;
      if (e.dataset.int) e.textContent = String(v);
      else if (e.dataset.signed) { e.textContent = signedMoney(v); setSignClass(e, v); }
      else e.textContent = money(v);
    });
    Object.entries(ev.ghosts || {}).forEach(([gid, pnl]) => {
      const row = document.getElementById("ghost-" + gid);
      if (row) updateProgress(row, pnl);
    });
    // The portfolio card follows live only when its period is the day (the event carries today's P&L).
    const pt = $("#portfolio-target");
    if (pt && pt.dataset.period === "day" && pt.dataset.targetAmount) updateProgress(pt, ev.today_pnl);
    onPnlDay(ev.day);
  }

  // "Today" is the data's day (the desk's one clock): the feeds push pnl.updated when it turns, and the day named
  // beside today's figures follows without a reload: the overview's "day …" label ([data-pnl-day]) and the
  // header Today's tooltip ([data-pnl-day-title] holds the day its title names).
  function onPnlDay(day) {
    if (typeof day !== "string" || !/^\d{4}-\d\d-\d\d$/.test(day)) return;
    $$("[data-pnl-day]").forEach((e) => { if (e.textContent !== day) e.textContent = day; });
    $$("[data-pnl-day-title]").forEach((e) => {
      const shown = e.dataset.pnlDayTitle;
      if (shown === day) return;
      if (shown && e.title.includes(shown)) e.title = e.title.split(shown).join(day);
      e.dataset.pnlDayTitle = day;
    });
  }

  // ---- signals ----------------------------------------------------------------------------------------
  function fillSignal(li, ev) {
    li.className = "signal side-" + ev.side;
    li.dataset.fate = ev.fate;
    li.dataset.barTime = ev.bar_time;
    li.replaceChildren();
    const row = el("div", "row");
    const t = el("time", "num muted", utc(ev.bar_time));
    t.dateTime = ev.bar_time;
    row.append(t, el("strong", "sig-ghost", ev.ghost), el("span", "badge side " + ev.side, ev.side));
    const conf = el("span", "num sig-conf", finite(num(ev.confidence)) ? Math.round(num(ev.confidence) * 100) + "%" : "—");
    conf.title = "confidence: the ghost's own 0..1 score for this draft";
    const fate = el("span", "badge fate sig-fate " + ev.fate, fateLabel(ev.fate));
    if (ev.fate_detail) fate.title = ev.fate_detail;
    const why = el("a", "why-link small", "why?");
    why.href = "/signals/" + encodeURIComponent(ev.id) + "/";
    why.title = "why did it (not) trade?";
    row.append(conf, fate, why);
    li.append(row, el("p", "sig-reason", ev.reason));
  }

  function onSignal(ev) {
    const list = $("#signals");
    if (!list) return;
    // Filtered to one instrument (the overview's selector): another instrument's ghost's signal stays out. The
    // chart's ghost set is exactly the chosen instrument's ghosts (the payload names the ghost, not the instrument).
    if (list.dataset.instrumentId && !(chart.ghosts && chart.ghosts.has(String(ev.ghost_id)))) return;
    let li = document.getElementById("signal-" + ev.id);
    const fresh = !li;
    if (fresh) { li = el("li"); li.id = "signal-" + ev.id; }
    fillSignal(li, ev);
    if (!fresh) return;
    const empty = $("#signals-empty");
    if (empty) empty.remove();
    // Newest bar first; an event for an older bar (catch-up) slots in where it belongs.
    const t = new Date(ev.bar_time).getTime();
    const after = $$("li.signal", list).find((o) => new Date(o.dataset.barTime).getTime() < t);
    list.insertBefore(li, after || null);
    li.classList.add("flash");
    $$("li.signal", list).slice(MAX_SIGNALS).forEach((o) => o.remove());
  }

  // ---- positions table ----------------------------------------------------------------------------------
  let ghostSymbols = {};
  try { ghostSymbols = JSON.parse(($("#ghost-symbols") || {}).textContent || "{}"); } catch (e) { ghostSymbols = {}; }

  function positionRow(p) {
    const tr = el("tr");
    tr.id = "position-" + p.position_id;
    tr.dataset.ghostId = p.ghost_id;
    const side = el("td");
    side.append(el("span", "badge side " + p.side, p.side));
    tr.append(el("td", "", p.ghost), el("td", "", p.symbol || ghostSymbols[String(p.ghost_id)] || "—"), side,
      el("td", "r num", qty(p.quantity)), el("td", "r num", price(p.price)),
      el("td", "r num loss", price(p.stop)), el("td", "r num profit", price(p.target)),
      el("td", "num", utc(p.ts, true)));
    // Issue 14: operators get the close form on every row (the overview renders its <template> for them only).
    const closeTpl = document.getElementById("close-position-tpl");
    if (closeTpl) {
      const cell = closeTpl.content.querySelector("td.close-cell").cloneNode(true);
      const form = $("form", cell);
      form.setAttribute("action", form.getAttribute("action").replace("/0/close/", "/" + p.position_id + "/close/"));
      $("input[name=reason]", cell).setAttribute("aria-label", "Reason to close position " + p.position_id);
      tr.append(cell);
    }
    return tr;
  }

  function positionsEmpty(tbody) {
    if ($("tr:not(.empty-row)", tbody)) { const e = $("tr.empty-row", tbody); if (e) e.remove(); return; }
    if ($("tr.empty-row", tbody)) return;
    const tr = el("tr", "empty-row");
    const td = el("td", "empty", "No open positions: enable a ghost or start the sim feed; positions open when a signal is taken.");
    td.colSpan = 8;
    tr.append(td);
    tbody.append(tr);
  }

  function onPositionsSnapshot(ev) {
    const tbody = $("#positions");
    if (!tbody) return;
    tbody.replaceChildren(...(ev.positions || []).slice().reverse().map(positionRow)); // newest first
    positionsEmpty(tbody);
  }

  function onTrade(ev) {
    const tbody = $("#positions");
    if (tbody) {
      const existing = document.getElementById("position-" + ev.position_id);
      if (ev.purpose === "entry" && !existing) {
        const tr = positionRow(ev);
        tr.classList.add("flash");
        tbody.insertBefore(tr, tbody.firstChild);
      } else if (ev.purpose === "exit" && existing) {
        existing.remove();
      }
      positionsEmpty(tbody);
    }
    chartMarker(ev);
    if (ev.purpose === "exit") {
      const net = ev.net_pnl === null || ev.net_pnl === undefined ? "" : ` net ${signedMoney(ev.net_pnl)} ${QUOTE}`;
      toast(`${ev.ghost}: ${ev.side} closed (${ev.exit_reason || "exit"}) at ${price(ev.price)}${net}`,
        num(ev.net_pnl) > 0 ? "ok" : "warn", 5000);
    } else {
      toast(`${ev.ghost}: ${ev.side} entry ${qty(ev.quantity)} at ${price(ev.price)}`, "", 4000);
    }
  }

  // ---- chart (plotly, served from the installed package at /vendor/plotly.min.js) -------------------------
  const chart = { ready: false };
  const THEME = {
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
    font: { color: "#8590b8", family: "system-ui, sans-serif", size: 11 },
    margin: { l: 10, r: 60, t: 10, b: 30 }, showlegend: false, dragmode: "pan", hovermode: "closest",
    xaxis: { type: "date", gridcolor: "#1b2452", rangeslider: { visible: false }, title: { text: "" } },
    // automargin: the right margin grows to the widest price label ("111,000.00" did not fit 60 px: issue 14)
    yaxis: { side: "right", gridcolor: "#1b2452", tickformat: ",.2f", fixedrange: false, automargin: true },
  };

  function chartTraces(d) {
    const marks = (m, name, symbol, color) => ({
      type: "scatter", mode: "markers", name, x: m.x, y: m.y, text: m.text, hoverinfo: "text+y",
      marker: { symbol, size: 12, color, line: { color: "#0a0e27", width: 1 } },
    });
    return [
      { type: "candlestick", name: d.symbol, x: d.x, open: d.open, high: d.high, low: d.low, close: d.close,
        increasing: { line: { color: "#00ff88" } }, decreasing: { line: { color: "#ff3366" } } },
      marks(d.long, "long entry", "triangle-up", "#00ff88"),
      marks(d.short, "short entry", "triangle-down", "#ff3366"),
      marks(d.exit, "exit", "x", "#a855f7"),
    ];
  }

  function initInstrumentPick() {
    // The chart's instrument selector: a GET form the server answers with that instrument's candles, markers and
    // signals (the live bars and markers of the others are then dropped by onBar/chartMarker/onSignal). With JS the
    // page fetches that answer and swaps in its chart and signals cards: the socket, the header and the rest stay.
    const pick = $("#chart-instrument");
    if (pick && pick.form) pick.addEventListener("change", () => switchInstrument(pick));
  }

  async function switchInstrument(pick) {
    const url = new URL(pick.form.getAttribute("action") || location.pathname, location.href);
    url.search = new URLSearchParams(new FormData(pick.form)).toString();
    pick.disabled = true;
    try {
      const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (!r.ok || r.redirected) throw new Error("HTTP " + r.status);
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      const cards = ["#chart-card", "#signals-card"].map((sel) => [$(sel), doc.querySelector(sel)]);
      if (cards.some(([old, fresh]) => !old || !fresh)) throw new Error("no chart card in the answer");
      if (chart.holder && window.Plotly) window.Plotly.purge(chart.holder);
      cards.forEach(([old, fresh]) => old.replaceWith(document.adoptNode(fresh)));
      for (const k of Object.keys(chart)) delete chart[k];
      chart.ready = false;
      history.replaceState(null, "", url);
      initChart();
      initInstrumentPick();
    } catch (e) {
      pick.form.submit(); // the page the form names, loaded whole: slower, never wrong
    }
  }

  function initChart() {
    const dataEl = $("#chart-data");
    if (!dataEl) return;
    let d;
    try { d = JSON.parse(dataEl.textContent); } catch (e) { return; }
    Object.assign(chart, { data: d, instrumentId: String(d.instrument_id), ghosts: new Set((d.ghosts || []).map(String)),
      maxBars: d.max_bars || 240, lastX: d.x.length ? d.x[d.x.length - 1] : null, holder: $("#price-chart") });
    if (d.x.length) drawChart();
  }

  function drawChart() {
    if (!chart.holder || !window.Plotly) return;
    chart.holder.hidden = false;
    const empty = $("#price-chart-empty");
    if (empty) empty.hidden = true;
    window.Plotly.newPlot(chart.holder, chartTraces(chart.data), THEME,
      { responsive: true, displaylogo: false, scrollZoom: true, modeBarButtonsToRemove: ["select2d", "lasso2d"] });
    chart.ready = true;
  }

  function onBar(ev) {
    if (!chart.data || String(ev.instrument_id) !== chart.instrumentId) return;
    const x = chartTime(ev.open_time);
    if (!x || (chart.lastX && x <= chart.lastX)) return; // a replayed or duplicate bar: already drawn
    chart.lastX = x;
    const o = num(ev.open), h = num(ev.high), l = num(ev.low), c = num(ev.close);
    if (![o, h, l, c].every(finite)) return;
    if (!chart.ready) { // the first bar ever: build the chart from it
      Object.assign(chart.data, { x: [x], open: [o], high: [h], low: [l], close: [c] });
      drawChart();
      return;
    }
    window.Plotly.extendTraces(chart.holder, { x: [[x]], open: [[o]], high: [[h]], low: [[l]], close: [[c]] }, [0], chart.maxBars);
  }

  function chartMarker(ev) {
    if (!chart.ready || !chart.ghosts || !chart.ghosts.has(String(ev.ghost_id))) return;
    const x = chartTime(ev.ts);
    if (!x) return;
    const idx = ev.purpose === "exit" ? 3 : ev.side === "short" ? 2 : 1;
    const label = ev.purpose === "exit"
      ? `#${ev.position_id} exit (${ev.exit_reason || "closed"})${ev.net_pnl === null || ev.net_pnl === undefined ? "" : " net " + signedMoney(ev.net_pnl) + " " + QUOTE}`
      : `#${ev.position_id} ${ev.side} entry`;
    window.Plotly.extendTraces(chart.holder, { x: [[x]], y: [[num(ev.price)]], text: [[label]] }, [idx]);
  }

  // ---- ghosts -----------------------------------------------------------------------------------------
  function applyGhost(ev, fromSocket) {
    const row = document.getElementById("ghost-" + ev.ghost_id);
    if (!row) return;
    const changed = row.dataset.status !== ev.status;
    row.dataset.status = ev.status;
    const badge = $(".ghost-status", row);
    if (badge) { badge.textContent = ev.status; badge.className = "badge ghost-status " + statusClass(ev.status); }
    const reason = $(".ghost-reason", row);
    if (reason && ev.status_reason !== undefined) { reason.textContent = ev.status_reason || ""; reason.hidden = !ev.status_reason; }
    if (ev.status !== "degraded") { const tb = $(".ghost-error", row); if (tb) tb.remove(); }
    const state = $(".ghost-state", row);
    if (state && ev.state) {
      // [label, value] pairs in the engine's order (an object from an older server: its own order)
      const items = Array.isArray(ev.state) ? ev.state : Object.entries(ev.state);
      state.replaceChildren(...items.map(([label, value]) => {
        const item = document.createElement("div");
        const dt = document.createElement("dt");
        const dd = document.createElement("dd");
        dt.textContent = label; dd.textContent = value; dd.className = "num";
        item.append(dt, dd);
        return item;
      }));
      state.hidden = items.length === 0;
    }
    const form = $("form.toggle", row);
    if (form) {
      form.elements.enabled.value = ev.enabled ? "0" : "1"; // the next click does the opposite
      const btn = $(".toggle-btn", form);
      btn.textContent = ev.enabled ? "Disable" : "Enable";
      btn.dataset.enabled = ev.enabled ? "1" : "0";
      btn.classList.toggle("danger", !!ev.enabled);
      btn.classList.toggle("primary", !ev.enabled);
    }
    // A toast tells about someone else's change; your own click already shows in the row.
    if (fromSocket && changed && ev.type === "ghost.toggled" && ev.actor !== body.dataset.user) {
      toast(`${ev.name}: ${ev.status} by ${ev.actor}${ev.status_reason ? " (" + ev.status_reason + ")" : ""}`, "", 5000);
    } else if (fromSocket && changed && ev.status === "degraded") {
      toast(`${ev.name} is degraded: ${ev.status_reason || "its last evaluation failed"}`, "warn", 8000);
    }
  }

  function toggleError(form, message) {
    const err = $(".toggle-error", form);
    const input = form.elements.reason;
    if (err) { err.textContent = message || ""; err.hidden = !message; }
    if (input) { if (message) input.setAttribute("aria-invalid", "true"); else input.removeAttribute("aria-invalid"); }
  }

  async function submitToggle(form) {
    const input = form.elements.reason;
    const btn = $(".toggle-btn", form);
    if (!input.value.trim()) {
      toggleError(form, "Type a reason first: it is written to the audit log.");
      input.focus();
      return;
    }
    toggleError(form, "");
    btn.disabled = true;
    try {
      const r = await fetch(form.action, {
        method: "POST", body: new FormData(form), credentials: "same-origin",
        headers: { "X-CSRFToken": csrfToken(form), Accept: "application/json" },
      });
      let data = null;
      try { data = await r.json(); } catch (e) { data = null; }
      if (!r.ok || !data || !data.ok) {
        toggleError(form, (data && data.error) || `The server refused the change (HTTP ${r.status}).`);
        return;
      }
      applyGhost(data, false);
      input.value = "";
    } catch (e) {
      toggleError(form, "Network error: the change may not have been saved; check the status and retry.");
    } finally {
      btn.disabled = false;
    }
  }

  function csrfToken(form) {
    const field = form && form.elements.csrfmiddlewaretoken;
    if (field && field.value) return field.value;
    const meta = $('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  document.addEventListener("submit", (e) => {
    const form = e.target.closest && e.target.closest("form.toggle");
    if (!form) return;
    e.preventDefault(); // progressive enhancement: without JS the same form posts and redirects
    submitToggle(form);
  });
  document.addEventListener("input", (e) => {
    const form = e.target.closest && e.target.closest("form.toggle");
    if (form && e.target.value.trim()) toggleError(form, "");
  });

  // ---- kill switch (header banner on every page, the risk page's panel) --------------------------------
  function onKillSwitch(ev, fromSocket) {
    const tripped = !!ev.tripped;
    const banner = $("#killswitch-banner");
    const wasTripped = banner ? !banner.hidden : null;
    const at = ev.at ? utc(ev.at) : "";
    const fill = (root) => {
      if (!root) return;
      $$(".ks-reason", root).forEach((e) => { e.textContent = ev.reason || ""; });
      $$(".ks-actor", root).forEach((e) => { e.textContent = ev.by || "system"; });
      $$(".ks-at", root).forEach((e) => { e.textContent = at; if (ev.at) e.dateTime = ev.at; });
    };
    if (banner) { banner.hidden = !tripped; fill(banner); }
    const card = $("#killswitch");
    if (card) {
      card.dataset.tripped = tripped ? "1" : "0";
      const st = $("#ks-state", card);
      if (st) { st.textContent = tripped ? "TRIPPED" : "armed"; st.classList.toggle("neg", tripped); st.classList.toggle("pos", !tripped); }
      $$("[data-ks-show]", card).forEach((e) => { e.hidden = e.dataset.ksShow !== (tripped ? "tripped" : "armed"); });
      const last = $("#ks-last", card);
      if (last) { last.hidden = !ev.at; fill(last); }
    }
    if (fromSocket && wasTripped !== null && wasTripped !== tripped) {
      toast(`Kill switch ${tripped ? "TRIPPED" : "reset"} by ${ev.by || "system"}${ev.reason ? ": " + ev.reason : ""}`,
        tripped ? "error" : "ok", 10000);
    }
  }

  // The risk page's "today vs daily loss limit" gauge follows pnl.updated: limit = start-of-day equity x %.
  function onLossGauge(ev) {
    const card = $("#daily-loss");
    if (!card || !finite(num(ev.equity)) || !finite(num(ev.today_pnl))) return;
    const limit = (num(ev.equity) - num(ev.today_pnl)) * num(card.dataset.lossPct) / 100;
    if (!finite(limit) || limit <= 0) return;
    const used = Math.max(0, -num(ev.today_pnl)) / limit * 100;
    const bar = $("#loss-used-bar", card);
    if (bar) bar.style.width = Math.min(100, used).toFixed(1) + "%";
    const pct = $("#loss-used-pct", card);
    if (pct) pct.textContent = used.toFixed(1) + "%";
    const amount = $("#loss-limit-amount", card);
    if (amount) amount.textContent = money(limit);
    const start = $("#loss-day-start-equity", card); // a new data day starts from the equity it opened with
    if (start) start.textContent = money(num(ev.equity) - num(ev.today_pnl));
  }

  // ---- dispatch ---------------------------------------------------------------------------------------
  const handlers = {
    "market.tick": onTick,
    "bar.closed": onBar,
    "signal.created": onSignal,
    "signal.updated": onSignal,
    "trade.filled": onTrade,
    "pnl.updated": (ev) => { onPnl(ev); onLossGauge(ev); },
    "ghost.toggled": (ev) => applyGhost(ev, true),
    "ghost.status": (ev) => applyGhost(ev, true),
    "feed.status": onFeedStatus,
    "killswitch.changed": (ev) => onKillSwitch(ev, true),
    alert: (ev) => toast(ev.message || "alert", ev.level === "error" ? "error" : "warn", 15000),
    "positions.snapshot": onPositionsSnapshot,
    // the history page (history.js) draws these; re-dispatched so desk.js stays page-agnostic
    "history.progress": (ev) => document.dispatchEvent(new CustomEvent("desk:history", { detail: ev })),
    "lab.progress": (ev) => document.dispatchEvent(new CustomEvent("desk:lab", { detail: ev })), // lab.js
    "study.progress": (ev) => document.dispatchEvent(new CustomEvent("desk:study", { detail: ev })), // research.js
    error: (ev) => toast(`${ev.message || "error"}${ev.code ? " [" + ev.code + "]" : ""}`, "error"),
  };

  function handle(ev) {
    if (!ev || typeof ev !== "object" || typeof ev.type !== "string") return;
    const fn = handlers[ev.type];
    if (!fn) return; // ack, pong and future types: ignored, never a crash
    try { fn(ev); } catch (e) { console.error("desk: handling", ev.type, e); }
  }

  // ---- websocket with backoff and catch-up ----------------------------------------------------------------
  const RECONNECT_CAP_MS = 5000;
  let socket = null;
  let attempt = 0;
  let timer = null;

  function setLive(live) {
    const st = $("#ws-state");
    const dot = $("#ws-dot");
    if (st) { st.textContent = live ? "live" : "offline"; st.className = live ? "live" : "offline"; }
    if (dot) dot.className = "dot " + (live ? "ok" : "bad");
  }

  // Live events that arrive while the catch-up snapshot is in flight wait here, then apply on top of it:
  // the snapshot was read from the database earlier than they were sent, so it must not overwrite them.
  let pending = null;

  async function catchUp() {
    // Events sent while the socket was down are gone; the database is the truth. Same handlers.
    pending = [];
    try {
      // Only the chart's instrument's missed bars (none without a chart): one query, whatever the instrument count.
      const url = body.dataset.stateUrl + "?instrument=" + encodeURIComponent(chart.data ? chart.instrumentId : "none");
      const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (r.ok) {
        const data = await r.json();
        // Ghost state from the snapshot is applied quietly: a toast is for a change someone just made.
        (data.events || []).forEach((ev) => (ev.type === "ghost.status" ? applyGhost(ev, false) : handle(ev)));
      }
    } catch (e) {
      /* the next reconnect tries again */
    } finally {
      const queued = pending;
      pending = null;
      queued.forEach(handle);
    }
  }

  function connect() {
    clearTimeout(timer);
    const proto = location.protocol === "https:" ? "wss" : "ws";
    try {
      socket = new WebSocket(`${proto}://${location.host}${body.dataset.wsPath}`);
    } catch (e) { schedule(); return; }
    socket.addEventListener("open", () => { attempt = 0; setLive(true); catchUp(); });
    socket.addEventListener("message", (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch (e) { return; }
      if (pending) pending.push(ev); else handle(ev);
    });
    socket.addEventListener("close", (ev) => {
      setLive(false);
      // 4401: logged out or deactivated, 4403: role changed. Reconnecting would be refused forever (or keep the
      // old role's page): reload, so the server sends the login page or the page for the new role.
      if (ev.code === 4401 || ev.code === 4403) { location.reload(); return; }
      schedule();
    });
  }

  function schedule() {
    clearTimeout(timer);
    // 0.5 s, 1 s, 2 s, 4 s, then every 5 s, with jitter so many browsers do not reconnect in lockstep. The cap is
    // short: a desk that restarts (make run restarts what died) is back in seconds, and a page that waited 15 s
    // more looked dead for that long; a few hundred viewers every 5 s is nothing for the server.
    const delay = Math.min(RECONNECT_CAP_MS, 500 * 2 ** attempt) * (0.75 + Math.random() * 0.5);
    attempt = Math.min(attempt + 1, 10);
    timer = setTimeout(connect, delay);
  }

  // The browser says the network is gone: an open socket would otherwise look live until a ping fails (the
  // server keeps idle sockets open), so close it and show the desk offline; back online, reconnect at once.
  window.addEventListener("offline", () => { if (socket) socket.close(); });
  window.addEventListener("online", () => { attempt = 0; connect(); });

  // Back from a sleeping laptop or a background tab: reconnect now rather than wait out the backoff.
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && (!socket || socket.readyState === WebSocket.CLOSED)) {
      attempt = 0;
      connect();
    }
  });

  window.hftDesk = { handle, toast, send: (msg) => socket && socket.readyState === 1 && socket.send(JSON.stringify(msg)) };

  setLive(false);
  initClock();
  initChart();
  initInstrumentPick();
  connect();
})();
