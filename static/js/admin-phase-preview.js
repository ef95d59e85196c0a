// The phase page's agent instructions preview, updated as the form is edited.
//
// A pause in typing posts the form to the preview endpoint (PhaseAdmin.preview_view), which answers with
// the instructions rendered by the site's Markdown renderer and sanitised there; nothing is saved. Only the
// newest answer is shown: an edit made while a request is out cancels it.
(function () {
  "use strict";

  const PAUSE_MS = 300;

  function start() {
    const panel = document.getElementById("phase-preview");
    const url = panel && panel.dataset.previewUrl;
    if (!url) return; // read-only page: the preview shows the phase as saved
    const form = panel.closest("form");
    const body = document.getElementById("phase-preview-body");
    const status = document.getElementById("phase-preview-status");
    const idle = status.textContent;
    let timer = null;
    let controller = null;
    let sent = 0;

    function problem(message) {
      status.textContent = "Not updated: " + message;
      status.dataset.state = "error";
    }

    async function update() {
      if (controller) controller.abort();
      controller = new AbortController();
      const number = ++sent;
      panel.setAttribute("aria-busy", "true");
      try {
        const response = await fetch(url, {
          method: "POST",
          body: new FormData(form), // carries the CSRF token the form holds
          credentials: "same-origin",
          redirect: "manual", // a redirect means the session ended: it would lead to the login page
          signal: controller.signal,
        });
        if (response.type === "opaqueredirect") {
          problem("you are logged out; reload the page to log in again.");
          return;
        }
        const text = await response.text();
        if (number !== sent) return;
        if (!response.ok) {
          const plain = (response.headers.get("Content-Type") || "").startsWith("text/plain");
          problem(plain && text.trim() ? text.trim() : `the server answered ${response.status}.`);
          return;
        }
        const source = body.querySelector(".phase-preview-source");
        const sourceOpen = source && source.open;
        body.innerHTML = text; // rendered and sanitised by the server (phases/markdown.py)
        if (sourceOpen) body.querySelector(".phase-preview-source").open = true;
        status.textContent = idle;
        delete status.dataset.state;
      } catch (error) {
        if (error.name !== "AbortError") problem("the server could not be reached.");
      } finally {
        if (number === sent) panel.removeAttribute("aria-busy");
      }
    }

    function schedule(event) {
      if (panel.contains(event.target)) return;
      clearTimeout(timer);
      timer = setTimeout(update, PAUSE_MS);
    }

    form.addEventListener("input", schedule);
    form.addEventListener("change", schedule);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
