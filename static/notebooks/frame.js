/* Runs inside every output frame (an opaque origin: notebooks_app/output_documents.py, docs/frontend.md#outputs).
 * A classic script, not a module: module scripts from an opaque origin would need CORS.
 *  - reports the document's height to the page ({type: "notebook-frame", height}); the page
 *    believes it only from the frame it made, and within bounds;
 *  - prints the frame's script errors, and scripts its policy blocked, into the frame itself;
 *  - in an HTML output's frame, follows the page's theme ({type: "notebook-theme", theme});
 *  - in the chart frame (<html data-renderer="chart">), draws the chart the page posts
 *    ({type: "render", mimeType, data}) with the vendored renderer for its MIME type. */
(function () {
  "use strict";
  var root = document.documentElement;
  var parentWindow = window.parent;
  var lastHeight = -1;

  function post(message) {
    if (parentWindow && parentWindow !== window) parentWindow.postMessage(message, "*");
  }

  function contentHeight() {
    var body = document.body;
    if (!body) return 0;
    var style = getComputedStyle(body);
    var bottom = body.getBoundingClientRect().bottom + window.scrollY + parseFloat(style.marginBottom || "0");
    var overflow = 0;
    // Absolutely positioned content (map panes, tooltips) does not stretch the body.
    for (var child = body.firstElementChild; child; child = child.nextElementSibling) {
      overflow = Math.max(overflow, child.getBoundingClientRect().bottom + window.scrollY);
    }
    return Math.ceil(Math.max(bottom, overflow));
  }

  function reportHeight() {
    var height = contentHeight();
    if (height !== lastHeight) {
      lastHeight = height;
      post({ type: "notebook-frame", height: height });
    }
  }

  var errors = null;
  function showError(text) {
    if (!document.body) {
      document.addEventListener("DOMContentLoaded", function () { showError(text); });
      return;
    }
    if (!errors || !errors.isConnected) {
      errors = document.createElement("pre");
      errors.className = "notebook-frame-errors";
      errors.setAttribute("role", "alert");
      errors.style.cssText = "color:#a3171b;background:#fdecea;border:1px solid #f3b6b2;padding:4px 6px;margin:4px 0;white-space:pre-wrap;font:12px/1.4 ui-monospace,monospace";
      document.body.appendChild(errors);
    }
    if (errors.childNodes.length >= 20) return;  // a script failing in a loop: the first ones tell
    errors.appendChild(document.createTextNode((errors.textContent ? "\n" : "") + text));
    reportHeight();
  }

  window.addEventListener("error", function (event) {
    if (event.target && event.target !== window && (event.target.src || event.target.href)) {
      showError("Could not load " + (event.target.src || event.target.href));
    } else {
      showError((event.error && event.error.name ? event.error.name + ": " : "") + (event.message || "script error"));
    }
  }, true);
  window.addEventListener("unhandledrejection", function (event) {
    var reason = event.reason;
    showError("Unhandled: " + (reason && reason.message ? reason.message : String(reason)));
  });
  document.addEventListener("securitypolicyviolation", function (event) {
    var directive = event.effectiveDirective || event.violatedDirective || "";
    if (directive.indexOf("script-src") === 0) {
      showError("Blocked a script from " + (event.blockedURI || "another site") + ": outputs cannot load scripts from the internet, only the libraries this server provides");
    } else if (directive === "connect-src") {
      showError("Blocked a request to " + (event.blockedURI || "a server") + ": outputs cannot make network requests");
    }
  });

  function start() {
    reportHeight();
    if (typeof ResizeObserver === "function") {
      var observer = new ResizeObserver(reportHeight);
      observer.observe(root);
      if (document.body) observer.observe(document.body);
    }
    window.addEventListener("load", reportHeight);
    // Content that grows without resizing the body (images loading inside positioned boxes).
    setTimeout(reportHeight, 500);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();

  if (root.getAttribute("data-renderer") !== "chart") {
    // The page's theme ({type: "notebook-theme", theme}): the output's style (OUTPUT_HTML_STYLE)
    // reads <html data-theme>. Charts keep their libraries' light style.
    window.addEventListener("message", function (event) {
      var message = event.data;
      if (event.source !== parentWindow || !message || message.type !== "notebook-theme") return;
      if (message.theme === "light" || message.theme === "dark") root.setAttribute("data-theme", message.theme);
    });
    return;
  }

  // ---- the chart frame --------------------------------------------------------------------
  var libraries = JSON.parse(root.getAttribute("data-libraries") || "{}");
  var RENDERERS = {
    "application/vnd.plotly.v1+json": { scripts: ["plotly"], draw: drawPlotly },
    "application/vnd.vegalite.v6+json": { scripts: ["vega", "vega-lite", "vega-embed"], draw: drawVega },
    "application/vnd.vega.v6+json": { scripts: ["vega", "vega-lite", "vega-embed"], draw: drawVega },
    "application/vnd.bokehjs.item+json": { scripts: ["bokeh", "bokeh-gl", "bokeh-widgets", "bokeh-tables"], draw: drawBokeh },
  };
  var loaded = {};

  function loadScript(name) {
    if (!loaded[name]) {
      loaded[name] = new Promise(function (resolve, reject) {
        var script = document.createElement("script");
        script.src = libraries[name];
        script.onload = resolve;
        script.onerror = function () { reject(new Error("could not load the " + name + " library")); };
        document.head.appendChild(script);
      });
    }
    return loaded[name];
  }

  function loadAll(names) {
    // In order: vega-lite needs vega, vega-embed both, BokehJS's parts the core.
    return names.reduce(function (previous, name) {
      return previous.then(function () { return loadScript(name); });
    }, Promise.resolve());
  }

  function drawPlotly(target, figure) {
    var config = Object.assign({ responsive: true, displaylogo: false }, figure.config || {});
    return window.Plotly.newPlot(target, figure.data || [], figure.layout || {}, config);
  }

  function drawVega(target, spec) {
    // No loader can reach anything: data must be in the specification (altair puts it there).
    return window.vegaEmbed(target, spec, { actions: false, renderer: "svg" });
  }

  function drawBokeh(target, item) {
    return window.Bokeh.embed.embed_item(item, target);
  }

  window.addEventListener("message", function (event) {
    var message = event.data;
    if (event.source !== parentWindow || !message || message.type !== "render") return;
    var renderer = RENDERERS[message.mimeType];
    var target = document.getElementById("chart");
    if (!renderer) {
      showError("No renderer for " + String(message.mimeType));
      return;
    }
    target.replaceChildren();
    root.setAttribute("data-state", "loading");
    loadAll(renderer.scripts)
      .then(function () { return renderer.draw(target, message.data); })
      .then(function () {
        root.setAttribute("data-state", "drawn");
        reportHeight();
        post({ type: "notebook-frame-drawn" });
      })
      .catch(function (error) {
        root.setAttribute("data-state", "failed");
        showError("Could not draw this chart: " + (error && error.message ? error.message : String(error)));
      });
  });
  post({ type: "notebook-frame-ready" });
})();
