// The cartflow inspector: reads the JSON views under /inspector/api/ with the bearer token the
// user gives, and redraws every few seconds. No library, no build step; every value from the
// server goes into the page as text, never as markup.
"use strict";

const REFRESH_MS = 2000;
const TOKEN_KEY = "cartflow-inspector-token";
const SVG = "http://www.w3.org/2000/svg";

const page = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  table: null,
  session: null,
  sessionFilter: new URLSearchParams(),
  cartFilter: new URLSearchParams(),
  olderThan: "",
  timer: null,
};

// Reads `#token=...&session=...` once: the token moves to session storage and out of the
// address bar, the rest selects what the page shows.
function readHash() {
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("token")) {
    page.token = hash.get("token");
    sessionStorage.setItem(TOKEN_KEY, page.token);
    hash.delete("token");
    history.replaceState(null, "", hash.toString() ? "#" + hash : location.pathname);
  }
  page.session = hash.get("session");
  for (const name of ["state", "store", "failed", "processing_over"]) {
    if (hash.get(name)) page.sessionFilter.set(name, hash.get(name));
  }
  if (hash.get("status")) page.cartFilter.set("status", hash.get("status"));
  page.olderThan = hash.get("older_than") || "";
}

function setStatus(state, text) {
  const status = document.getElementById("status");
  status.dataset.state = state;
  status.textContent = text;
}

class ApiError extends Error {}

async function api(path) {
  const response = await fetch(path, {
    headers: { Authorization: "Bearer " + page.token, Accept: "application/json" },
    cache: "no-store",
  });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const first = Array.isArray(body) ? body[0] : null;
    const what = first ? first.errorCode + ": " + first.message : "HTTP " + response.status;
    throw new ApiError(what);
  }
  return body;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, String(value));
    else node[key] = value;
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function sessionLink(id) {
  return el("a", { href: "#session=" + encodeURIComponent(id), class: "id" }, id);
}

function time(iso) {
  return iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("Z", "") : "";
}

// ---- the transition table ----

// The rows a cluster is drawn in: the phases of one step side by side, every other node on a
// row of its own, in the order the server gives them.
function gridRows(cluster) {
  const groupOf = new Map();
  cluster.rows.forEach((row) => row.forEach((id) => groupOf.set(id, row)));
  const placed = new Set();
  const rows = [];
  for (const node of cluster.nodes) {
    if (placed.has(node.id)) continue;
    const row = groupOf.get(node.id) || [node.id];
    row.forEach((id) => placed.add(id));
    rows.push(row);
  }
  return rows;
}

function drawCluster(cluster) {
  const byId = new Map(cluster.nodes.map((n) => [n.id, n]));
  const rows = gridRows(cluster);
  const columns = Math.max(...rows.map((r) => r.length));
  const grid = el("div", { class: "grid" });
  grid.style.setProperty("--columns", columns);
  rows.forEach((row, r) => {
    row.forEach((id, c) => {
      const node = byId.get(id);
      const box = el(
        "div",
        {
          class: node.point ? "node point" : "node",
          "data-node": id,
          "data-label": node.label,
          title: node.label,
        },
        el("span", { class: "label" }, node.label),
        node.point ? null : el("span", { class: "count" }, "0"),
      );
      box.style.gridRow = String(r + 1);
      box.style.gridColumn = String(c + 1);
      if (!node.point) box.addEventListener("click", () => pickNode(cluster.key, node));
      grid.append(box);
    });
  });
  const svg = document.createElementNS(SVG, "svg");
  const section = el("div", { class: "cluster " + cluster.key, "data-cluster": cluster.key },
    el("h3", {}, cluster.title), grid);
  section.prepend(svg);
  return section;
}

