// warnd console: small, optional enhancements. Every page works without them.
"use strict";

(function () {
  // ------------------------------------------------------------ auto-refresh
  // An element with data-refresh="<seconds>" and data-refresh-url is reloaded
  // in place while the server says the page is live (X-Console-Live: 1).
  function autoRefresh(el) {
    var seconds = parseInt(el.getAttribute("data-refresh") || "0", 10);
    var url = el.getAttribute("data-refresh-url");
    if (!seconds || seconds < 1 || !url) return;
    var timer = null;
    function schedule() { timer = window.setTimeout(tick, seconds * 1000); }
    function tick() {
      if (document.hidden) { schedule(); return; }
      fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (resp) {
          if (resp.redirected || !resp.ok) {
            // Logged out or gone: show the real page (the login form, an error).
            if (resp.redirected) window.location.reload();
            return null;
          }
          var live = resp.headers.get("X-Console-Live") !== "0";
          return resp.text().then(function (html) {
            el.innerHTML = html;
            el.dispatchEvent(new CustomEvent("console:refreshed", { bubbles: true }));
            if (live) schedule();
          });
        })
        .catch(function () { schedule(); });
    }
    schedule();
    window.addEventListener("pagehide", function () { if (timer) window.clearTimeout(timer); });
  }

  // --------------------------------------------------------------- issue form
  function levelsOf(hazard) {
    var opt = hazard.options[hazard.selectedIndex];
    var text = opt ? opt.getAttribute("data-levels") || "" : "";
    return text ? text.split(" ") : [];
  }

  function restrictLevels(hazard, level) {
    var allowed = levelsOf(hazard);
    var order = ["blue", "yellow", "orange", "red"];
    var i;
    for (i = 0; i < level.options.length; i++) {
      var o = level.options[i];
      o.disabled = allowed.length > 0 && allowed.indexOf(o.value) < 0;
    }
    if (level.options[level.selectedIndex] && level.options[level.selectedIndex].disabled) {
      // The nearest colour the hazard has; on a tie the higher one.
      var want = order.indexOf(level.value);
      var best = null;
      var bestDist = 99;
      for (i = 0; i < allowed.length; i++) {
        var d = Math.abs(order.indexOf(allowed[i]) - want);
        if (d < bestDist || (d === bestDist && order.indexOf(allowed[i]) > order.indexOf(best))) {
          best = allowed[i];
          bestDist = d;
        }
      }
      if (best) level.value = best;
    }
  }

  function setupIssue(form) {
    var hazard = form.querySelector("#f-hazard");
    var level = form.querySelector("#f-level");
    var language = form.querySelector("#f-language");
    var headline = form.querySelector("#f-headline");
    var description = form.querySelector("#f-description");
    var url = form.getAttribute("data-prefill-url");
    if (!hazard || !level || !headline || !description || !url) return;
    var last = { headline: headline.value, description: description.value };

    function prefill() {
      // Only text the officer has not changed is replaced.
      if ((headline.value && headline.value !== last.headline) ||
          (description.value && description.value !== last.description)) return;
      var params = new URLSearchParams();
      params.set("hazard", hazard.value);
      params.set("level", level.value);
      if (language) params.set("language", language.value);
      form.querySelectorAll("input[name=areas]:checked").forEach(function (box) {
        params.append("areas", box.value);
      });
      fetch(url + "?" + params.toString(), { credentials: "same-origin" })
        .then(function (resp) { return resp.ok ? resp.json() : null; })
        .then(function (doc) {
          if (!doc) return;
          headline.value = last.headline = doc.headline || "";
          description.value = last.description = doc.description || "";
          var guide = form.querySelector("#guide ol");
          if (guide && doc.guide) {
            guide.textContent = "";
            doc.guide.forEach(function (item) {
              var li = document.createElement("li");
              li.textContent = item;
              guide.appendChild(li);
            });
          }
        })
        .catch(function () { /* the button still works */ });
    }

    restrictLevels(hazard, level);
    hazard.addEventListener("change", function () { restrictLevels(hazard, level); prefill(); });
    level.addEventListener("change", prefill);
    if (language) language.addEventListener("change", prefill);

    // A preview is of exactly what it showed: once the form changes, sending
    // needs a new preview (the server checks this too).
    var send = form.querySelector("#send");
    if (send) {
      var stale = function (ev) {
        if (ev.target && ev.target.name === "csrf") return;
        send.disabled = true;
        send.title = send.getAttribute("data-stale") || "";
      };
      form.addEventListener("input", stale);
      form.addEventListener("change", stale);
    }

    var polygon = form.querySelector("#f-polygon");
    var sketch = form.querySelector("#polygon-sketch");
    if (polygon && sketch) {
      polygon.addEventListener("input", function () { drawSketch(polygon.value, sketch); });
      drawSketch(polygon.value, sketch);
    }
  }

  // A quick drawing of pasted CAP polygons ("lat,lon lat,lon …", one per line).
  function drawSketch(text, svg) {
    var ns = "http://www.w3.org/2000/svg";
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var rings = [];
    text.split(/\n/).forEach(function (line) {
      var pts = [];
      line.trim().split(/\s+/).forEach(function (pair) {
        var parts = pair.split(",");
        if (parts.length !== 2) return;
        var lat = parseFloat(parts[0]);
        var lon = parseFloat(parts[1]);
        if (isFinite(lat) && isFinite(lon) && Math.abs(lat) <= 90 && Math.abs(lon) <= 180) {
          pts.push([lon, lat]);
        }
      });
      if (pts.length >= 3) rings.push(pts);
    });
    if (!rings.length) return;
    var all = [].concat.apply([], rings);
    var xs = all.map(function (p) { return p[0]; });
    var ys = all.map(function (p) { return p[1]; });
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    var kx = Math.cos(((y0 + y1) / 2) * Math.PI / 180);
    var w = Math.max((x1 - x0) * kx, 1e-9), h = Math.max(y1 - y0, 1e-9);
    var scale = Math.min(188 / w, 108 / h);
    rings.forEach(function (pts) {
      var d = pts.map(function (p, i) {
        var x = 6 + (p[0] - x0) * kx * scale;
        var y = 6 + (y1 - p[1]) * scale;
        return (i ? "L" : "M") + x.toFixed(1) + "," + y.toFixed(1);
      }).join("") + "Z";
      var path = document.createElementNS(ns, "path");
      path.setAttribute("d", d);
      path.setAttribute("fill", "#1f5fbf");
      path.setAttribute("fill-opacity", "0.2");
      path.setAttribute("stroke", "#1f5fbf");
      path.setAttribute("stroke-width", "1.5");
      svg.appendChild(path);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(autoRefresh);
    var issue = document.getElementById("issue-form");
    if (issue) setupIssue(issue);
  });
})();
