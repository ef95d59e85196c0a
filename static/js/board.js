// The live Kanban board: drag and drop with SortableJS, moves posted through htmx, and events from the
// board's websocket (live.js) applied by re-rendering the affected columns from the server.
(function () {
  "use strict";

  const page = document.getElementById("board-page");
  // The server's event names (board.events.EventType), so this file holds no copy of them.
  const EVENT = JSON.parse(document.getElementById("event-types").textContent);
  if (!page) return;

  // htmx puts the focus back on a swapped-in button at once but wires its form only when the swap
  // settles (20 ms later by default): Enter or Space in between posted the form natively and reloaded
  // the page. Settling at once leaves no such gap; the board has no settle transitions to wait for.
  htmx.config.defaultSettleDelay = 0;

  const FILTERS = ["priority", "phase", "q", "blocked", "lanes"];
  let dragging = false;
  let inFlight = 0;
  const pendingColumns = new Set();
  let focusId = null;

  // ---- Helpers ------------------------------------------------------------------------------------

  function filterParams() {
    const current = new URLSearchParams(window.location.search);
    const params = new URLSearchParams();
    for (const name of FILTERS) {
      for (const value of current.getAll(name)) {
        if (value) params.append(name, value);
      }
    }
    return params;
  }

  function columnOfPhase(phaseKey) {
    for (const column of document.querySelectorAll(".column[data-phases]")) {
      if (column.dataset.phases.split(" ").includes(phaseKey)) return column.dataset.column;
    }
    return null;
  }

  function columnOfCard(ticketId) {
    const card = document.getElementById("ticket-" + ticketId);
    const column = card && card.closest(".column");
    return column ? column.dataset.column : null;
  }

  function cardId(element) {
    return element && element.classList.contains("card") ? element.dataset.ticketId : "";
  }

  // Keep focus where the user had it: a swapped column brings the same ids back.
  document.body.addEventListener("htmx:beforeSwap", function () {
    const active = document.activeElement;
    focusId = active && active !== document.body && active.id ? active.id : null;
  });
  document.body.addEventListener("htmx:afterSettle", function () {
    if (!focusId) return;
    const target = document.getElementById(focusId);
    if (target && document.activeElement !== target && !document.activeElement.closest?.("#board-filters")) {
      target.focus({ preventScroll: true });
    }
  });

  // ---- Drag and drop ------------------------------------------------------------------------------

  function sendDrop(item, list) {
    const form = item.querySelector("form.move");
    const values = {
      column: list.dataset.column,
      previous: cardId(item.previousElementSibling),
      next: cardId(item.nextElementSibling),
    };
    inFlight += 1;
    return htmx
      .ajax("POST", form.getAttribute("hx-post"), { source: page, values: values, swap: "none" })
      .finally(function () {
        inFlight -= 1;
        flush();
      });
  }

  function makeSortable(list) {
    if (list.dataset.sortable) return;
    list.dataset.sortable = "on";
    Sortable.create(list, {
      // With swimlanes a card moves between columns within its own priority lane.
      group: "lane-" + (list.dataset.lane || "all"),
      draggable: ".card",
      filter: "select, button, input, label",
      preventOnFilter: false,
      animation: 120,
      ghostClass: "sortable-ghost",
      chosenClass: "sortable-chosen",
      onStart: function () {
        dragging = true;
      },
      onEnd: function (evt) {
        dragging = false;
        if (evt.from === evt.to && evt.oldIndex === evt.newIndex) {
          flush();
          return;
        }
        sendDrop(evt.item, evt.to);
      },
    });
  }

  htmx.onLoad(function (root) {
    const lists = root.matches && root.matches("ol.cards") ? [root] : root.querySelectorAll("ol.cards");
    lists.forEach(makeSortable);
  });

  // Forms and links inside the board count as requests in flight: live refreshes wait for them.
  document.body.addEventListener("htmx:beforeRequest", function (evt) {
    if (evt.detail.elt && evt.detail.elt.closest && evt.detail.elt.closest("form.move, form.override")) inFlight += 1;
  });
  document.body.addEventListener("htmx:afterRequest", function (evt) {
    if (evt.detail.elt && evt.detail.elt.closest && evt.detail.elt.closest("form.move, form.override")) {
      inFlight = Math.max(0, inFlight - 1);
      flush();
    }
  });

  // ---- Live updates -------------------------------------------------------------------------------

  function alreadyShown(event) {
    // Our own move answered with fresh columns; its echo on the socket needs nothing more.
    const version = event.payload && event.payload.version;
    const card = document.getElementById("ticket-" + event.entity_id);
    if (!version || !card || Number(card.dataset.version) < version) return false;
    const expected = event.type === EVENT.TICKET_TRANSITIONED ? columnOfPhase(event.payload.to) : event.payload.column;
    return !expected || columnOfCard(event.entity_id) === expected;
  }

  function columnsFor(event) {
    const payload = event.payload || {};
    const keys = [];
    if (event.type === EVENT.TICKET_TRANSITIONED) {
      keys.push(columnOfPhase(payload.from), columnOfPhase(payload.to));
    } else if (event.type === EVENT.TICKET_MOVED) {
      keys.push(payload.column || columnOfCard(event.entity_id));
    } else if (event.entity_type === "ticket") {
      keys.push(columnOfPhase(payload.phase), columnOfCard(event.entity_id));
    } else if (payload.ticket) {
      keys.push(columnOfCard(payload.ticket));
    }
    return keys.filter(Boolean);
  }

  // live.js calls this once per event, in order, never twice for one event.
  function apply(event) {
    page.dataset.lastEventId = String(event.id);
    if (event.entity_type === "ticket" && alreadyShown(event)) return;
    columnsFor(event).forEach(function (key) {
      pendingColumns.add(key);
    });
    flush();
  }

  let flushTimer = null;
  function flush() {
    if (!pendingColumns.size || dragging || inFlight) return;
    clearTimeout(flushTimer);
    // Gather a burst of events into one request.
    flushTimer = setTimeout(function () {
      if (!pendingColumns.size || dragging || inFlight) return;
      const params = filterParams();
      pendingColumns.forEach(function (key) {
        params.append("column", key);
      });
      pendingColumns.clear();
      inFlight += 1;
      htmx
        .ajax("GET", page.dataset.columnsUrl + "?" + params.toString(), { source: page, swap: "none" })
        .finally(function () {
          inFlight -= 1;
          flush();
        });
    }, 30);
  }

  OmoiLive.connect({
    url: page.dataset.socketPath,
    lastEventId: Number(page.dataset.lastEventId || 0),
    onEvent: apply,
    statusElement: document.getElementById("live-status"),
  });
})();