// Where the line from the centre of `a` towards the centre of `b` leaves the box `b`.
function boxEdge(a, b) {
  const dx = a.x - b.x;
  const dy = a.y - b.y;
  if (dx === 0 && dy === 0) return b;
  const t = Math.min(b.w / 2 / Math.abs(dx || 1e-9), b.h / 2 / Math.abs(dy || 1e-9));
  return { x: b.x + dx * Math.min(t, 1), y: b.y + dy * Math.min(t, 1) };
}

function drawEdges(section, cluster) {
  const svg = section.querySelector("svg");
  svg.replaceChildren();
  const origin = section.getBoundingClientRect();
  const boxes = new Map();
  section.querySelectorAll(".node").forEach((node) => {
    const r = node.getBoundingClientRect();
    boxes.set(node.dataset.node, {
      x: r.left - origin.left + r.width / 2,
      y: r.top - origin.top + r.height / 2,
      w: r.width + 6,
      h: r.height + 6,
    });
  });
  const defs = document.createElementNS(SVG, "defs");
  defs.innerHTML =
    '<marker id="arrow-' + cluster.key + '" viewBox="0 0 8 8" refX="8" refY="4" ' +
    'markerWidth="6" markerHeight="6" orient="auto-start-reverse">' +
    '<path d="M0,0 L8,4 L0,8 z" fill="#9aa6b5"></path></marker>';
  svg.append(defs);
  for (const edge of cluster.edges) {
    const from = boxes.get(edge.from);
    const to = boxes.get(edge.to);
    if (!from || !to || edge.from === edge.to) continue;
    const start = boxEdge(to, from);
    const end = boxEdge(from, to);
    // Bend each edge to its right, so that a pair of opposite edges does not overlap.
    const mx = (start.x + end.x) / 2 + (end.y - start.y) * 0.12;
    const my = (start.y + end.y) / 2 - (end.x - start.x) * 0.12;
    const path = document.createElementNS(SVG, "path");
    path.setAttribute("d", `M${start.x},${start.y} Q${mx},${my} ${end.x},${end.y}`);
    path.setAttribute("marker-end", `url(#arrow-${cluster.key})`);
    path.dataset.from = edge.from;
    path.dataset.to = edge.to;
    path.classList.toggle("fail", edge.fail);
    path.classList.toggle("collapsed", edge.collapsed);
    const title = document.createElementNS(SVG, "title");
    title.textContent = edge.label;
    path.append(title);
    svg.append(path);
  }
}

function drawTable(table) {
  document.getElementById("template").textContent = "template " + table.template;
  const graph = document.getElementById("graph");
  graph.replaceChildren(...table.clusters.map(drawCluster));
  redrawEdges();
}

function redrawEdges() {
  if (!page.table) return;
  for (const cluster of page.table.clusters) {
    const section = document.querySelector(`.cluster[data-cluster="${cluster.key}"]`);
    if (section) drawEdges(section, cluster);
  }
}

function showCounts(reading) {
  document.querySelectorAll(".node:not(.point)").forEach((node) => {
    const n = reading.counts[node.dataset.node] || 0;
    node.dataset.count = n;
    node.querySelector(".count").textContent = n;
  });
  document.getElementById("scan").textContent =
    `${reading.carts} carts read at ${time(reading.at)}` +
    (reading.truncated ? " (the first ones only: more carts than one reading covers)" : "");
}

function pickNode(clusterKey, node) {
  document.querySelectorAll(".node.selected").forEach((n) => n.classList.remove("selected"));
  document.querySelectorAll(".cluster svg path.lit").forEach((p) => p.classList.remove("lit"));
  const box = document.querySelector(`.node[data-node="${node.id}"]`);
  box.classList.add("selected");
  document.querySelectorAll(`.cluster svg path[data-from="${node.id}"], .cluster svg path[data-to="${node.id}"]`)
    .forEach((p) => p.classList.add("lit"));
  if (clusterKey === "session") {
    page.sessionFilter.set("state", node.label);
    document.querySelector('#session-filters [name="state"]').value = node.label;
    refresh();
  } else if (clusterKey === "cart") {
    page.cartFilter.set("status", node.label);
    document.querySelector('#cart-filters [name="status"]').value = node.label;
    refresh();
  }
}

