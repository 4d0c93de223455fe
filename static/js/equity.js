/* hftweb equity page: the realised equity curve with its drawdown beneath, drawn from the server's
   decimated arrays (apps.lab.charts.equity_chart, the lab's chart data) with the same two-panel layout
   as the lab's run page. plotly.min.js is loaded with `defer` before this script. */
(function () {
  "use strict";
  // automargin: the right margin grows to the widest equity label (a fixed 70 px cut six figures off: issue 14)
  const AXIS = { gridcolor: "#1f2a3a", zerolinecolor: "#2b3a50", color: "#8aa0b8", automargin: true };
  function draw() {
    const holder = document.getElementById("equity-chart");
    const src = document.getElementById("equity-data");
    if (!holder || !src || !window.Plotly) return;
    const d = JSON.parse(src.textContent);
    const quote = holder.dataset.quote || "";
    const traces = [
      { type: "scatter", mode: "lines", line: { shape: "hv", color: "#00d4ff", width: 1.5 }, name: `equity (${quote})`,
        x: d.t, y: d.equity, xaxis: "x", yaxis: "y" },
      { type: "scatter", mode: "lines", line: { shape: "hv", color: "#ff3366", width: 1 }, name: "drawdown (%)",
        x: d.t, y: d.drawdown, fill: "tozeroy", fillcolor: "rgba(255,51,102,.25)", xaxis: "x", yaxis: "y2" },
    ];
    // With positions open: the header's equity now (realised + unrealised), a marker off the realised curve.
    if (d.now) traces.push({ type: "scatter", mode: "markers", marker: { color: "#ffcc00", size: 8 },
      name: "now, with open positions", x: [d.now.t], y: [d.now.equity], xaxis: "x", yaxis: "y" });
    window.Plotly.newPlot(holder, traces, {
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)", font: { color: "#c8d6e5", size: 11 },
      margin: { l: 10, r: 70, t: 10, b: 30 }, showlegend: true, legend: { orientation: "h", y: 1.08 },
      grid: { rows: 2, columns: 1, subplots: [["xy"], ["xy2"]], roworder: "top to bottom" },
      xaxis: Object.assign({ type: "date", matches: "x" }, AXIS),
      yaxis: Object.assign({ side: "right", domain: [0.34, 1], tickformat: ",.2f" }, AXIS),
      yaxis2: Object.assign({ side: "right", domain: [0, 0.28], ticksuffix: "%", rangemode: "tozero" }, AXIS),
    }, { displaylogo: false, responsive: true });
    holder.dataset.drawn = "1";
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
