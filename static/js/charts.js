// Live charts on the session page. The samples are data in the page (#session-samples, columns of equal length) and
// ride the page's one live channel: when the monitor takes a sample, the channel swaps in the newer set out of band
// and the charts redraw. Each canvas names the column(s) it plots.
(function () {
  "use strict";
  const COLORS = ["#1f6feb", "#d1242f"];
  const LABELS = { tokens_per_s: "tok/s", running: "running", waiting: "waiting", kv_cache_usage: "KV %", cost: "$" };
  const SAMPLES = "session-samples";

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

  function samples() {
    const holder = document.getElementById(SAMPLES);
    try {
      return holder ? JSON.parse(holder.dataset.samples) : null;
    } catch (error) {
      return null;
    }
  }

  function draw(section, charts) {
    const body = samples();
    if (!body || !Array.isArray(body.t)) { return; }
    // Until there are two samples, show the last 20 minutes of clock rather than an axis around 1970.
    const window20 = body.t.length < 2 ? { min: Date.now() - 20 * 60 * 1000, max: Date.now() } : {};
    charts.forEach(([canvas, chart]) => {
      canvas.dataset.live.split(",").forEach((field, i) => { chart.data.datasets[i].data = series(body, field); });
      chart.options.scales.x.min = window20.min;
      chart.options.scales.x.max = window20.max;
      chart.update();
      canvas.dataset.points = String(body.t.length);
    });
    section.dataset.loaded = "true";
  }

  document.addEventListener("DOMContentLoaded", () => {
    const section = document.getElementById("session-live-charts");
    if (!window.Chart || !section) { return; }
    const charts = Array.from(section.querySelectorAll("canvas[data-live]")).map((c) => [c, make(c)]);
    draw(section, charts);
    document.addEventListener("htmx:oobAfterSwap", (event) => {
      if (event.target && event.target.id === SAMPLES) { draw(section, charts); }
    });
  });
})();