// ---- lists ----

function fillTable(id, rows, columns, empty) {
  const body = document.querySelector(`#${id} tbody`);
  if (rows.length === 0) {
    body.replaceChildren(el("tr", {}, el("td", { class: "empty", colSpan: columns }, empty)));
  } else {
    body.replaceChildren(...rows);
  }
}

function showSessions(answer) {
  document.getElementById("sessions-matched").textContent =
    `${answer.matched} matched` + (answer.truncated ? ", of the first carts only" : "");
  const rows = answer.sessions.map((s) =>
    el("tr", { "data-session": s.id, "data-node": s.node },
      el("td", {}, sessionLink(s.id)),
      el("td", { class: "id" }, s.cartId),
      el("td", { class: "id" }, s.storeId),
      el("td", { class: s.failed ? "bad" : null }, s.node),
      el("td", { class: s.isProcessing ? "busy" : null },
        s.isProcessing ? (s.processingSeconds === null ? "yes" : `${s.processingSeconds} s`) : ""),
      el("td", {}, s.operation ? `${s.operation.name} (${s.operation.status})` : "")));
  fillTable("sessions", rows, 6, "no session matches");
}

function showCarts(answer) {
  document.getElementById("carts-matched").textContent =
    `${answer.matched} matched` + (answer.truncated ? ", of the first carts only" : "");
  const rows = answer.carts.map((c) =>
    el("tr", { "data-cart": c.id, "data-status": c.status },
      el("td", { class: "id" }, c.id),
      el("td", { class: "id" }, c.storeId),
      el("td", { class: "id" }, c.ownerId),
      el("td", {}, c.status),
      el("td", {}, c.sessions),
      el("td", {}, c.latestSession ? [sessionLink(c.latestSession.id), " ", c.latestSession.node] : "")));
  fillTable("carts", rows, 6, "no cart matches");
}

function outputsOf(op) {
  return op.validationOutputs.map((o) => `${o.Level}: ${o.Message}`).join("; ");
}

function showStuck(answer) {
  document.getElementById("stuck-matched").textContent = `${answer.matched}`;
  const rows = answer.operations.map((op) =>
    el("tr", { "data-operation": op.id, "data-status": op.status },
      el("td", { class: "id" }, op.id),
      el("td", {}, op.name),
      el("td", {}, sessionLink(op.sessionId)),
      el("td", { class: "busy" }, op.status),
      el("td", {}, `${op.attempt} of ${op.retryLimit + 1}`),
      el("td", { class: op.leaseEnded ? "bad" : null },
        time(op.leaseEndsAt) + (op.leaseEnded ? " (ended)" : "")),
      el("td", {}, outputsOf(op))));
  fillTable("stuck", rows, 7, "no operation is stuck");
}

function showFailed(answer) {
  document.getElementById("failed-matched").textContent = `${answer.matched}`;
  const rows = answer.operations.map((op) =>
    el("tr", { "data-operation": op.id, "data-name": op.name, "data-status": op.status },
      el("td", { class: "id" }, op.id),
      el("td", {}, op.name),
      el("td", {}, sessionLink(op.sessionId)),
      el("td", { class: "bad" }, op.error || ""),
      el("td", {}, `${op.attempt} of ${op.retryLimit + 1}`),
      el("td", {}, time(op.finishedAt)),
      el("td", {}, outputsOf(op))));
  fillTable("failed", rows, 7, "no operation failed");
}

// ---- one session ----

