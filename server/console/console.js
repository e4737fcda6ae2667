// The siamese-search console: a page over the REST API, as any client calls it.
// Every text from the server is inserted with textContent (never as HTML), so an
// example's text cannot run script; the page's Content-Security-Policy allows only
// this file's script anyway. The admin token lives in this tab's sessionStorage.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "siamese-console-token";
const state = { collection: "", map: null, query: null };
// a neighbour's text shown whole up to this many characters; a longer one (a stored
// text may hold megabytes) is cut there, with a button that shows the rest
const SHOWN_CHARACTERS = 600;

function base() {
  const name = state.collection;
  return name ? `/v1/collections/${encodeURIComponent(name)}` : "/v1";
}

async function api(method, path, body) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    return { ok: false, status: 0, body: { message: `the server did not answer (${error})` } };
  }
  let answer = null;
  try {
    answer = await response.json();
  } catch (error) {
    answer = { message: `HTTP ${response.status}` };
  }
  return { ok: response.ok, status: response.status, body: answer };
}

function element(tag, text, className) {
  const made = document.createElement(tag);
  if (text !== undefined && text !== null) made.textContent = String(text);
  if (className) made.className = className;
  return made;
}

function say(message, isError) {
  const status = $("status");
  status.textContent = message;
  status.classList.toggle("error", Boolean(isError));
}

function problem(result) {
  const message = (result.body && result.body.message) || `HTTP ${result.status}`;
  return `${result.status || "no answer"}: ${message}`;
}

// A label's colour: the same label gets the same colour everywhere.
function colour(label) {
  let hash = 2166136261; // FNV-1a, then the golden angle: near labels get far hues
  for (const char of label || "") hash = Math.imul(hash ^ char.codePointAt(0), 16777619) >>> 0;
  return label ? `hsl(${Math.round((hash % 1000) * 137.508) % 360} 70% 42%)` : "hsl(0 0% 55%)";
}

// ---- collections --------------------------------------------------------------------

async function loadCollections() {
  const result = await api("GET", "/v1/collections");
  const select = $("collection");
  select.replaceChildren();
  if (!result.ok) {
    const hint = result.status === 401 ? "; enter the server's token above" : "";
    say(`cannot list collections (${problem(result)})${hint}`, true);
    return;
  }
  say("");
  for (const info of result.body.collections) {
    const option = element("option", info.isDefault ? `${info.name} (default)` : info.name);
    option.value = info.isDefault ? "" : info.name;
    if (info.health !== "SERVING") option.textContent += " - not serving";
    select.append(option);
  }
  select.value = state.collection;
}

// ---- search and predict ---------------------------------------------------------------

function searchSettings() {
  const body = { text: $("query").value, k: Number($("k").value) || 10 };
  const minScore = $("min-score").value.trim();
  if (minScore !== "") body.minScore = Number(minScore);
  return body;
}

async function search(event) {
  event.preventDefault();
  const text = $("query").value;
  if (!text.trim()) return;
  const settings = searchSettings();
  const labels = $("label-filter").value.split(",").map((s) => s.trim()).filter(Boolean);
  const searched = { ...settings, labels };
  say("searching...");
  const [found, predicted, embedded] = await Promise.all([
    api("POST", `${base()}/search`, searched),
    api("POST", `${base()}/predict`, settings),
    api("POST", `${base()}/embed`, { texts: [text] }),
  ]);
  if (!found.ok) {
    say(`search refused (${problem(found)})`, true);
    return;
  }
  renderNeighbors(found.body.neighbors);
  if (predicted.ok) renderPrediction(predicted.body);
  else renderPredictionError(predicted);
  state.query = embedded.ok ? embedded.body.embeddings[0].values : null;
  drawMap();
  say(`${found.body.neighbors.length} neighbours from version ${found.body.indexVersion}`);
}

function renderNeighbors(neighbors) {
  const list = $("neighbors");
  list.replaceChildren();
  $("neighbors-title").hidden = false;
  for (const hit of neighbors) {
    const item = element("li", undefined, "neighbor");
    item.dataset.testid = "neighbor";
    const head = element("div", undefined, "neighbor-head");
    const bar = element("span", undefined, "bar");
    const fill = element("span", undefined, "fill");
    fill.style.width = `${Math.max(0, Math.min(1, hit.score)) * 100}%`;
    bar.append(fill);
    bar.setAttribute("aria-hidden", "true");
    const score = element("span", hit.score.toFixed(3), "score");
    score.dataset.testid = "score";
    const label = element("span", hit.label || "(no label)", "label-chip");
    label.style.borderColor = colour(hit.label);
    const id = element("span", `id ${hit.id}`, "id");
    head.append(bar, score, label, id);
    item.append(head, ...neighborText(hit.text));
    if (hit.metadata && Object.keys(hit.metadata).length) {
      item.append(element("p", JSON.stringify(hit.metadata), "metadata"));
    }
    list.append(item);
  }
  if (!neighbors.length) list.append(element("li", "No neighbour passes these settings.", "note"));
}

