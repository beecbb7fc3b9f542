// Benchmark charts: every [data-chart-src] element names a JSON document {"runs": [...]}, one entry per run with one
// point per load level; each canvas inside it names the metric it plots. Chart.js is vendored (no CDN, no inline
// script: the Content-Security-Policy forbids both).
(function () {
  "use strict";
  const COLORS = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700"];
  const PAIRS = { ttft: ["p50_ttft_ms", "p99_ttft_ms"], itl: ["p50_itl_ms", "p99_itl_ms"],
                  tpot: ["p50_tpot_ms", "p99_tpot_ms"] };

  function points(run, key) {
    return run.x.map((x, i) => ({ x: Number(x), y: run[key][i] })).filter((p) => p.y !== null && !isNaN(p.x));
  }

  function datasets(runs, metric) {
    const many = runs.length > 1;
    const keys = PAIRS[metric] || [metric];
    const out = [];
    runs.forEach((run, r) => {
      keys.forEach((key, k) => {
        const label = (many ? run.title + " " : "") + (keys.length > 1 ? key.split("_")[0] : "");
        out.push({ label: label.trim() || key, data: points(run, key), borderColor: COLORS[r % COLORS.length],
                   backgroundColor: COLORS[r % COLORS.length], borderDash: k ? [6, 4] : [], tension: 0.2,
                   pointRadius: 3 });
      });
    });
    return out;
  }

  function draw(canvas, runs) {
    const metric = canvas.dataset.chart;
    const logX = runs.every((run) => run.x_label === "concurrency");
    const chart = new window.Chart(canvas, {
      type: "line",
      data: { datasets: datasets(runs, metric) },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        parsing: false,
        scales: {
          x: { type: logX ? "logarithmic" : "linear", title: { display: true, text: runs[0].x_label },
               ticks: { callback: (v) => (logX && Math.log2(v) % 1 !== 0 ? "" : v) } },
          y: { beginAtZero: true },
        },
        plugins: { legend: { display: datasets(runs, metric).length > 1, position: "bottom",
                             labels: { boxWidth: 12, font: { size: 11 } } } },
      },
    });
    canvas.dataset.points = String(chart.data.datasets.reduce((n, d) => n + d.data.length, 0));
  }

  function load(container) {
    fetch(container.dataset.chartSrc, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((response) => (response.ok ? response.json() : Promise.reject(response.status)))
      .then((body) => {
        container.querySelectorAll("canvas[data-chart]").forEach((canvas) => draw(canvas, body.runs));
        container.dataset.loaded = "true";
      })
      .catch((error) => { container.dataset.loaded = "error"; console.warn("benchmark charts:", error); });
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (!window.Chart) { return; }
    document.querySelectorAll("[data-chart-src]").forEach(load);
  });
})();
