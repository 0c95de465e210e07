// fiveplane approval console: countdowns, "select all", a notice when the queue changes.
// Progressive: every page works without it. No inline script (the CSP forbids it).
(function () {
  "use strict";

  function human(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + String(s % 60).padStart(2, "0") + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("time.countdown[data-expires]").forEach(function (el) {
      var left = (Date.parse(el.getAttribute("data-expires")) - now) / 1000;
      el.textContent = left > 0 ? human(left) : "expired";
      el.classList.toggle("expired", left <= 0);
    });
  }

  function selectAll() {
    var all = document.getElementById("select-all");
    if (!all) return;
    all.addEventListener("change", function () {
      document.querySelectorAll("input.pick").forEach(function (box) { box.checked = all.checked; });
    });
  }

  function watchQueue() {
    var form = document.getElementById("batch");
    var notice = document.getElementById("queue-changed");
    var empty = document.querySelector("[data-testid=empty]");
    if (!notice || (!form && !empty)) return;
    var shown = form ? form.getAttribute("data-pending-ids") : "";
    setInterval(function () {
      fetch("/api/queue-state", { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (!data) return;
          var now = data.pending.join(" ");
          notice.classList.toggle("hidden", now === shown);
        })
        .catch(function () {});
    }, 5000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    tick();
    setInterval(tick, 1000);
    selectAll();
    watchQueue();
  });
})();
