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

  function refresh() {
    if (pending) return;
    pending = setTimeout(function () {
      pending = null;
      fetch(window.location.href, { headers: { "Accept": "text/html" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (!html) return;
          var doc = new DOMParser().parseFromString(html, "text/html");
          var fresh = doc.getElementById("main");
          var main = document.getElementById("main");
          if (fresh && main && !main.contains(document.activeElement)) {
            main.innerHTML = fresh.innerHTML;
            body.setAttribute("data-refreshed", String(Date.now()));
          }
        })
        .catch(function () {});
    }, 300);
  }

  source.addEventListener("build", function () {
    if (page !== "log") refresh();
  });
  source.addEventListener("resync", function () {
    if (page === "log") { window.location.reload(); } else { refresh(); }
  });
  source.addEventListener("lines", function (e) {
    if (!tailing) return;
    var batch = JSON.parse(e.data);
    var next = parseInt(log.getAttribute("data-next"), 10);
    var atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
    batch.lines.forEach(function (line, i) {
      var n = batch.first_line + i;
      if (n < next) return; // already on the page
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
  });
})();
