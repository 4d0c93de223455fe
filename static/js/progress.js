/* hftweb progress of background jobs (lab runs, research studies): what lab.js and research.js shared by copy.
 *
 * desk.js owns the one websocket (/ws/desk/) and re-dispatches each job's progress event as a DOM event
 * ("desk:lab", "desk:study"). Every event carries the whole state of one job, so a missed one is repaired by the
 * next; a job's own page also polls its progress.json every few seconds while the job is active (a socket that
 * reconnects gets no replay of events), and reloads once the job ends, since the results (or the error) are
 * rendered by the server.
 *
 * Plain ES2020, no build step; loaded (defer) before lab.js / research.js, which use window.hftProgress.
 */
window.hftProgress = (function () {
  "use strict";
  const TERMINAL = new Set(["done", "failed", "cancelled"]);
  const POLL_FIRST_MS = 1500;
  const POLL_EVERY_MS = 4000;
  const finite = (x) => typeof x === "number" && Number.isFinite(x);
  const fmtInt = (x) => (finite(x) ? Math.round(x).toLocaleString("en-US") : "—");
  const pct = (done, total) => (total > 0 ? Math.max(0, Math.min(100, (done / total) * 100)) : 0);

  function eta(s) {
    if (!finite(s) || s < 0) return "—";
    if (s < 1) return "< 1 s";
    if (s < 90) return Math.round(s) + " s";
    const m = Math.floor(s / 60);
    return m < 90 ? `${m} min ${Math.round(s % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  // The progress card's bar: fill width and the aria value.
  function drawBar(card, done, total) {
    const p = pct(done, total);
    const fill = card.querySelector("#progress-fill");
    if (fill) fill.style.width = p.toFixed(1) + "%";
    const bar = card.querySelector(".progress");
    if (bar) bar.setAttribute("aria-valuenow", p.toFixed(0));
  }

  /* Follow one kind of job.
   *   eventName: the DOM event desk.js dispatches ("desk:lab"); idKey: the job id's field ("run_id");
   *   label: for the toast when the job ends ("Run"); card: the job page's #progress element, or null on a list
   *   page (its data-status, data-progress-url, and the job id in data-<idData>);
   *   onRow(ev): a list page's row; onPage(ev, was): the job page, with its status before this event.
   * Returns the page handler, for an event the page got another way (an action's answer). */
  function track({ eventName, idKey, idData, label, card, onRow, onPage }) {
    let reloadScheduled = false;

    function page(ev) {
      if (!card || !ev || String(ev[idKey]) !== card.dataset[idData]) return;
      const was = card.dataset.status;
      card.dataset.status = ev.status;
      onPage(ev, was);
      if (TERMINAL.has(ev.status) && was !== ev.status && !reloadScheduled) {
        reloadScheduled = true;
        if (window.hftDesk) window.hftDesk.toast(`${label} #${ev[idKey]} ${ev.status}`, ev.status === "done" ? "ok" : "warn");
        setTimeout(() => location.reload(), 400);
      }
    }

    document.addEventListener(eventName, (e) => {
      const ev = e.detail;
      if (!ev || typeof ev[idKey] !== "number") return;
      if (onRow) onRow(ev);
      page(ev);
    });

    if (card && !TERMINAL.has(card.dataset.status)) {
      const poll = async () => {
        if (reloadScheduled) return;
        try {
          const r = await fetch(card.dataset.progressUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
          if (r.ok) page(await r.json());
        } catch (e) { /* the next poll tries again */ }
        if (!reloadScheduled) setTimeout(poll, POLL_EVERY_MS);
      };
      setTimeout(poll, POLL_FIRST_MS);
    }
    return page;
  }

  return { TERMINAL, finite, fmtInt, pct, eta, drawBar, track };
})();
