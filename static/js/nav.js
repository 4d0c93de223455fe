/* hftweb: phone layout helper (issue 14, "Phones").
 *
 * On a narrow screen desk.css draws every `table.data` as a stack of cards, one per row, each value under the name
 * of its column. CSS cannot read a column's header text, so this copies it into each body cell's data-label
 * (a cell that already has one, written by the template, keeps it). Rows drawn later (desk.js' positions, lab.js'
 * and research.js' tables) are labelled as they arrive. Without JS the cards still show every value, unlabelled.
 * The tab menu needs no JS (a checkbox in base.html). Also: the fixed header's height, for the page below it.
 */
(() => {
  "use strict";

  // Column index -> header text of a table's first header row; colspans counted, so the indexes match the cells.
  function headerLabels(table) {
    const row = table.tHead && table.tHead.rows[table.tHead.rows.length - 1];
    const labels = [];
    if (!row) return labels;
    for (const th of row.cells) {
      const text = (th.dataset.label || th.textContent || "").replace(/\s+/g, " ").trim();
      for (let i = 0; i < (th.colSpan || 1); i += 1) labels.push(i === 0 ? text : "");
    }
    return labels;
  }

  function label(table) {
    const labels = headerLabels(table);
    if (!labels.length) return;
    for (const body of table.tBodies) {
      for (const tr of body.rows) {
        let col = 0;
        for (const cell of tr.cells) {
          if (cell.tagName === "TD" && !cell.hasAttribute("data-label") && labels[col]) {
            cell.setAttribute("data-label", labels[col]);
          }
          col += cell.colSpan || 1;
        }
      }
    }
  }

  function labelAll() {
    document.querySelectorAll("table.data").forEach(label);
  }

  let queued = false;
  function soon() {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; labelAll(); });
  }

  // The header is fixed above the page on wide screens; the page starts below it at --header-h (56 px, one row).
  // In a narrower window the header wraps (the feed, the clock, the kill switch banner), so its real height goes
  // to --topbar-h, kept current as it changes, and nothing hides under it. Without JS: the 56 px guess.
  function trackHeader() {
    const bar = document.querySelector(".topbar");
    if (!bar || !("ResizeObserver" in window)) return;
    const root = document.documentElement;
    new ResizeObserver(() => root.style.setProperty("--topbar-h", `${Math.ceil(bar.getBoundingClientRect().height)}px`))
      .observe(bar);
  }

  function init() {
    trackHeader();
    labelAll();
    const main = document.getElementById("main") || document.body;
    // Only added rows matter; ticks that rewrite a price's text are ignored cheaply.
    const rows = (n) => n.nodeType === 1 && (n.tagName === "TR" || n.querySelector("tr") !== null);
    new MutationObserver((records) => {
      if (records.some((r) => Array.prototype.some.call(r.addedNodes, rows))) soon();
    }).observe(main, { childList: true, subtree: true });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
