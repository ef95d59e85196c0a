// The live connection of a board's pages: the board websocket, replay of what was missed after each reconnect,
// and a status line. The board and the workflow graph both use it (see board/consumers.py for the protocol).
//
//   const live = OmoiLive.connect({
//     url: "/ws/boards/<slug>/",     // a path on this host, or a full ws(s):// URL
//     lastEventId: 42,               // the last event the page already shows
//     onEvent(event) {},             // once per new event, in id order
//     onReload() {},                 // the server asks for a fresh page (default: reload it)
//     onState(state, text) {},       // "live", "reconnecting", "signed-out" or "gone"
//     statusElement: element,        // gets the text and data-state ("live" or "offline")
//   });
//   live.lastEventId; live.close();
(function () {
  "use strict";

  // A socket open at least this long before a 4401 was live: the session may only have been renewed.
  const LIVE_BEFORE_4401_MS = 2000;
  const PING_MS = 25000;
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_MAX_MS = 15000;

  const TEXT = {
    live: "Live",
    reconnecting: "Reconnecting…",
    "signed-out": "Signed out: reload the page to log in again.",
    gone: "This board is no longer available to you.",
  };

  function socketUrl(url, after) {
    let base = url;
    if (url.startsWith("/")) {
      const scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
      base = scheme + window.location.host + url;
    }
    return base + (base.includes("?") ? "&" : "?") + "after=" + after;
  }

  function connect(options) {
    const onEvent = options.onEvent || function () {};
    const onReload =
      options.onReload ||
      function () {
        window.location.reload();
      };
    const onState = options.onState || function () {};
    const statusElement = options.statusElement || null;

    let lastEventId = Number(options.lastEventId || 0);
    let socket = null;
    let retries = 0;
    let pingTimer = null;
    let retryTimer = null;
    let closed = false;
    // A live socket closed with 4401 may only mean the session changed (a new login in another tab): the
    // browser's cookie is then the new one, and reconnecting at once tells the two apart. A refused handshake
    // closes right after opening, so it is not retried.
    let openedAt = 0;

    function setState(state) {
      if (statusElement) {
        statusElement.dataset.state = state === "live" ? "live" : "offline";
        statusElement.textContent = TEXT[state];
      }
      onState(state, TEXT[state]);
    }

    function deliver(event) {
      if (!event || typeof event.id !== "number" || event.id <= lastEventId) return; // seen already
      lastEventId = event.id;
      onEvent(event);
    }

    function retryIn(delay) {
      clearTimeout(retryTimer);
      retryTimer = setTimeout(open, delay);
    }

    function open() {
      if (closed) return;
      socket = new WebSocket(socketUrl(options.url, lastEventId));
      socket.addEventListener("open", function () {
        openedAt = Date.now();
        retries = 0;
        setState("live");
        clearInterval(pingTimer);
        pingTimer = setInterval(function () {
          if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify({ type: "ping" }));
        }, PING_MS);
      });
      socket.addEventListener("message", function (message) {
        let data;
        try {
          data = JSON.parse(message.data);
        } catch (error) {
          return;
        }
        if (data.type === "event") deliver(data.event);
        else if (data.type === "reload") onReload(data.reason);
      });
      socket.addEventListener("close", function (evt) {
        clearInterval(pingTimer);
        if (closed) return;
        if (evt.code === 4401) {
          if (Date.now() - openedAt > LIVE_BEFORE_4401_MS) {
            retryIn(1000); // time for the response that set the new cookie to arrive
            return;
          }
          setState("signed-out");
          return;
        }
        if (evt.code === 4404) {
          setState("gone");
          return;
        }
        retries += 1;
        setState("reconnecting");
        retryIn(Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(retries, 5)));
      });
    }

    open();

    return {
      get lastEventId() {
        return lastEventId;
      },
      close: function () {
        closed = true;
        clearTimeout(retryTimer);
        clearInterval(pingTimer);
        if (socket) socket.close();
      },
    };
  }

  window.OmoiLive = { connect: connect };
})();
