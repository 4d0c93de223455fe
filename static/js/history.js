/* History downloads page: live rows from "history.progress" events.
 *
 * desk.js owns the socket and re-dispatches each history.progress event as a "desk:history" DOM event.
 * Every event carries the whole state of one download, so a missed event is repaired by the next one.
 */
(function () {
  "use strict";
  const tbody = document.querySelector("#downloads tbody");
  if (!tbody) return;
  const BADGE = { done: "ok", failed: "warn", running: "open", queued: "off" };

  function utc(iso) {
    return iso ? iso.slice(0, 16).replace("T", " ") : "";
  }

  function cell(className, text) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.textContent = text;
    return td;
  }

  function newRow(ev) {
    // A download someone else started while this page is open.
    const tr = document.createElement("tr");
    tr.id = "download-" + ev.download_id;
    tr.dataset.downloadId = ev.download_id;
    const state = document.createElement("td");
    const badge = document.createElement("span");
    badge.className = "badge dl-state";
    state.append(badge);
    const prog = document.createElement("td");
    prog.innerHTML = '<div class="progress" role="progressbar" aria-valuemin="0" aria-valuemax="100">' +
      '<span class="fill" style="width: 0%"></span></div><span class="dl-pct small num"></span>';
    tr.append(
      cell("num", String(ev.download_id)), cell("num", "now"), cell("", ev.exchange + ":" + ev.symbol),
      cell("", ev.timeframe), cell("num", utc(ev.since) + " → " + (ev.until ? utc(ev.until) : "last closed")),
      state, prog, cell("r num dl-expected", ""), cell("r num dl-stored", ""), cell("r num dl-gaps", ""),
      cell("dl-error small", ""),
    );
    const empty = tbody.querySelector(".empty-row");
    if (empty) empty.remove();
    tbody.prepend(tr);
    return tr;
  }

  document.addEventListener("desk:history", (e) => {
    const ev = e.detail;
    if (!ev || typeof ev.download_id !== "number") return;
    const tr = document.getElementById("download-" + ev.download_id) || newRow(ev);
    const badge = tr.querySelector(".dl-state");
    if (badge) { badge.textContent = ev.state; badge.className = "badge dl-state " + (BADGE[ev.state] || "off"); }
    const pct = Math.max(0, Math.min(100, Number(ev.progress) * 100));
    const fill = tr.querySelector(".progress .fill");
    if (fill && Number.isFinite(pct)) fill.style.width = pct.toFixed(1) + "%";
    const bar = tr.querySelector(".progress");
    if (bar && Number.isFinite(pct)) bar.setAttribute("aria-valuenow", pct.toFixed(0));
    const label = tr.querySelector(".dl-pct");
    if (label && Number.isFinite(pct)) label.textContent = pct.toFixed(0) + "%";
    const set = (sel, text) => { const el = tr.querySelector(sel); if (el) el.textContent = text; };
    set(".dl-expected", String(ev.expected));
    set(".dl-stored", String(ev.stored));
    set(".dl-gaps", ev.gaps + " / " + ev.missing);
    set(".dl-error", ev.error || "");
    if (ev.state === "failed" && window.hftDesk) window.hftDesk.toast(`download #${ev.download_id} failed: ${ev.error}`, "error");
  });
})();
