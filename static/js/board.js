// The live Kanban board: drag and drop with SortableJS, moves posted through htmx, the cards' move menus,
// and events from the board's websocket (live.js) applied by re-rendering the affected columns from the server.
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

  // ---- Card menus -----------------------------------------------------------------------------------

  // A re-rendered column brings its cards back with their menus closed. The menu that was open opens
  // again in the new copy (a live update must not close it under the user's hands), except after a
  // choice of column or phase from it: that move is done, so the menu closes and the focus goes back
  // to its button. "Move up" and "Move down" keep it open, to be pressed again.
  let reopenTicket = null;
  let menuChoice = null;
  let followFocus = false;

  function openMenuTicket() {
    const open = document.querySelector(".card-menu[open]");
    const card = open && open.closest(".card");
    return card ? card.dataset.ticketId : null;
  }

  document.addEventListener(
    "click",
    function (evt) {
      const summary = evt.target.closest && evt.target.closest(".card-menu > summary");
      if (summary && !summary.parentElement.open) placeMenu(summary.parentElement);
      const button = evt.target.closest && evt.target.closest("form.move button");
      if (button) {
        menuChoice = { ticket: button.closest(".card").dataset.ticketId, keepOpen: button.name === "direction" };
      }
      // A click elsewhere closes an open menu, as menus do.
      document.querySelectorAll(".card-menu[open]").forEach(function (menu) {
        if (!menu.contains(evt.target)) menu.open = false;
      });
    },
    true,
  );

  // An open menu floats over the board, anchored to its button: inside a column that scrolls, a panel
  // positioned in the card would be cut off at the column's edges. It is placed as its button is
  // pressed, before it shows (its items must be focusable at once: a keyboard user presses Tab right
  // after Enter), and again once open, when its size is known: flipped above its button when there is
  // no room below, and kept in the window.
  page.classList.add("menus-float");
  const GAP = 4;
  const MARGIN = 8;

  function placeMenu(menu) {
    const panel = menu.querySelector(".menu-panel");
    const anchor = menu.querySelector("summary").getBoundingClientRect();
    // A closed menu's panel is not laid out: its width is the stylesheet's 16rem, its height unknown.
    const width = panel.offsetWidth || 16 * parseFloat(getComputedStyle(document.documentElement).fontSize);
    const height = panel.scrollHeight;
    const left = Math.max(MARGIN, Math.min(anchor.right - width, window.innerWidth - width - MARGIN));
    const below = window.innerHeight - anchor.bottom - GAP - MARGIN;
    const above = anchor.top - GAP - MARGIN;
    const up = height > below && above > below;
    const room = Math.max(up ? above : below, 120);
    const top = up ? anchor.top - GAP - Math.min(height, room) : anchor.bottom + GAP;
    menu.style.setProperty("--menu-left", Math.round(left) + "px");
    menu.style.setProperty("--menu-top", Math.round(top) + "px");
    menu.style.setProperty("--menu-max-height", Math.round(room) + "px");
  }

  function placeOpenMenus() {
    document.querySelectorAll(".card-menu[open]").forEach(placeMenu);
  }
  window.addEventListener("resize", placeOpenMenus);
  // Columns and the board scroll on their own: an open menu follows its button.
  document.addEventListener("scroll", placeOpenMenus, { capture: true, passive: true });

  // One menu open at a time.
  document.addEventListener(
    "toggle",
    function (evt) {
      const menu = evt.target;
      if (!menu.classList || !menu.classList.contains("card-menu") || !menu.open) return;
      document.querySelectorAll(".card-menu[open]").forEach(function (other) {
        if (other !== menu) other.open = false;
      });
      placeMenu(menu);
    },
    true,
  );

  document.addEventListener("keydown", function (evt) {
    if (evt.key !== "Escape") return;
    const menu = document.querySelector(".card-menu[open]");
    if (!menu) return;
    menu.open = false;
    menu.querySelector("summary").focus();
  });

  // Keep focus where the user had it: a swapped column brings the same ids back.
  document.body.addEventListener("htmx:beforeSwap", function (evt) {
    const active = document.activeElement;
    focusId = active && active !== document.body && active.id ? active.id : null;
    reopenTicket = openMenuTicket();
    const source = evt.detail.elt;
    followFocus = false;
    if (menuChoice && source && source.matches && source.matches("form.move")) {
      if (!menuChoice.keepOpen) {
        if (reopenTicket === menuChoice.ticket) reopenTicket = null;
        focusId = "move-" + menuChoice.ticket;
        followFocus = true; // the card may now be in a column out of view: show where it went
      }
      menuChoice = null;
    }
  });
  document.body.addEventListener("htmx:oobBeforeSwap", function (evt) {
    const fragment = evt.detail.fragment;
    if (!reopenTicket || !fragment || !fragment.querySelector) return;
    const menu = fragment.querySelector("#ticket-" + reopenTicket + " .card-menu");
    if (!menu) return;
    // Open and placed where the old one was, so that the focus can land in it at once; placed anew below.
    const old = document.querySelector("#ticket-" + reopenTicket + " .card-menu");
    menu.setAttribute("open", "");
    if (old) menu.setAttribute("style", old.getAttribute("style") || "");
  });
  document.body.addEventListener("htmx:afterSettle", function () {
    fitBoard();
    showMessage();
    placeOpenMenus();
    if (!focusId) return;
    const target = document.getElementById(focusId);
    if (target && document.activeElement !== target && !document.activeElement.closest?.("#board-filters")) {
      target.focus({ preventScroll: true });
      if (followFocus) target.scrollIntoView({ block: "nearest", inline: "nearest" });
    }
    followFocus = false;
  });

  // ---- Layout and messages ------------------------------------------------------------------------

  // The board fills the window below its header, so that each column scrolls on its own and the
  // board's horizontal scroll bar stays in view; CSS reads where the board starts from --board-top.
  function fitBoard() {
    const board = document.getElementById("board");
    if (!board) return;
    const top = board.getBoundingClientRect().top + window.scrollY;
    page.style.setProperty("--board-top", Math.round(top) + "px");
  }
  window.addEventListener("resize", fitBoard);
  window.addEventListener("load", fitBoard);
  // What stands above the board may change height on its own (fonts arriving, filters wrapping).
  if (window.ResizeObserver) {
    const above = new ResizeObserver(fitBoard);
    document.querySelectorAll(".board-tabs, .board-header, #board-filters").forEach(function (element) {
      above.observe(element);
    });
  }
  fitBoard();

  // A move's outcome shows over the board, not above it, so the cards do not jump down. Success
  // fades out by itself; a refusal stays until it is dismissed (staff may answer it with a reason).
  const message = document.getElementById("board-message");
  const dismiss = page.querySelector(".message-close");
  let messageTimer = null;
  let messageShown = null;
  function showMessage() {
    dismiss.hidden = !message.firstElementChild;
    if (message.firstElementChild === messageShown) return; // a live update, not a new outcome
    messageShown = message.firstElementChild;
    clearTimeout(messageTimer);
    if (message.querySelector(".message-success") && !message.querySelector("form")) {
      messageTimer = setTimeout(clearMessage, 6000);
    }
  }
  function clearMessage() {
    if (message.contains(document.activeElement)) return; // never pull the rug from under the keyboard
    message.replaceChildren();
    dismiss.hidden = true;
  }
  dismiss.addEventListener("click", function () {
    message.replaceChildren();
    dismiss.hidden = true;
  });

  // ---- Drag and drop ------------------------------------------------------------------------------

  function sendDrop(item, list) {
    const form = item.querySelector("form.move");
    const values = {
      column: list.dataset.column,
      // A column of several phases has one list per phase: the drop asks for that phase.
      phase: list.dataset.phase || "",
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
      filter: "select, button, input, label, summary, .menu-panel",
      preventOnFilter: false,
      animation: 120,
      ghostClass: "sortable-ghost",
      chosenClass: "sortable-chosen",
      onStart: function () {
        dragging = true;
        list.closest(".board").classList.add("is-dragging");
      },
      onEnd: function (evt) {
        dragging = false;
        document.querySelectorAll(".board.is-dragging").forEach(function (board) {
          board.classList.remove("is-dragging");
        });
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
