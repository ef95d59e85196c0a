// The live workflow graph: tasks drawn with Cytoscape (laid out by dagre, one ticket at a time), patched in
// place from the board's websocket (live.js), with filters kept in the URL and a side panel per task.
//
// The page's JSON holds the whole graph; this file keeps it as the model and draws the part the filters keep
// (the rule of discoveries.graph.graph_filtered). Events update the model and the drawing in place; a new task
// is fetched (one small JSON) and laid out with its own ticket only. The whole graph is laid out on load, when
// the filters change and when the user asks ("Tidy"). The user's zoom and pan are kept across updates and
// remembered per graph in localStorage. Colours are the stylesheet's custom properties, read on start and again
// when the system switches between light and dark.
(function () {
  "use strict";

  const page = document.getElementById("graph-page");
  if (!page || typeof cytoscape === "undefined") return;
  const CONFIG = JSON.parse(document.getElementById("graph-config").textContent);
  const PHASES = new Map(CONFIG.phases.map((phase) => [phase.key, phase]));
  const STATUSES = new Map(CONFIG.statuses.map((status) => [status.key, status]));
  const BOARD_SCOPE = CONFIG.ticket === null;
  const NODE_WIDTH = 170;
  const NODE_HEIGHT = 54;
  const TICKET_GAP = 70;
  const FRAME_PADDING = 18;
  const RANK_GAP = 56;
  const ROW_MAX = 12;
  const VIEWPORT_KEY = "omoi-graph-viewport:" + window.location.pathname;

  const canvas = document.getElementById("graph-canvas");
  const form = document.getElementById("graph-filters");
  const notice = document.getElementById("graph-notice");
  const panel = document.getElementById("graph-panel");
  const announcer = document.getElementById("graph-announcer");
  const counts = document.getElementById("graph-counts");

  // Figures read by the browser tests and bench/graph.py: milliseconds from performance.now().
  // renders: each whole drawing (load, filters, "show anyway"), from its start to its first frame drawn.
  const metrics = { dataLoaded: null, firstRender: null, layoutMs: null, renders: [], updates: [] };

  const model = { nodes: new Map(), edges: new Map() };
  const fetching = new Map(); // task id -> events that came while its JSON was on the way
  let cy = null;
  let large = false;
  let showAnyway = false;
  let panelTask = null;
  let panelOpener = null; // the list's button that opened the panel: the focus goes back to it on closing

  // ---- The model and the filters -------------------------------------------------------------------

  function readFilters() {
    const data = new FormData(form);
    return {
      phases: new Set(data.getAll("phase")),
      statuses: new Set(data.getAll("status")),
      types: new Set(data.getAll("type")),
    };
  }

  // The same rule as discoveries.graph.graph_filtered.
  function filtered(filters) {
    const kept = new Set();
    model.nodes.forEach(function (node, id) {
      if (filters.phases.size && !filters.phases.has(node.phase)) return;
      if (filters.statuses.size && !filters.statuses.has(node.status)) return;
      kept.add(id);
    });
    let edges = [];
    model.edges.forEach(function (edge) {
      if (kept.has(edge.source) && kept.has(edge.target)) edges.push(edge);
    });
    if (!filters.types.size) return { nodes: kept, edges: edges };
    const ends = new Set();
    edges.forEach(function (edge) {
      if (edge.kind === "discovery" && filters.types.has(edge.discovery_type)) {
        ends.add(edge.source);
        ends.add(edge.target);
      }
    });
    edges = edges.filter(function (edge) {
      if (!ends.has(edge.source) || !ends.has(edge.target)) return false;
      return edge.kind === "dependency" || filters.types.has(edge.discovery_type);
    });
    return { nodes: ends, edges: edges };
  }

  function shortened(text, length) {
    return text.length <= length ? text : text.slice(0, length - 1) + "…";
  }

  // ---- Colours: the stylesheet's, in light or dark as the page is -----------------------------------

  // A colour as [r, g, b], whatever CSS form the stylesheet wrote it in: painted on a pixel and read back.
  const pixel = document.createElement("canvas").getContext("2d", { willReadFrequently: true });
  function rgbOf(colour, fallback) {
    pixel.clearRect(0, 0, 1, 1);
    pixel.fillStyle = fallback;
    pixel.fillStyle = colour || fallback;
    pixel.fillRect(0, 0, 1, 1);
    const data = pixel.getImageData(0, 0, 1, 1).data;
    return [data[0], data[1], data[2]];
  }

  function css(rgb) {
    return "rgb(" + rgb.join(",") + ")";
  }

  // `share` of `colour` over `ground`: a phase's fill, light enough (or dark enough) for the text on it.
  function mix(colour, ground, share) {
    return colour.map((channel, i) => Math.round(channel * share + ground[i] * (1 - share)));
  }

  // The stylesheet's custom properties the drawing uses, read now: on start, and when the system switches
  // between light and dark. The fallbacks are the light theme's, for a page whose stylesheet did not load.
  function readTheme() {
    const style = getComputedStyle(document.documentElement);
    const read = (name, fallback) => rgbOf(style.getPropertyValue("--" + name).trim(), fallback);
    const theme = {
      surface: read("surface", "#ffffff"),
      sunken: read("surface-2", "#eef0f4"),
      text: read("text", "#1a1e26"),
      muted: read("text-muted", "#566070"),
      borderStrong: read("border-strong", "#b9c0cc"),
      accent: read("accent", "#4451d0"),
      focus: read("focus", "#c96a00"),
      closed: read("gray", "#646b78"),
      dependency: read("slate", "#4f6079"),
      phases: new Map(),
      statuses: new Map(),
    };
    PHASES.forEach(function (phase, key) {
      theme.phases.set(key, css(mix(read(phase.colour, "#999999"), theme.surface, 0.38)));
    });
    STATUSES.forEach(function (status, key) {
      theme.statuses.set(key, css(read(status.colour, "#566070")));
    });
    return theme;
  }

  let theme = readTheme();

  function nodeData(node) {
    const status = STATUSES.get(node.status) || { symbol: "?", name: node.status, shape: "ellipse", line: "solid" };
    const data = {
      id: "task-" + node.id,
      task: node.id,
      ticket: node.ticket,
      label: "#" + node.id + " " + shortened(node.title, 40) + "\n" + status.symbol + " " + status.name,
      phase: node.phase,
      fill: theme.phases.get(node.phase) || css(theme.sunken),
      shape: status.shape,
      border: theme.statuses.get(node.status) || css(theme.text),
      line: status.line,
      status: node.status,
    };
    return data;
  }

  // A ticket's frame on the board's graph: a plain node behind its tasks, sized to them after each layout.
  // Not a compound parent: those made the layout half as fast again and every frame slower at 2,000 tasks.
  function ticketData(node) {
    return {
      id: "ticket-" + node.ticket,
      ticket: node.ticket,
      label: "#" + node.ticket + " " + shortened(node.ticket_title || "", 50),
      w: 1,
      h: 1,
    };
  }

  function edgeData(edge) {
    const data = {
      id: edge.id,
      source: "task-" + edge.source,
      target: "task-" + edge.target,
    };
    if (edge.kind === "discovery") data.label = CONFIG.types[edge.discovery_type] || edge.discovery_type;
    return data;
  }

  function edgeClasses(edge) {
    if (edge.kind !== "discovery") return "dependency";
    return edge.resolution_status === "open" ? "discovery" : "discovery closed";
  }

  // ---- Drawing ------------------------------------------------------------------------------------

  function style() {
    return [
      {
        selector: "node.task",
        style: {
          shape: "data(shape)",
          width: NODE_WIDTH,
          height: NODE_HEIGHT,
          "background-color": "data(fill)",
          "border-width": 3,
          "border-color": "data(border)",
          "border-style": "data(line)",
          label: "data(label)",
          "text-wrap": "wrap",
          "text-max-width": NODE_WIDTH - 24,
          "text-valign": "center",
          "text-halign": "center",
          "font-size": 11,
          color: css(theme.text),
          "min-zoomed-font-size": 7,
          // Frames behind edges, edges behind tasks: the order is set by hand, since frames are plain nodes.
          "z-index-compare": "manual",
          "z-index": 3,
        },
      },
      { selector: "node.task:selected", style: { "border-width": 6, "overlay-color": css(theme.focus), "overlay-opacity": 0.3 } },
      {
        selector: "node.ticket",
        style: {
          shape: "round-rectangle",
          width: "data(w)",
          height: "data(h)",
          "z-index-compare": "manual",
          "z-index": 1,
          "background-color": css(theme.surface),
          "border-color": css(theme.borderStrong),
          "border-width": 1,
          label: "data(label)",
          "text-valign": "top",
          "text-halign": "center",
          "text-margin-y": -4,
          "font-size": 13,
          "font-weight": 600,
          color: css(theme.text),
          "min-zoomed-font-size": 7,
          events: "no",
        },
      },
      {
        selector: "edge",
        style: {
          width: 2,
          "z-index-compare": "manual",
          "z-index": 2,
          "curve-style": large ? "straight" : "bezier",
          "target-arrow-shape": "triangle",
        },
      },
      {
        selector: "edge.discovery",
        style: {
          "line-color": css(theme.accent),
          "target-arrow-color": css(theme.accent),
          label: "data(label)",
          "font-size": 10,
          color: css(theme.text),
          "text-background-color": css(theme.surface),
          "text-background-opacity": 1,
          "text-background-padding": 2,
          "min-zoomed-font-size": 8,
        },
      },
      {
        selector: "edge.discovery.closed",
        style: { "line-color": css(theme.closed), "target-arrow-color": css(theme.closed) },
      },
      {
        selector: "edge.dependency",
        style: {
          width: 1.5,
          "line-style": "dashed",
          "line-color": css(theme.dependency),
          "target-arrow-color": css(theme.dependency),
          "target-arrow-shape": "vee",
        },
      },
    ];
  }

  // The system switched between light and dark: the stylesheet's colours did, and so does the drawing, in place.
  function applyTheme() {
    theme = readTheme();
    if (!cy) return;
    cy.batch(function () {
      cy.nodes("node.task").forEach(function (element) {
        const node = model.nodes.get(element.data("task"));
        if (node) element.data(nodeData(node));
      });
    });
    cy.style(style());
  }

  function createCy() {
    large = model.nodes.size > CONFIG.largeGraph;
    cy = cytoscape({
      container: canvas,
      style: style(),
      minZoom: 0.03,
      maxZoom: 2.5,
      boxSelectionEnabled: false,
      autoungrabify: true,
      // Cytoscape's own viewport optimisations, for graphs that are large before any filter.
      hideEdgesOnViewport: large,
      textureOnViewport: large,
      motionBlur: false,
      pixelRatio: large ? 1 : "auto",
    });
    cy.on("tap", "node.task", function (evt) {
      panelOpener = null;
      openPanel(evt.target.data("task"));
    });
    cy.on("tap", function (evt) {
      if (evt.target === cy) closePanel();
    });
    let saveTimer = null;
    cy.on("viewport", function () {
      clearTimeout(saveTimer);
      saveTimer = setTimeout(saveViewport, 250);
    });
  }

  function elementsFor(shown) {
    const elements = [];
    const tickets = new Set();
    shown.nodes.forEach(function (id) {
      const node = model.nodes.get(id);
      if (BOARD_SCOPE && !tickets.has(node.ticket)) {
        tickets.add(node.ticket);
        elements.push({ group: "nodes", data: ticketData(node), classes: "ticket" });
      }
      elements.push({ group: "nodes", data: nodeData(node), classes: "task" });
    });
    shown.edges.forEach(function (edge) {
      elements.push({ group: "edges", data: edgeData(edge), classes: edgeClasses(edge) });
    });
    return elements;
  }

  function ticketNodes(ticket) {
    return cy.nodes("node.task").filter(function (node) {
      return node.data("ticket") === ticket;
    });
  }

  // One ticket's tasks laid out with the top left corner of their box at 0, 0: {positions (task element id
  // to centre), width, height}. Dagre, or on a large graph `layered`.
  function ticketBlock(nodes) {
    if (large) return layered(nodes);
    nodes
      .union(nodes.edgesWith(nodes))
      .layout({ name: "dagre", rankDir: "TB", nodeSep: RANK_GAP / 2, rankSep: RANK_GAP, fit: false, animate: false })
      .run();
    const box = nodes.boundingBox({ includeLabels: false, includeOverlays: false });
    const positions = {};
    nodes.forEach(function (node) {
      const at = node.position();
      positions[node.id()] = { x: at.x - box.x1, y: at.y - box.y1 };
    });
    return { positions: positions, width: box.w, height: box.h };
  }

  // Dagre's kind of drawing, worked out directly, for large graphs: a task's rank is one below the lowest
  // task it comes from (a branch or a dependency inside the ticket), tasks of a rank in creation order, and
  // a rank of many tasks folded into lines of ROW_MAX. Dagre costs some 6 ms a ticket however small, which
  // at 200 tickets was most of the first render.
  function layered(nodes) {
    const rank = new Map();
    const ranks = [];
    nodes.sort((a, b) => a.data("task") - b.data("task")).forEach(function (node) {
      let row = 0;
      node.incomers("edge").forEach(function (edge) {
        const from = rank.get(edge.source().id());
        if (from !== undefined) row = Math.max(row, from + 1);
      });
      rank.set(node.id(), row);
      (ranks[row] = ranks[row] || []).push(node);
    });
    const rows = [];
    ranks.forEach(function (row) {
      for (let start = 0; row && start < row.length; start += ROW_MAX) rows.push(row.slice(start, start + ROW_MAX));
    });
    const widest = rows.reduce((max, row) => Math.max(max, row ? row.length : 0), 0);
    const step = NODE_WIDTH + RANK_GAP / 2;
    const positions = {};
    let height = 0;
    rows.forEach(function (row, index) {
      if (!row) return;
      const indent = ((widest - row.length) * step) / 2;
      const y = NODE_HEIGHT / 2 + index * (NODE_HEIGHT + RANK_GAP);
      row.forEach(function (node, place) {
        positions[node.id()] = { x: NODE_WIDTH / 2 + indent + place * step, y: y };
      });
      height = y + NODE_HEIGHT / 2;
    });
    return { positions: positions, width: (widest - 1) * step + NODE_WIDTH, height: height };
  }

  // Lay one ticket out again, its top left corner at `origin` (a live change; the rest of the graph stays).
  function layoutTicket(nodes, origin) {
    const block = ticketBlock(nodes);
    nodes.positions((node) => ({
      x: origin.x + block.positions[node.id()].x,
      y: origin.y + block.positions[node.id()].y,
    }));
  }

  // Fit a ticket's frame around its tasks (`nodes`, or all its drawn tasks); a frame left with no task goes.
  function frameTicket(ticket, nodes) {
    if (!BOARD_SCOPE) return;
    const frame = cy.getElementById("ticket-" + ticket);
    nodes = nodes || ticketNodes(ticket);
    if (nodes.empty()) {
      frame.remove();
      return;
    }
    const box = nodes.boundingBox({ includeLabels: false });
    frame.data({ w: box.w + 2 * FRAME_PADDING, h: box.h + 2 * FRAME_PADDING });
    frame.position({ x: (box.x1 + box.x2) / 2, y: (box.y1 + box.y2) / 2 });
  }

  // The whole graph: each ticket laid out alone, the tickets packed in rows in the order of their first task,
  // then every position set at once (one position change per node, not one per step).
  function layoutAll() {
    const started = performance.now();
    const groups = new Map();
    cy.nodes("node.task").forEach(function (node) {
      const ticket = node.data("ticket");
      if (!groups.has(ticket)) groups.set(ticket, []);
      groups.get(ticket).push(node);
    });
    // Not inside cy.batch: a batch holds back the style, and dagre would read every node's size as the default.
    const blocks = [];
    groups.forEach(function (list, ticket) {
      blocks.push(Object.assign({ ticket: ticket, nodes: cy.collection(list) }, ticketBlock(cy.collection(list))));
    });
    metrics.ticketsMs = performance.now() - started;
    const area = blocks.reduce((sum, block) => sum + (block.width + TICKET_GAP) * (block.height + TICKET_GAP), 0);
    const widest = blocks.reduce((max, block) => Math.max(max, block.width), 0);
    const rowWidth = Math.max(widest, Math.sqrt(area) * 1.6);
    const positions = {};
    let x = 0;
    let y = 0;
    let rowHeight = 0;
    blocks.forEach(function (block) {
      if (x > 0 && x + block.width > rowWidth) {
        x = 0;
        y += rowHeight + TICKET_GAP;
        rowHeight = 0;
      }
      block.x = x;
      block.y = y;
      block.nodes.forEach(function (node) {
        const at = block.positions[node.id()];
        positions[node.id()] = { x: x + at.x, y: y + at.y };
      });
      x += block.width + TICKET_GAP;
      rowHeight = Math.max(rowHeight, block.height);
    });
    cy.batch(function () {
      cy.nodes("node.task").positions((node) => positions[node.id()]);
      if (BOARD_SCOPE) {
        blocks.forEach(function (block) {
          const frame = cy.getElementById("ticket-" + block.ticket);
          frame.data({ w: block.width + 2 * FRAME_PADDING, h: block.height + 2 * FRAME_PADDING });
          frame.position({ x: block.x + block.width / 2, y: block.y + block.height / 2 });
        });
      }
    });
    metrics.layoutMs = performance.now() - started;
  }

  // Fit the graph in view, but not closer than 1:1: a few nodes blown up to fill the screen read worse.
  // The box leaves labels out: measuring 2,000 of them took half a second (cy.fit measures them all).
  function fit() {
    if (!cy || cy.elements().empty()) return;
    const box = cy.nodes().boundingBox({ includeLabels: false, includeOverlays: false });
    const padding = 30;
    const fitted = Math.min((cy.width() - 2 * padding) / box.w, (cy.height() - 2 * padding) / box.h);
    const zoom = Math.max(cy.minZoom(), Math.min(1, fitted));
    cy.viewport({
      zoom: zoom,
      pan: { x: (cy.width() - zoom * (box.x1 + box.x2)) / 2, y: (cy.height() - zoom * (box.y1 + box.y2)) / 2 },
    });
  }

  function saveViewport() {
    try {
      localStorage.setItem(VIEWPORT_KEY, JSON.stringify({ zoom: cy.zoom(), pan: cy.pan() }));
    } catch (error) {
      // Storage may be full or forbidden: the view is then not remembered.
    }
  }

  function restoreViewport() {
    try {
      const saved = JSON.parse(localStorage.getItem(VIEWPORT_KEY) || "null");
      if (saved && saved.zoom > 0 && saved.pan && isFinite(saved.pan.x) && isFinite(saved.pan.y)) {
        cy.viewport({ zoom: saved.zoom, pan: saved.pan });
        return true;
      }
    } catch (error) {
      // A broken entry: fit instead.
    }
    return false;
  }

  function showCounts(shown) {
    counts.textContent = shown.nodes.size + " of " + model.nodes.size + " tasks shown";
  }

  function describeCounts(shown) {
    const byPhase = new Map();
    const byStatus = new Map();
    shown.nodes.forEach(function (id) {
      const node = model.nodes.get(id);
      byPhase.set(node.phase, (byPhase.get(node.phase) || 0) + 1);
      byStatus.set(node.status, (byStatus.get(node.status) || 0) + 1);
    });
    const list = document.getElementById("graph-notice-counts");
    list.replaceChildren();
    function add(term, counted, names) {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      // In the workflow's order of phases and the usual order of statuses.
      dd.textContent = Array.from(names.values())
        .filter((item) => counted.has(item.key))
        .map((item) => item.name + " " + counted.get(item.key))
        .join(", ");
      list.append(dt, dd);
    }
    add("By phase", byPhase, PHASES);
    add("By status", byStatus, STATUSES);
  }

  // Draw what the filters keep, from scratch: on load and when the filters change.
  function redraw({ restore }) {
    const started = performance.now();
    const shown = filtered(readFilters());
    showCounts(shown);
    if (shown.nodes.size > CONFIG.largeGraph && !showAnyway) {
      cy.elements().remove();
      document.getElementById("graph-notice-text").textContent =
        shown.nodes.size +
        " tasks match: more than " +
        CONFIG.largeGraph +
        " make the drawing slow to read. Filter by phase, status or discovery type first, or show them anyway.";
      describeCounts(shown);
      notice.hidden = false;
      return;
    }
    if (!notice.hidden) {
      notice.hidden = true;
      cy.resize(); // the drawing grew back to its full height
    }
    cy.batch(function () {
      cy.elements().remove();
      cy.add(elementsFor(shown));
    });
    const added = performance.now();
    layoutAll();
    if (!(restore && restoreViewport())) fit();
    const laidOut = performance.now();
    cy.one("render", function () {
      const now = performance.now();
      metrics.renders.push({
        nodes: shown.nodes.size,
        edges: shown.edges.length,
        ms: now - started,
        addMs: added - started,
        layoutMs: laidOut - added,
        frameMs: now - laidOut,
      });
    });
    if (panelTask !== null && !cy.getElementById("task-" + panelTask).nonempty()) closePanel();
  }

  // ---- Live updates -------------------------------------------------------------------------------

  function announce(text) {
    announcer.textContent = text;
  }

  // One live update's figures: applyMs from the event (or from its task's JSON, when one was fetched) to the
  // drawing patched; frameMs to the next frame, drawn; sinceEventMs from the event, fetch included.
  function record(event, started, fetchedAt) {
    const applied = performance.now();
    const entry = {
      event: event.id,
      type: event.type,
      applyMs: applied - (fetchedAt || started),
      sinceEventMs: applied - started,
      fetched: Boolean(fetchedAt),
    };
    metrics.updates.push(entry);
    requestAnimationFrame(function () {
      entry.frameMs = performance.now() - (fetchedAt || started);
    });
  }

  function matchesFilters(nodeIds) {
    const shown = filtered(readFilters());
    return nodeIds.every((id) => shown.nodes.has(id));
  }

  function drawn() {
    return cy && notice.hidden;
  }

  // Put a node into the drawing (when the filters keep it) beside its parent; lay out its ticket again.
  function drawNode(node) {
    if (!drawn()) return;
    const shown = filtered(readFilters());
    if (!shown.nodes.has(node.id)) return;
    const element = cy.getElementById("task-" + node.id);
    if (element.nonempty()) return;
    const siblings = ticketNodes(node.ticket);
    const before = siblings.nonempty() ? siblings.boundingBox({ includeLabels: false, includeOverlays: false }) : null;
    const parent = node.parent !== null ? cy.getElementById("task-" + node.parent) : cy.collection();
    let position;
    if (parent.nonempty()) {
      position = { x: parent.position("x") + NODE_WIDTH / 2, y: parent.position("y") + NODE_HEIGHT * 2 };
    } else if (before) {
      position = { x: before.x2 + NODE_WIDTH, y: before.y1 };
    } else {
      const all = cy.nodes("node.task");
      const box = all.nonempty() ? all.boundingBox({ includeLabels: false }) : { x1: 0, y2: -TICKET_GAP };
      position = { x: box.x1, y: box.y2 + TICKET_GAP * 2 };
    }
    cy.batch(function () {
      if (BOARD_SCOPE && cy.getElementById("ticket-" + node.ticket).empty()) {
        cy.add({ group: "nodes", data: ticketData(node), classes: "ticket" });
      }
      // A copy: Cytoscape keeps the object it is given as the node's position and moves it with the node.
      cy.add({ group: "nodes", data: nodeData(node), classes: "task", position: { x: position.x, y: position.y } });
      shown.edges.forEach(function (edge) {
        if ((edge.source === node.id || edge.target === node.id) && cy.getElementById(edge.id).empty()) {
          cy.add({ group: "edges", data: edgeData(edge), classes: edgeClasses(edge) });
        }
      });
    });
    layoutTicket(ticketNodes(node.ticket), before ? { x: before.x1, y: before.y1 } : position);
    frameTicket(node.ticket);
  }

  function drawEdge(edge) {
    if (!drawn() || cy.getElementById(edge.id).nonempty()) return;
    const shown = filtered(readFilters());
    if (!shown.edges.includes(edge)) return;
    const source = cy.getElementById("task-" + edge.source);
    const target = cy.getElementById("task-" + edge.target);
    if (source.empty() || target.empty()) {
      // A filter kept the branch and its ends: draw the missing end first.
      [edge.source, edge.target].forEach(function (id) {
        if (cy.getElementById("task-" + id).empty()) drawNode(model.nodes.get(id));
      });
    }
    cy.add({ group: "edges", data: edgeData(edge), classes: edgeClasses(edge) });
  }

  // A node whose status or phase changed: new look in place; drawn or taken out when the filters say so.
  function updateNode(node) {
    if (!drawn()) return;
    const element = cy.getElementById("task-" + node.id);
    const keep = matchesFilters([node.id]);
    if (element.nonempty() && !keep) {
      element.remove();
      frameTicket(node.ticket);
    } else if (element.empty() && keep) {
      drawNode(node);
    } else if (element.nonempty()) {
      element.data(nodeData(node));
    }
  }

  function storeEdge(edge) {
    const known = model.edges.get(edge.id);
    model.edges.set(edge.id, Object.assign(known || {}, edge));
    return model.edges.get(edge.id);
  }

  function applyDetails(details, started, event) {
    const fetchedAt = performance.now();
    const node = details.node;
    const isNew = !model.nodes.has(node.id);
    model.nodes.set(node.id, node);
    details.edges.forEach(storeEdge);
    if (isNew) {
      drawNode(node);
      showCounts(filtered(readFilters()));
      details.edges.forEach(function (edge) {
        if (model.nodes.has(edge.source) && model.nodes.has(edge.target)) drawEdge(model.edges.get(edge.id));
      });
      announce("New task #" + node.id + ": " + node.title + " (" + STATUSES.get(node.status).name + ").");
    } else {
      updateNode(node);
    }
    if (event) record(event, started, fetchedAt);
  }

  function fetchTask(id, event, started) {
    fetching.set(id, []);
    fetch(CONFIG.taskUrl + id + "/", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("status " + response.status);
        return response.json();
      })
      .then(function (details) {
        const waiting = fetching.get(id) || [];
        fetching.delete(id);
        if (CONFIG.ticket !== null && details.node.ticket !== CONFIG.ticket) return;
        applyDetails(details, started, event);
        // Events that came while the JSON was on the way: those it already reflects are skipped.
        waiting.filter((later) => later.id > details.last_event_id).forEach(handle);
        if (panelTask === id) renderPanel(details);
      })
      .catch(function () {
        fetching.delete(id);
      });
  }

  function ticketOf(event) {
    if (event.entity_type === "ticket") return Number(event.entity_id);
    const ticket = event.payload && event.payload.ticket;
    return typeof ticket === "number" ? ticket : null;
  }

  function handle(event) {
    const started = performance.now();
    const payload = event.payload || {};
    if (!BOARD_SCOPE && ticketOf(event) !== CONFIG.ticket) return;
    if (event.entity_type === "task") {
      const id = Number(event.entity_id);
      if (fetching.has(id)) {
        fetching.get(id).push(event);
        return;
      }
      const node = model.nodes.get(id);
      if (!node) {
        fetchTask(id, event, started);
        return;
      }
      const before = node.status;
      for (const key of ["status", "title", "agent", "phase", "attempt"]) {
        if (payload[key] !== undefined) node[key] = payload[key];
      }
      if (payload.phase && PHASES.has(payload.phase)) node.phase_name = PHASES.get(payload.phase).name;
      updateNode(node);
      record(event, started);
      if (before !== node.status) {
        announce("Task #" + id + " " + node.title + " is now " + STATUSES.get(node.status).name + ".");
      }
      if (panelTask === id) openPanel(id, { quiet: true });
    } else if (event.type === "discovery.branch_created") {
      const edge = storeEdge({
        id: "discovery-" + event.entity_id + "-" + payload.spawned_task,
        kind: "discovery",
        source: payload.source_task,
        target: payload.spawned_task,
        discovery_id: Number(event.entity_id),
        discovery_type: payload.discovery_type,
        description: payload.summary,
        resolution_status: "open",
      });
      if (model.nodes.has(edge.source) && model.nodes.has(edge.target)) {
        drawEdge(edge);
        record(event, started);
      }
    } else if (event.type === "discovery.recorded") {
      const node = model.nodes.get(payload.source_task);
      if (node) node.discoveries = (node.discoveries || 0) + 1;
      if (panelTask === payload.source_task) openPanel(panelTask, { quiet: true });
    } else if (event.type === "discovery.resolved") {
      const discovery = Number(event.entity_id);
      model.edges.forEach(function (edge) {
        if (edge.discovery_id !== discovery) return;
        edge.resolution_status = payload.status;
        if (cy && cy.getElementById(edge.id).nonempty()) {
          cy.getElementById(edge.id).classes(edgeClasses(edge));
        }
      });
      record(event, started);
    } else if (event.entity_type === "ticket" && payload.changes && payload.changes.title) {
      const ticket = Number(event.entity_id);
      const title = payload.changes.title[1];
      model.nodes.forEach(function (node) {
        if (node.ticket === ticket) node.ticket_title = title;
      });
      if (cy && BOARD_SCOPE) {
        const frame = cy.getElementById("ticket-" + ticket);
        if (frame.nonempty()) frame.data("label", "#" + ticket + " " + shortened(title, 50));
      }
    }
  }

  // ---- The side panel -------------------------------------------------------------------------------

  function closePanel() {
    const hadFocus = panel.contains(document.activeElement);
    panel.hidden = true;
    panelTask = null;
    if (cy) cy.nodes(":selected").unselect();
    if (hadFocus && panelOpener && document.body.contains(panelOpener)) panelOpener.focus();
    panelOpener = null;
  }

  function fact(list, term, value) {
    const dt = document.createElement("dt");
    dt.textContent = term;
    const dd = document.createElement("dd");
    dd.textContent = value;
    list.append(dt, dd);
  }

  function paragraph(text, className) {
    const p = document.createElement("p");
    p.textContent = text;
    if (className) p.className = className;
    return p;
  }

  function link(href, text) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }

  // Everything an agent sent goes in as text (textContent), never as markup.
  function renderPanel(details) {
    const node = details.node;
    const task = details.task;
    const status = STATUSES.get(node.status);
    document.getElementById("graph-panel-title").textContent = "#" + node.id + " " + node.title;
    const facts = document.getElementById("graph-panel-facts");
    facts.replaceChildren();
    fact(facts, "Phase", node.phase_name);
    fact(facts, "Status", status.symbol + " " + status.name);
    fact(facts, "Agent", node.agent || "none");
    fact(facts, "Attempts", node.attempt + " (retries used " + node.retry_count + " of " + node.max_retries + ")");
    fact(facts, "Ticket", "#" + node.ticket + " " + node.ticket_title);
    const body = document.getElementById("graph-panel-body");
    body.replaceChildren();
    if (task.result_summary) {
      body.append(paragraph("Result", "graph-panel-heading"), paragraph(task.result_summary, "graph-panel-text"));
    }
    if (task.error) body.append(paragraph("Error", "graph-panel-heading"), paragraph(task.error, "graph-panel-text graph-panel-error"));
    if (task.description) {
      body.append(paragraph("Description", "graph-panel-heading"), paragraph(shortened(task.description, 1500), "graph-panel-text"));
    }
    const from = details.edges.filter((edge) => edge.kind === "discovery" && edge.target === node.id);
    from.forEach(function (edge) {
      const type = CONFIG.types[edge.discovery_type] || edge.discovery_type;
      body.append(paragraph("Branched from #" + edge.source + " by a discovery (" + type + "): " + edge.description, "graph-panel-text"));
    });
    body.append(paragraph("Discoveries (" + details.discoveries.length + ")", "graph-panel-heading"));
    if (details.discoveries.length) {
      const list = document.createElement("ul");
      details.discoveries.forEach(function (discovery) {
        const item = document.createElement("li");
        const spawned = discovery.spawned.length ? " → " + discovery.spawned.map((id) => "#" + id).join(", ") : "";
        item.textContent =
          discovery.type_name + " (" + discovery.resolution_status + "): " + shortened(discovery.description, 400) + spawned;
        list.append(item);
      });
      body.append(list);
    } else {
      body.append(paragraph("None recorded.", "muted"));
    }
    const links = document.getElementById("graph-panel-links");
    const ticketUrl = CONFIG.ticketsUrl + node.ticket + "/";
    links.replaceChildren(link(ticketUrl + "#task-" + node.id, "Task on the ticket page"), link(ticketUrl, "Ticket page"));
    if (BOARD_SCOPE) links.append(link(ticketUrl + "graph/", "Ticket's graph"));
  }

  function openPanel(id, options) {
    const quiet = options && options.quiet;
    panelTask = id;
    if (!quiet) {
      const node = model.nodes.get(id);
      document.getElementById("graph-panel-title").textContent = node ? "#" + id + " " + node.title : "#" + id;
      document.getElementById("graph-panel-facts").replaceChildren();
      document.getElementById("graph-panel-body").replaceChildren(paragraph("Loading…", "muted"));
      document.getElementById("graph-panel-links").replaceChildren();
      panel.hidden = false;
      // On a phone the panel sits below the drawing.
      panel.scrollIntoView({ block: "nearest" });
      if (cy) {
        cy.nodes(":selected").unselect();
        cy.getElementById("task-" + id).select();
      }
    }
    fetch(CONFIG.taskUrl + id + "/", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((response) => (response.ok ? response.json() : Promise.reject(response.status)))
      .then(function (details) {
        if (panelTask === id) renderPanel(details);
      })
      .catch(function () {
        if (panelTask === id) {
          document.getElementById("graph-panel-body").replaceChildren(paragraph("Could not load this task.", "graph-panel-error"));
        }
      });
  }

  // ---- Start --------------------------------------------------------------------------------------

  function wireControls() {
    document.querySelector(".graph-controls").hidden = false;
    document.querySelector(".graph-controls").addEventListener("click", function (evt) {
      const button = evt.target.closest("button[data-action]");
      if (!button || !cy) return;
      const action = button.dataset.action;
      const centre = { x: canvas.clientWidth / 2, y: canvas.clientHeight / 2 };
      if (action === "zoom-in") cy.zoom({ level: cy.zoom() * 1.25, renderedPosition: centre });
      else if (action === "zoom-out") cy.zoom({ level: cy.zoom() / 1.25, renderedPosition: centre });
      else if (action === "fit") fit();
      else if (action === "tidy") {
        layoutAll();
        fit();
      }
    });
    document.getElementById("graph-show-anyway").addEventListener("click", function () {
      showAnyway = true;
      redraw({ restore: false });
    });
    document.getElementById("graph-panel-close").addEventListener("click", closePanel);
    document.addEventListener("keydown", function (evt) {
      if (evt.key === "Escape" && !panel.hidden) closePanel();
    });
    form.addEventListener("change", function () {
      redraw({ restore: false });
      showFilterCount();
    });
    // The list's "Show in graph" buttons: select the task, bring it into view, open its panel.
    document.body.addEventListener("click", function (evt) {
      const button = evt.target.closest("button.show-in-graph");
      if (!button || !cy) return;
      const id = Number(button.dataset.task);
      const element = cy.getElementById("task-" + id);
      if (element.nonempty()) cy.center(element);
      openPanel(id);
      panelOpener = button;
      panel.focus();
    });
    showListButtons(document);
    document.body.addEventListener("htmx:afterSwap", function () {
      showListButtons(document.getElementById("graph-list") || document);
    });
  }

  // The filters' summary says how many boxes are ticked, so that folded filters still say they filter.
  function showFilterCount() {
    const ticked = form.querySelectorAll("input:checked").length;
    const count = document.getElementById("graph-filter-count");
    count.textContent = ticked + " ticked";
    count.hidden = ticked === 0;
  }

  // On a phone the filters and the legend would push the drawing below the fold: they start folded, unless
  // the page was opened filtered.
  function foldOnAPhone() {
    if (!window.matchMedia("(max-width: 44rem)").matches) return;
    if (!form.querySelector("input:checked")) document.getElementById("graph-filters-box").open = false;
    document.getElementById("graph-legend").open = false;
  }

  function showListButtons(root) {
    root.querySelectorAll("button.show-in-graph").forEach(function (button) {
      button.hidden = false;
    });
  }

  function start() {
    wireControls();
    showFilterCount();
    foldOnAPhone();
    window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", applyTheme);
    const status = document.getElementById("live-status");
    status.hidden = false;
    fetch(CONFIG.dataUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((response) => (response.ok ? response.json() : Promise.reject(response.status)))
      .then(function (graph) {
        metrics.dataLoaded = performance.now();
        graph.nodes.forEach((node) => model.nodes.set(node.id, node));
        graph.edges.forEach(storeEdge);
        createCy();
        redraw({ restore: true });
        cy.one("render", function () {
          metrics.firstRender = performance.now();
        });
        if (cy.elements().empty()) metrics.firstRender = performance.now();
        OmoiLive.connect({
          url: CONFIG.socketPath,
          lastEventId: graph.last_event_id,
          onEvent: handle,
          statusElement: status,
        });
      })
      .catch(function () {
        document.getElementById("graph-notice-text").textContent =
          "Could not load the graph: reload the page to try again. The list below still shows it.";
        document.getElementById("graph-show-anyway").hidden = true;
        notice.hidden = false;
      });
  }

  window.OmoiGraph = {
    metrics: metrics,
    get cy() {
      return cy;
    },
    model: model,
  };
  start();
})();