function neighborText(full) {
  const text = element("p", full, "text");
  text.dataset.testid = "neighbor-text";
  if (full.length <= SHOWN_CHARACTERS) return [text];
  let cut = full.slice(0, SHOWN_CHARACTERS);
  if (/[\uD800-\uDBFF]$/.test(cut)) cut = cut.slice(0, -1); // not half a character
  text.textContent = `${cut}…`;
  const count = codePoints(full).toLocaleString("en");
  const more = element("button", `Show all ${count} characters`, "more");
  more.type = "button";
  more.dataset.testid = "show-all";
  more.addEventListener("click", () => {
    text.textContent = full;
    more.remove();
  });
  return [text, more];
}

function codePoints(text) {
  // characters as a person (and the server) counts them: an emoji is one, not two
  let count = text.length;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit >= 0xd800 && unit <= 0xdbff) count--;
  }
  return count;
}

function renderPrediction(answer) {
  $("prediction").hidden = false;
  $("predicted-label").textContent = answer.abstained ? "none of these" : answer.label;
  $("confidence").textContent = answer.confidence.toFixed(2);
  let why = "";
  if (answer.abstained) {
    why = `Abstained: ${answer.abstentionReason}`;
    if (answer.votedLabel) why += ` (the vote leaned to "${answer.votedLabel}")`;
  } else {
    why = `The ${answer.neighbors.length} nearest labelled neighbours voted "${answer.label}".`;
  }
  $("why").textContent = why;
  const body = $("votes").tBodies[0];
  body.replaceChildren();
  for (const vote of answer.scores) {
    const row = element("tr");
    row.append(element("td", vote.label), element("td", vote.score.toFixed(2)));
    body.append(row);
  }
}

function renderPredictionError(result) {
  $("prediction").hidden = false;
  $("predicted-label").textContent = "-";
  $("confidence").textContent = "-";
  $("why").textContent = `No prediction (${problem(result)})`;
  $("votes").tBodies[0].replaceChildren();
}

// ---- the index ------------------------------------------------------------------------

async function loadIndex() {
  const result = await api("GET", `${base()}/info`);
  const facts = $("facts");
  facts.replaceChildren();
  const body = $("labels-table").tBodies[0];
  body.replaceChildren();
  if (!result.ok) {
    $("errors").textContent = `Index not readable (${problem(result)})`;
    return;
  }
  const info = result.body;
  const shown = [
    ["Examples", info.count],
    ["Version", info.indexVersion],
    ["Index type", info.indexType],
    ["Model", `${info.modelDirectory} (${info.modelFingerprint})`],
    ["Loaded at", info.loadedAt],
    ["Pending writes", info.pendingWrites],
  ];
  for (const [name, value] of shown) {
    facts.append(element("dt", name), element("dd", value));
  }
  const byCount = [...info.labels].sort(
    (a, b) => Number(b.count) - Number(a.count) || a.label.localeCompare(b.label),
  );
  for (const entry of byCount) {
    const row = element("tr");
    const name = element("td", entry.label);
    name.style.borderLeft = `6px solid ${colour(entry.label)}`;
    row.append(name, element("td", entry.count));
    body.append(row);
  }
  $("versions").textContent = (info.retainedVersions || []).join(", ") || "-";
  const errors = [];
  if (info.lastReloadError) errors.push(`Last reload failed (${info.lastReloadErrorAt}): ${info.lastReloadError}`);
  if (info.lastCommitError) errors.push(`Last commit failed (${info.lastCommitErrorAt}): ${info.lastCommitError}`);
  $("errors").textContent = errors.join(" ");
}

// ---- the map --------------------------------------------------------------------------

async function loadMap() {
  const result = await api("GET", `${base()}/map`);
  if (!result.ok) {
    state.map = null;
    $("map-note").textContent = `No map (${problem(result)})`;
    drawMap();
    return;
  }
  state.map = result.body;
  $("map-note").textContent =
    `${result.body.sampled} of ${result.body.count} examples of version ` +
    `${result.body.indexVersion}, placed by their two principal components; ` +
    "a search puts its text on the map as a ring.";
  const legend = $("legend");
  legend.replaceChildren();
  for (const label of [...new Set(result.body.points.map((p) => p.label))].sort()) {
    const item = element("li", label || "(no label)");
    item.style.borderLeft = `12px solid ${colour(label)}`;
    legend.append(item);
  }
  drawMap();
}

