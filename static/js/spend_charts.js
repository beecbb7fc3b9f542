// Spend charts (dashboard and history): each <canvas data-chart='{"labels": [...], "datasets": [...]}'> becomes a
// bar chart of US dollars with the vendored Chart.js. The data comes in the attribute (no inline script: CSP).
(function () {
  "use strict";
  const COLOR = "#1f6feb";

  function dollars(value) {  // as the panel writes money: four decimals below a cent
    const amount = Number(value);
    if (amount > 0 && amount < 0.01) { return "$" + amount.toFixed(4); }
    return "$" + amount.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }

  function draw(canvas) {
    const data = JSON.parse(canvas.dataset.chart);
    data.datasets.forEach((set) => { set.backgroundColor = COLOR; set.borderRadius = 3; });
    new window.Chart(canvas, {
      type: "bar",
      data: data,
      options: {
        responsive: true, maintainAspectRatio: false, animation: false,
        indexAxis: canvas.dataset.horizontal ? "y" : "x",
        scales: { [canvas.dataset.horizontal ? "x" : "y"]: { beginAtZero: true, ticks: { callback: dollars } } },
        plugins: { legend: { display: false }, tooltip: { callbacks: { label: (item) => dollars(item.raw) } } },
      },
    });
    canvas.dataset.drawn = "true";
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (!window.Chart) { return; }
    document.querySelectorAll("canvas[data-chart]").forEach(draw);
  });
})();