function showSession(view) {
  document.getElementById("session-panel").hidden = false;
  document.getElementById("session-id").textContent = view.session.Id;
  document.getElementById("session-node").textContent = view.node;
  const moves = view.timeline.map((m, i) =>
    el("li", { "data-index": i, "data-event": m.event, "data-from": m.from, "data-to": m.to,
      "data-machine": m.machine },
      el("time", {}, time(m.at)),
      el("span", { class: "id" }, m.actor || "worker"), " ",
      el("span", { class: "event" }, m.event), ": ",
      `${m.machine} ${m.from} → ${m.to}`));
  document.getElementById("timeline").replaceChildren(...moves);
  const facts = [
    ["Cart", view.cart ? `${view.cart.Id} (${view.cart.Status})` : "gone"],
    ["Session State", view.session.State || "(empty)"],
    ["Processing", String(view.session.IsProcessing)],
    ["Error", String(view.session.IsError)],
    ["Archived", String(view.session.IsArchived)],
    ["Total", view.cart && view.cart.GrandTotalAmount != null ? String(view.cart.GrandTotalAmount) : ""],
    ["Operations", view.operations.map((o) => `${o.Name || o.name}: ${o.Status || o.status}`).join(", ")],
    ["Messages", view.validationOutputs.map((o) => `${o.Level}: ${o.Message}`).join("; ")],
    ["Order", view.order ? `${view.order.Id} (${view.order.Status})` : ""],
  ];
  document.getElementById("session-records")
    .replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

// ---- refreshing ----

async function refresh() {
  if (!page.token) {
    setStatus("idle", "give a token to connect");
    return;
  }
  try {
    if (!page.table) {
      page.table = await api("/inspector/api/table");
      drawTable(page.table);
    }
    const stuck = new URLSearchParams({ kind: "stuck" });
    if (page.olderThan) stuck.set("older_than", page.olderThan);
    const [counts, carts, sessions, stuckOps, failedOps] = await Promise.all([
      api("/inspector/api/counts"),
      api("/inspector/api/carts?" + page.cartFilter),
      api("/inspector/api/sessions?" + page.sessionFilter),
      api("/inspector/api/operations?" + stuck),
      api("/inspector/api/operations?kind=failed"),
    ]);
    showCounts(counts);
    showCarts(carts);
    showSessions(sessions);
    showStuck(stuckOps);
    showFailed(failedOps);
    if (page.session) {
      showSession(await api("/inspector/api/sessions/" + encodeURIComponent(page.session)));
    }
    setStatus("live", "live, every " + REFRESH_MS / 1000 + " s");
  } catch (e) {
    setStatus("error", e instanceof ApiError ? e.message : "cannot reach the server: " + e);
  }
}

// Wires the filter form `formId` to `page[key]`: its text inputs `texts` and checkboxes
// `checks` (sent as `true`).
function filterForm(formId, key, texts, checks) {
  const form = document.getElementById(formId);
  for (const [name, value] of page[key]) {
    const input = form.elements[name];
    if (input && input.type === "checkbox") input.checked = value === "true";
    else if (input) input.value = value;
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    page[key] = new URLSearchParams();
    for (const name of texts) {
      const value = form.elements[name].value.trim();
      if (value) page[key].set(name, value);
    }
    for (const name of checks) {
      if (form.elements[name].checked) page[key].set(name, "true");
    }
    refresh();
  });
  form.addEventListener("reset", () => {
    page[key] = new URLSearchParams();
    setTimeout(refresh);
  });
}

function start() {
  readHash();
  document.getElementById("login").addEventListener("submit", (event) => {
    event.preventDefault();
    page.token = document.getElementById("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, page.token);
    page.table = null;
    refresh();
  });
  filterForm("session-filters", "sessionFilter", ["state", "store", "processing_over"], ["failed"]);
  filterForm("cart-filters", "cartFilter", ["status", "store"], []);
  document.getElementById("stuck-filter").addEventListener("submit", (event) => {
    event.preventDefault();
    page.olderThan = event.target.elements.older_than.value.trim();
    refresh();
  });
  window.addEventListener("hashchange", () => {
    readHash();
    refresh();
  });
  window.addEventListener("resize", redrawEdges);
  refresh();
  page.timer = setInterval(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", start);