function mapFrame(canvas, points) {
  const xs = points.map((p) => p.x);
  const ys = points.map((p) => p.y);
  const minX = Math.min(...xs), maxX = Math.max(...xs);
  const minY = Math.min(...ys), maxY = Math.max(...ys);
  const pad = 14;
  const spanX = maxX - minX || 1, spanY = maxY - minY || 1;
  return (x, y) => [
    pad + ((x - minX) / spanX) * (canvas.width - 2 * pad),
    canvas.height - pad - ((y - minY) / spanY) * (canvas.height - 2 * pad),
  ];
}

function project(vector) {
  const map = state.map;
  let x = 0, y = 0;
  for (let i = 0; i < vector.length; i++) {
    const centred = vector[i] - map.mean[i];
    x += centred * map.axisX[i];
    y += centred * map.axisY[i];
  }
  return { x, y };
}

function drawMap() {
  const canvas = $("map");
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  const map = state.map;
  if (!map || !map.points.length) return;
  const query = state.query ? project(state.query) : null;
  const place = mapFrame(canvas, query ? [...map.points, query] : map.points);
  for (const point of map.points) {
    const [x, y] = place(point.x, point.y);
    context.fillStyle = colour(point.label);
    context.beginPath();
    context.arc(x, y, 3, 0, 2 * Math.PI);
    context.fill();
  }
  if (query) {
    const [x, y] = place(query.x, query.y);
    context.strokeStyle = "#000";
    context.lineWidth = 3;
    context.beginPath();
    context.arc(x, y, 8, 0, 2 * Math.PI);
    context.stroke();
  }
  state.place = place;
}

function hover(event) {
  const map = state.map;
  const tip = $("map-tip");
  if (!map || !state.place) return;
  const canvas = $("map");
  const box = canvas.getBoundingClientRect();
  const scale = canvas.width / box.width;
  const mx = (event.clientX - box.left) * scale;
  const my = (event.clientY - box.top) * scale;
  let best = null, bestDistance = 64;
  for (const point of map.points) {
    const [x, y] = state.place(point.x, point.y);
    const distance = (x - mx) ** 2 + (y - my) ** 2;
    if (distance < bestDistance) [best, bestDistance] = [point, distance];
  }
  if (!best) {
    tip.hidden = true;
    return;
  }
  tip.textContent = `${best.label || "(no label)"} - ${best.text}`;
  tip.hidden = false;
}

// ---- writes ---------------------------------------------------------------------------

function showToken() {
  const held = sessionStorage.getItem(TOKEN_KEY);
  $("token").value = "";
  $("token").placeholder = held ? "a token is set for this tab" : "none";
}

async function write(event) {
  event.preventDefault();
  const example = { text: $("add-text").value, label: $("add-label").value.trim() };
  const id = $("add-id").value.trim();
  if (id) example.id = id;
  const result = await api("POST", `${base()}/examples:upsert`, { examples: [example], wait: true });
  if (result.ok) {
    $("write-result").textContent = `Added ${result.body.ids.join(", ")} (version ${result.body.indexVersion}).`;
    $("add-text").value = "";
    await Promise.all([loadIndex(), loadMap()]);
  } else {
    $("write-result").textContent = `Refused (${problem(result)})`;
  }
}

async function remove(event) {
  event.preventDefault();
  const id = $("delete-id").value.trim();
  const result = await api("POST", `${base()}/examples:delete`, { ids: [id], wait: true });
  if (result.ok) {
    $("write-result").textContent = `Deleted ${id} (version ${result.body.indexVersion}).`;
    await Promise.all([loadIndex(), loadMap()]);
  } else {
    $("write-result").textContent = `Refused (${problem(result)})`;
  }
}

// ---- wiring ---------------------------------------------------------------------------

async function refresh() {
  state.query = null;
  await Promise.all([loadIndex(), loadMap()]);
}

document.addEventListener("DOMContentLoaded", async () => {
  $("search-form").addEventListener("submit", search);
  $("add-form").addEventListener("submit", write);
  $("delete-form").addEventListener("submit", remove);
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    showToken();
    loadCollections().then(refresh);
  });
  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showToken();
  });
  $("collection").addEventListener("change", (event) => {
    state.collection = event.target.value;
    refresh();
  });
  $("map").addEventListener("mousemove", hover);
  $("map").addEventListener("mouseleave", () => ($("map-tip").hidden = true));
  showToken();
  await loadCollections();
  await refresh();
  document.body.dataset.ready = "true";
  $("query").focus();
});
