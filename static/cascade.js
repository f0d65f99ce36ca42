// Links from Buildbot's UI (`/#/builders/5/builds/3`, `/all/#/grid?branch=3.x`):
// the part after `#` never reaches the server, so the page it lands on sends
// the browser on to Cascade's page of the same thing. Only this site's own
// pages are targets (the path must start with one of their names).
(function () {
  "use strict";
  var pages = /^\/(builders|builds|workers|changes|console|waterfall|grid|release|pending)([\/?][^#]*)?$/;
  function follow() {
    var hash = window.location.hash;
    if (hash.indexOf("#/") !== 0) return;
    var path = hash.slice(1).replace(/([?&])tags=/g, "$1tag=");
    if (path === "/") {
      window.history.replaceState(null, "", "/");
    } else if (pages.test(path)) {
      window.location.replace(path);
    }
  }
  follow();
  window.addEventListener("hashchange", follow);
})();

// Copy buttons (a failing build's reproduce command): the text of the
// element named by data-copy goes to the clipboard. Delegated, so buttons in
// a re-rendered <main> work too.
document.addEventListener("click", function (e) {
  "use strict";
  var button = e.target && e.target.closest ? e.target.closest("button.copy[data-copy]") : null;
  if (!button) return;
  var source = document.getElementById(button.getAttribute("data-copy"));
  if (!source) return;
  var text = source.textContent;
  var said = button.parentNode ? button.parentNode.querySelector(".copied") : null;
  function done(word) { if (said) said.textContent = word; }
  if (navigator.clipboard && navigator.clipboard.writeText) {
    navigator.clipboard.writeText(text).then(function () { done("Copied"); }, function () { done("Select the text to copy it"); });
  } else {
    done("Select the text to copy it");
  }
});

// Live updates for Cascade's pages. The pages are complete without this:
// it only keeps them current. Build events re-render the page's <main> in
// place (one request, the same server-rendered HTML); a log page appends the
// lines of its running step as they arrive.
(function () {
  "use strict";
  var body = document.body;
  if (!body || !window.EventSource || !body.hasAttribute("data-live")) return;
  var page = body.getAttribute("data-page");
  var log = document.getElementById("log");
  var tailing = log && log.getAttribute("data-tail") === "1";
  var url = "/events" + (tailing ? "?log=" + encodeURIComponent(log.getAttribute("data-log")) : "");
  var source = new EventSource(url);
  var pending = null;
  // Browsers allow six connections per site over HTTP/1.1: let this one go
  // as soon as the page does.
  window.addEventListener("pagehide", function () { source.close(); });

  var lastRefresh = 0;
  // When the shown <main> was rendered: running times tick on from it.
  var renderedAt = Date.now();
  // At most one re-render every few seconds, however busy the master is,
  // and one at a time (a slow answer never lands after a newer one).
  var MIN_GAP = 3000;
  var inflight = false;
  // Asked again while a re-render was on its way: once it lands, go again,
  // so the last event is never lost.
  var again = false;
  // What the server last sent for <main> (before any ticking changed it):
  // an answer that says the same is not swapped in.
  var mainNow = document.getElementById("main");
  var shown = mainNow ? mainNow.innerHTML : "";
  // A form being filled in on the page is never wiped by a re-render.
  var edited = false;
  if (mainNow) mainNow.addEventListener("input", function () { edited = true; });

  // A notice of what a form just did (`done=`) is for this visit only: the
  // address loses it, so a reload or a bookmark does not say it again.
  if (window.history.replaceState && /[?&]done=/.test(window.location.search)) {
    var kept = window.location.search.slice(1).split("&").filter(function (p) { return p.indexOf("done=") !== 0; });
    window.history.replaceState(null, "", window.location.pathname + (kept.length ? "?" + kept.join("&") : "") + window.location.hash);
  }

  function refresh() {
    if (inflight) { again = true; return; }
    if (pending || edited) return;
    var wait = Math.max(300, lastRefresh + MIN_GAP - Date.now());
    pending = setTimeout(function () {
      pending = null;
      if (document.hidden) return; // a hidden tab catches up when shown
      lastRefresh = Date.now();
      inflight = true;
      var asked = Date.now();
      fetch(window.location.href, { headers: { "Accept": "text/html" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) return;
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.getElementById("main");
          var main = document.getElementById("main");
          if (fresh && main && !edited && !main.contains(document.activeElement) && fresh.innerHTML !== shown) {
            main.innerHTML = fresh.innerHTML;
            shown = fresh.innerHTML;
            renderedAt = asked;
            body.setAttribute("data-refreshed", String(Date.now()));
          }
        })
        .catch(function () {})
        .then(function () {
          inflight = false;
          if (again) { again = false; refresh(); }
        });
    }, wait);
  }
  document.addEventListener("visibilitychange", function () { if (!document.hidden) refresh(); });

  // Whether an event concerns this page: pages that name their builders
  // (data-builder, or data-builders for a collapsed group) or their build
  // (data-build) only follow those.
  function concerns(e) {
    var named = document.querySelector("[data-builder], [data-builders], [data-build]");
    if (!named) return true;
    var builders = e.builder_ids || [e.builder_id];
    for (var i = 0; i < builders.length; i++) {
      var id = builders[i];
      if (document.querySelector('[data-builder="' + id + '"], [data-builders~="' + id + '"]') !== null) return true;
    }
    return e.build_id !== undefined && document.querySelector('[data-build="' + e.build_id + '"]') !== null;
  }

  function onEvent(msg) {
    if (page === "log") return;
    var e = null;
    try { e = JSON.parse(msg.data); } catch (err) { e = null; }
    if (!e || concerns(e)) refresh();
  }
  // Builds, and requests made or cancelled, concern their builders' pages.
  source.addEventListener("build", onEvent);
  source.addEventListener("request", onEvent);
  // A worker coming or going changes what pages say is online.
  var showsWorkers = ["workers", "builders", "console", "grid", "release", "waterfall"];
  source.addEventListener("worker", function () {
    if (showsWorkers.indexOf(page) >= 0) refresh();
  });
  source.addEventListener("resync", function () {
    if (page === "log") { window.location.reload(); } else { refresh(); }
  });
  // Appends lines numbered from `first`; lines already shown are skipped.
  function append(first, lines) {
    var next = parseInt(log.getAttribute("data-next"), 10);
    if (first > next) return false; // a gap: fetch it first
    var atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
    lines.forEach(function (line, i) {
      var n = first + i;
      if (n < next) return;
      var span = document.createElement("span");
      var kind = line.charAt(0);
      span.className = kind === "e" ? "stderr" : kind === "h" ? "header" : "stdout";
      span.id = "l" + n;
      span.textContent = (kind === "o" || kind === "e" || kind === "h" ? line.slice(1) : line) + "\n";
      log.appendChild(span);
      next = n + 1;
    });
    log.setAttribute("data-next", String(next));
    if (atBottom) window.scrollTo(0, document.body.scrollHeight);
    return true;
  }

  // Lines written between the page's rendering and now come from the API.
  function catchUp() {
    var id = log.getAttribute("data-log");
    var next = log.getAttribute("data-next");
    return fetch("/api/v2/logs/" + id + "/contents?offset=" + next + "&limit=10000", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (!body) return;
        body.logchunks.forEach(function (chunk) {
          var lines = chunk.content.split("\n");
          if (lines.length && lines[lines.length - 1] === "") lines.pop();
          append(chunk.firstline, lines);
        });
      })
      .catch(function () {});
  }

  if (tailing) source.addEventListener("open", catchUp);
  // Whatever happened between the page's rendering and the subscription (or
  // while the connection was down) is in the store: read the page again.
  if (page !== "log") source.addEventListener("open", refresh);

  // Running steps and builds: their durations tick here every second (the
  // same format as the server's), and a build page re-reads itself every
  // few seconds while a step runs, so its line counts and state move on.
  function humanize(secs) {
    var s = Math.max(0, Math.floor(secs));
    function two(n) { return (n < 10 ? "0" : "") + n; }
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + two(s % 60) + "s";
    return Math.floor(s / 3600) + "h " + two(Math.floor((s % 3600) / 60)) + "m";
  }
  setInterval(function () {
    var since = (Date.now() - renderedAt) / 1000;
    var running = document.querySelectorAll("[data-elapsed]");
    for (var i = 0; i < running.length; i++) {
      running[i].textContent = humanize(parseInt(running[i].getAttribute("data-elapsed"), 10) + since);
    }
    if (page === "build" && running.length > 0) refresh();
  }, 1000);
  source.addEventListener("lines", function (e) {
    if (!tailing) return;
    var batch = JSON.parse(e.data);
    if (!append(batch.first_line, batch.lines)) {
      catchUp().then(function () { append(batch.first_line, batch.lines); });
    }
  });
})();
