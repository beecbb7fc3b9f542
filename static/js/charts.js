// Live charts on the session page: [data-live-src] names the session's samples (columns of equal length); each
// canvas names the column(s) it plots. Polls while the session is live, then stops.
(function () {
  "use strict";
  const COLORS = ["#1f6feb", "#d1242f"];
  const LABELS = { tokens_per_s: "tok/s", running: "running", waiting: "waiting", kv_cache_usage: "KV %", cost: "$" };

  function series(body, field) {
    const scale = field === "kv_cache_usage" ? 100 : 1;
    return body.t.map((t, i) => ({ x: t * 1000, y: body[field][i] * scale }));
  }

  function timeLabel(ms) {
    const d = new Date(ms);
    return d.getHours().toString().padStart(2, "0") + ":" + d.getMinutes().toString().padStart(2, "0") + ":" +
      d.getSeconds().toString().padStart(2, "0");
  }

  function make(canvas) {
    const fields = canvas.dataset.live.split(",");
    return new window.Chart(canvas, {
      type: "line",
      data: { datasets: fields.map((f, i) => ({ label: LABELS[f] || f, data: [], borderColor: COLORS[i],
                                                backgroundColor: COLORS[i], pointRadius: 0, tension: 0.2 })) },
      options: {
        responsive: true, maintainAspectRatio: false, animation: false, parsing: false,
        scales: { x: { type: "linear", ticks: { maxTicksLimit: 4, callback: timeLabel } }, y: { beginAtZero: true } },
        plugins: { legend: { display: fields.length > 1, position: "bottom", labels: { boxWidth: 12 } } },
      },
    });
  }

  function start(section) {
    const charts = Array.from(section.querySelectorAll("canvas[data-live]")).map((c) => [c, make(c)]);
    const every = Number(section.dataset.liveEvery) || 5000;
    function refresh() {
      fetch(section.dataset.liveSrc, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then((response) => (response.ok ? response.json() : Promise.reject(response.status)))
        .then((body) => {
          const window20 = body.t.length < 2 ? { min: Date.now() - 20 * 60 * 1000, max: Date.now() } : {};
          charts.forEach(([canvas, chart]) => {
            canvas.dataset.live.split(",").forEach((field, i) => { chart.data.datasets[i].data = series(body, field); });
            // Until there are two samples, show the last 20 minutes of clock rather than an axis around 1970.
            chart.options.scales.x.min = window20.min;
            chart.options.scales.x.max = window20.max;
            chart.update();
            canvas.dataset.points = String(body.t.length);
          });
          section.dataset.loaded = "true";
          if (body.live && document.body.contains(section)) { setTimeout(refresh, every); }
        })
        .catch(() => setTimeout(refresh, every * 2));
    }
    refresh();
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (!window.Chart) { return; }
    document.querySelectorAll("[data-live-src]").forEach(start);
  });
})();
