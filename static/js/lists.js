// Keeps a board's list pages (discoveries, agents) current: when the board's live connection brings an event
// the list shows, the list is fetched again from the page's own URL, filters included, and swapped in by htmx.
(function () {
  "use strict";

  const page = document.querySelector(".list-page[data-live-list]");
  if (!page) return;
  const listId = page.dataset.liveList;
  const prefixes = (page.dataset.liveEvents || "").split(" ").filter(Boolean);
  const status = document.getElementById("live-status");
  // Rows shown after one "Load more": a refresh would drop them, so the page offers it instead of doing it.
  const FIRST_PAGE_ROWS = 50;
  const RETRY_MS = 1000;

  if (!window.OmoiLive || !window.htmx) {
    // Without the live connection the page still works: it is up to date as of its loading.
    if (status) {
      status.dataset.state = "offline";
      status.textContent = "Not live: reload for news";
    }
    return;
  }

  let inFlight = false;
  let pending = false;
  let retry = null;

  function list() {
    return document.getElementById(listId);
  }

  // Someone typing a reason or holding a confirm step open keeps their list until they are done.
  function busy(region) {
    if (region.querySelector("details[open]")) return true;
    const active = document.activeElement;
    return Boolean(active && region.contains(active) && active.closest("form"));
  }

  function extended(region) {
    return region.querySelectorAll("tbody > tr:not(.load-more-row)").length > FIRST_PAGE_ROWS;
  }

  function showNotice(region) {
    const notice = region.querySelector(".live-notice");
    if (!notice) return;
    notice.querySelector("a").href = window.location.href;
    notice.hidden = false;
  }

  function refresh() {
    pending = true;
    const region = list();
    if (!region || inFlight) return;
    if (extended(region)) {
      pending = false;
      showNotice(region);
      return;
    }
    if (busy(region)) {
      if (!retry) {
        retry = window.setTimeout(function () {
          retry = null;
          if (pending) refresh();
        }, RETRY_MS);
      }
      return;
    }
    pending = false;
    inFlight = true;
    window.htmx
      .ajax("GET", window.location.pathname + window.location.search, { target: "#" + listId, swap: "outerHTML" })
      .finally(function () {
        inFlight = false;
        // Events that came during the request may not be in its answer: one more round picks them up.
        if (pending) refresh();
      });
  }

  function shows(event) {
    return prefixes.some(function (prefix) {
      return String(event.type || "").startsWith(prefix);
    });
  }

  window.OmoiLive.connect({
    url: page.dataset.socketPath,
    lastEventId: Number(page.dataset.lastEventId || 0),
    onEvent: function (event) {
      if (shows(event)) refresh();
    },
    onReload: refresh,
    statusElement: status,
  });
})();
