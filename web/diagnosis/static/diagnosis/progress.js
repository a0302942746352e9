// Result page of an analysis that is still queued or running: ask the server for its status every
// second, show the stage and the progress bar, and when it is finished put the finished page in place
// of this one (no reload). Plain JavaScript, no libraries, no inline script (the CSP forbids it).
(function () {
  "use strict";
  var box = document.getElementById("analysis-status");
  if (!box || box.getAttribute("data-status") === "failed") return;
  var statusUrl = box.getAttribute("data-status-url");
  var resultUrl = box.getAttribute("data-result-url");
  var bar = document.getElementById("analysis-progress");
  var stage = document.getElementById("status-stage");
  var title = document.getElementById("status-title");
  var delay = 1000;

  function swapInFinishedPage() {
    fetch(resultUrl, {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (response) { return response.text(); })
      .then(function (html) {
        var page = new DOMParser().parseFromString(html, "text/html");
        var main = page.getElementById("main");
        if (!main) { window.location.reload(); return; }
        document.getElementById("main").replaceWith(main);
        document.title = page.title;
        var heading = main.querySelector("h1");
        if (heading) { heading.setAttribute("tabindex", "-1"); heading.focus(); }
      })
      .catch(function () { window.location.reload(); });
  }

  function poll() {
    fetch(statusUrl, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (!response.ok) throw new Error("status " + response.status);
        return response.json();
      })
      .then(function (state) {
        delay = 1000;
        if (state.status === "done" || state.status === "failed") { swapInFinishedPage(); return; }
        bar.value = state.progress;
        bar.textContent = state.progress + "%";
        title.textContent = state.status === "queued" ? "Waiting for a worker" : "Analysing the picture";
        stage.textContent = state.status === "queued"
          ? "Queued: the picture is stored and waits for its turn."
          : state.stage.charAt(0).toUpperCase() + state.stage.slice(1) + "\u2026";
        window.setTimeout(poll, delay);
      })
      .catch(function () {
        // The server is busy or restarting: keep asking, less often.
        delay = Math.min(delay * 2, 10000);
        stage.textContent = "The server did not answer; trying again\u2026";
        window.setTimeout(poll, delay);
      });
  }

  window.setTimeout(poll, delay);
})();
