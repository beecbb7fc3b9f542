// maider panel behaviour. No inline scripts anywhere (CSP): everything hooks up through data-* attributes here.
(function () {
  "use strict";

  // Copy buttons: <button data-copy-target="#id"> copies that element's text and confirms visibly.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy-target]");
    if (!button) return;
    var source = document.querySelector(button.getAttribute("data-copy-target"));
    if (!source) return;
    var text = (source.value !== undefined ? source.value : source.textContent).trim();
    var done = function (ok) {
      var status = button.parentElement.querySelector(".copy-status");
      var message = ok ? "Copied ✓" : "Press Ctrl+C to copy";
      if (status) {
        status.textContent = message;
        status.classList.add("copied");
        clearTimeout(status._maiderTimer);
        status._maiderTimer = setTimeout(function () { status.textContent = ""; status.classList.remove("copied"); }, 2500);
      } else {
        var previous = button.textContent;
        button.textContent = message;
        button.classList.add("copied");
        setTimeout(function () { button.textContent = previous; button.classList.remove("copied"); }, 2500);
      }
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { done(true); }, function () { fallbackCopy(source, done); });
    } else {
      fallbackCopy(source, done);
    }
  });

  function fallbackCopy(source, done) {
    selectText(source);
    var ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    done(ok);
  }

  function selectText(element) {
    if (element.select) { element.select(); return; }
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  // Confirmation for plain (non-htmx) forms: <form data-confirm="...">.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var message = form.getAttribute && form.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });

  // Render <time datetime="...Z" data-local> in the viewer's local time (data-time-only: the time of day only).
  function localiseTimes(root) {
    root.querySelectorAll("time[data-local]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d)) return;
      el.title = d.toLocaleString();
      el.textContent = el.hasAttribute("data-time-only") ? d.toLocaleTimeString() : d.toLocaleString();
    });
  }

  // Stage timeline bar: each segment's share of the bar is its duration (CSSOM, allowed by the CSP).
  function sizeSegments(root) {
    root.querySelectorAll("[data-grow]").forEach(function (el) {
      var grow = parseFloat(el.getAttribute("data-grow"));
      if (!isNaN(grow)) el.style.flexGrow = String(Math.max(grow, 0.5));
    });
  }

  // A log tail opens scrolled to its newest line, unless the reader scrolled up in it.
  function scrollLogs(root, previous) {
    root.querySelectorAll("[data-scroll-end]").forEach(function (el) {
      if (previous && previous.held) { el.scrollTop = previous.top; return; }
      el.scrollTop = el.scrollHeight;
    });
  }

  function enhance(root) {
    localiseTimes(root);
    sizeSegments(root);
  }

  document.addEventListener("DOMContentLoaded", function () { enhance(document); scrollLogs(document); });

  var logScroll = null;
  document.addEventListener("htmx:beforeSwap", function (event) {
    var log = event.detail.target && event.detail.target.querySelector && event.detail.target.querySelector("[data-scroll-end]");
    logScroll = log ? { held: log.scrollTop + log.clientHeight < log.scrollHeight - 8, top: log.scrollTop } : null;
  });
  document.addEventListener("htmx:afterSettle", function (event) {
    enhance(event.detail.elt.parentElement || document);
    scrollLogs(event.detail.elt.parentElement || document, logScroll);
    logScroll = null;
  });

  // The live channel (one poll per tab): it sends back the change version it shows, and keeps the one the server
  // answers with, so an unchanged dashboard costs one 204 a second.
  //
  // The session page's channel keeps one version per part ("header:…,tunnel:…"), always the one its DOM shows: a
  // part an action swapped in (X-Live-Part) replaces the channel's entry, and a poll's answer moves only the parts it
  // swapped, so a poll sent before that action cannot put back the older version (and leave a stale part for good).
  function liveParts(version) {
    var parts = {};
    (version || "").split(",").forEach(function (item) {
      var at = item.indexOf(":");
      if (at > 0) parts[item.slice(0, at)] = item.slice(at + 1);
    });
    return parts;
  }
  function joinParts(parts) {
    return Object.keys(parts).map(function (name) { return name + ":" + parts[name]; }).join(",");
  }
  document.addEventListener("htmx:configRequest", function (event) {
    var version = event.detail.elt.getAttribute && event.detail.elt.getAttribute("data-live-version");
    if (version) {
      event.detail.parameters.v = version;
      event.detail.elt._maiderSent = version;
    }
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    var xhr = event.detail.xhr;
    var swapped = event.detail.successful && xhr && liveParts(xhr.getResponseHeader("X-Live-Part"));
    Object.keys(swapped || {}).forEach(function (name) {
      document.querySelectorAll("[data-live-version]").forEach(function (channel) {
        var shown = liveParts(channel.getAttribute("data-live-version"));
        if (!(name in shown)) return;
        shown[name] = swapped[name];
        channel.setAttribute("data-live-version", joinParts(shown));
      });
    });
    var elt = event.detail.elt;
    if (!elt.hasAttribute || !elt.hasAttribute("data-live-version")) return;
    var version = xhr && xhr.getResponseHeader("X-Live-Version");
    if (!version) return;
    var answered = liveParts(version);
    if (!Object.keys(answered).length) {  // the dashboard's channel: one version for all it shows
      elt.setAttribute("data-live-version", version);
      return;
    }
    var sent = liveParts(elt._maiderSent), shown = liveParts(elt.getAttribute("data-live-version"));
    Object.keys(answered).forEach(function (name) {
      if (answered[name] !== sent[name] || !(name in shown)) shown[name] = answered[name];
    });
    elt.setAttribute("data-live-version", joinParts(shown));
  });

  // Cost and runtime tick here between the live channel's answers: the rate is on the element, so no request is
  // needed to move them. data-tick-cost (USD at render) with data-tick-rate ($/h); data-tick-runtime (seconds).
  function formatMoney(amount) {
    if (amount > 0 && amount < 0.01) return "$" + amount.toFixed(4);
    return "$" + amount.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function formatDuration(seconds) {
    seconds = Math.floor(seconds);
    if (seconds < 60) return seconds + "s";
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + "m " + pad(seconds % 60) + "s";
    var hours = Math.floor(minutes / 60);
    if (hours < 48) return hours + "h " + pad(minutes % 60) + "m";
    return Math.floor(hours / 24) + "d " + (hours % 24) + "h";
  }
  function tick() {
    var now = Date.now();
    document.querySelectorAll("[data-tick-cost], [data-tick-runtime]").forEach(function (el) {
      if (el._maiderSince === undefined) el._maiderSince = now;
      var elapsed = (now - el._maiderSince) / 1000;
      if (el.hasAttribute("data-tick-cost")) {
        var cost = parseFloat(el.getAttribute("data-tick-cost")) + parseFloat(el.getAttribute("data-tick-rate") || "0") * elapsed / 3600;
        if (!isNaN(cost)) el.textContent = formatMoney(cost);
      } else {
        var seconds = parseFloat(el.getAttribute("data-tick-runtime")) + elapsed;
        if (!isNaN(seconds)) el.textContent = formatDuration(seconds);
      }
    });
  }
  setInterval(tick, 1000);

  // Toasts: the server sends HX-Trigger {"maider:toast": {...}} when it refused an action.
  var toasts = null;
  function toast(message, level, title) {
    toasts = toasts || document.getElementById("toasts");
    if (!toasts) return;
    var existing = Array.prototype.find.call(toasts.children, function (el) { return el.dataset.message === message; });
    if (existing) return;
    var el = document.createElement("div");
    el.className = "toast toast-" + (level || "error");
    el.setAttribute("role", level === "error" ? "alert" : "status");
    el.dataset.message = message;
    if (title) {
      var strong = document.createElement("strong");
      strong.textContent = title + ": ";
      el.appendChild(strong);
    }
    el.appendChild(document.createTextNode(message));
    toasts.appendChild(el);
    setTimeout(function () { el.remove(); }, 8000);
  }
  document.addEventListener("maider:toast", function (event) {
    var d = event.detail || {};
    toast(d.message || "That did not work.", d.level, d.title);
  });

  // Signed out (cookie expired, user removed, role changed): say so once and stop polling until the page reloads.
  var signedOut = false;
  document.addEventListener("maider:signed-out", function () {
    signedOut = true;
    var el = document.getElementById("signed-out-banner");
    if (el) el.hidden = false;
  });
  document.addEventListener("htmx:beforeRequest", function (event) {
    if (signedOut) event.preventDefault();
  });

  // Polls that fail (server stopped, laptop asleep) raise one banner, which goes away at the next answer.
  var failures = 0;
  function banner(show) {
    var el = document.getElementById("offline-banner");
    if (el) el.hidden = !show;
  }
  document.addEventListener("htmx:sendError", function () {
    failures += 1;
    if (failures >= 2) banner(true);
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (event.detail.xhr && event.detail.xhr.status) { failures = 0; banner(false); }
  });
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    if (xhr && xhr.getResponseHeader("HX-Trigger")) return;  // the server already sent its own message
    if (xhr && xhr.status >= 500 && event.detail.requestConfig && event.detail.requestConfig.verb !== "get") {
      toast("The panel hit an unexpected error; the details are in the server log.", "error", "Something went wrong");
    }
  });
})();
