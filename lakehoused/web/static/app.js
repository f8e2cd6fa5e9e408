// lakehoused's page: a few views over the JSON API, no framework, no build step.
// Routes live in the URL's hash (#/, #/datasets/NAME, #/sql?q=..., #/events?q=...), so any
// view -- a query above all -- is a link that can be shared.
"use strict";

const FACTS = JSON.parse(document.getElementById("facts").textContent);
const TOKEN_KEY = "lakehoused.token";
const POLL_MS = 2000;
const EVENTS_PAGE = 50;
const DOWNLOADS = { csv: "csv", ndjson: "ndjson", arrow: "arrow" };
const NUMERIC = /^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|FLOAT|REAL|DOUBLE|DECIMAL)/;

const state = { seq: null, datasets: [], view: null };

// -- DOM --------------------------------------------------------------------------------

/** An element with attributes (on* as listeners) and children (strings become text). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const $ = (selector, root = document) => root.querySelector(selector);

/** Replace an element's children, skipping the empty ones. */
function put(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i += 1; }
  return `${i ? v.toFixed(v < 10 ? 1 : 0) : v} ${units[i]}`;
}

const number = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

function ago(at) {
  if (!at) return "–";
  const s = (Date.now() - Date.parse(at)) / 1000;
  if (s < 1) return "just now";
  if (s < 60) return `${Math.floor(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return at.slice(0, 10);
}

const when = (at) => h("span", { class: "when", title: at || "" }, ago(at));

function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function badge(type) {
  const kind = type.split(".").pop();
  return h("span", { class: `badge ${kind}` }, type);
}

function stat(label, value, small = false) {
  return h("div", { class: "stat" },
    h("div", { class: "label" }, label),
    h("div", { class: small ? "value small" : "value" }, value));
}

function panel(title, body, extra = null, attrs = {}) {
  return h("section", { class: "panel", ...attrs },
    h("header", {}, h("h2", {}, title), extra),
    body);
}

function table(head, rows, attrs = {}) {
  return h("div", { class: "table-wrap" },
    h("table", attrs,
      h("thead", {}, h("tr", {}, head.map((c) => (c instanceof Node ? c : h("th", {}, c))))),
      h("tbody", {}, rows)));
}

function emptyState(...children) {
  return h("div", { class: "empty-state" }, ...children);
}

function apiError(error) {
  const status = error.status ? `HTTP ${error.status} ` : "";
  return h("div", { class: "api-error", role: "alert", id: "api-error" },
    h("span", { class: "code" }, `${status}${error.code || "error"}`),
    h("p", {}, error.message));
}

// -- the API, with the token asked for once -------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let tokenAsked = null; // one dialog for every request that met a 401 meanwhile

function askToken(refused) {
  if (tokenAsked) return tokenAsked;
  const dialog = $("#token-dialog");
  const error = $("#token-error");
  error.hidden = !refused;
  error.textContent = refused ? "That token was refused; check it and try again." : "";
  $("#token-input").value = "";
  tokenAsked = new Promise((resolve) => {
    const submitted = () => {
      sessionStorage.setItem(TOKEN_KEY, $("#token-input").value.trim());
      dialog.removeEventListener("close", submitted);
      tokenAsked = null;
      $("#token-button").hidden = false;
      resolve();
    };
    dialog.addEventListener("close", submitted);
  });
  dialog.showModal();
  $("#token-input").focus();
  return tokenAsked;
}

/** fetch() with the session's token; a 401 asks for the token and tries again. */
async function api(path, options = {}) {
  for (;;) {
    const headers = new Headers(options.headers || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.set("Authorization", `Bearer ${token}`);
    const response = await fetch(path, { ...options, headers });
    if (response.status !== 401) return response;
    if (token) sessionStorage.removeItem(TOKEN_KEY);
    await askToken(Boolean(token));
  }
}

async function failure(response) {
  let body = null;
  try { body = await response.json(); } catch { /* not JSON: say what we know */ }
  const err = (body && body.error) || {};
  return new ApiError(response.status, err.code || "http", err.message || response.statusText);
}

async function getJSON(path, options) {
  const response = await api(path, options);
  if (!response.ok) throw await failure(response);
  return response.json();
}

const query = (params) => {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  const text = q.toString();
  return text ? `?${text}` : "";
};

// -- the header and the sidebar, kept current ----------------------------------------------

async function poll() {
  let health = null;
  try {
    const response = await fetch("/health");
    health = await response.json();
    const status = health.status || (health.error && "down") || "down";
    const pill = $("#health-pill");
    pill.className = `pill ${status}`;
    pill.textContent = status === "down" ? "loading" : status;
    const problems = (health.problems || []).map((p) => `${p.part}: ${p.reason}`).join("\n");
    pill.title = problems || `GET /health: ${status}`;
  } catch {
    $("#health-pill").className = "pill down";
    $("#health-pill").textContent = "unreachable";
  }
  if (!health || health.catalog_seq === undefined) return;
  $("#seq-label").textContent = `seq ${health.catalog_seq}`;
  if (health.catalog_seq !== state.seq) {
    const first = state.seq === null;
    state.seq = health.catalog_seq;
    await loadDatasets();
    if (!first && state.view && state.view.onSeq) state.view.onSeq();
  }
  try {
    const status = await getJSON("/status");
    const n = status.files_pending;
    $("#pending-label").textContent = n ? `${number(n)} pending` : "inbox idle";
    if (state.view && state.view.onStatus) state.view.onStatus(status);
  } catch { /* shown by the view that needs it */ }
}

async function loadDatasets() {
  try {
    const body = await getJSON("/datasets");
    state.datasets = body.datasets;
  } catch {
    state.datasets = [];
  }
  renderSidebar();
}

function renderSidebar() {
  const filter = $("#dataset-filter").value.trim().toLowerCase();
  const current = location.hash.startsWith("#/datasets/")
    ? decodeURIComponent(location.hash.slice(11).split("?")[0]) : null;
  const shown = state.datasets.filter((d) => d.name.includes(filter));
  $("#dataset-count").textContent = state.datasets.length ? String(state.datasets.length) : "";
  const list = $("#dataset-list");
  list.replaceChildren(...shown.map((d) => h("li", {},
    h("a", { href: `#/datasets/${encodeURIComponent(d.name)}`, class: d.name === current ? "active" : "" },
      h("span", {}, d.name), h("span", { class: "rows" }, number(d.rows))))));
  if (!shown.length) {
    list.append(h("li", { class: "empty" }, state.datasets.length ? "no match" : "none yet"));
  }
}

// -- views -------------------------------------------------------------------------------

const views = {
  overview: overviewView,
  dataset: datasetView,
  sql: sqlView,
  events: eventsView,
};

function parseRoute() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, search] = hash.split(/\?(.*)/s);
  const params = new URLSearchParams(search || "");
  if (path.startsWith("datasets/")) return { name: "dataset", arg: decodeURIComponent(path.slice(9)), params };
  if (path === "sql" || path === "events") return { name: path, params };
  return { name: "overview", params };
}

async function route() {
  const r = parseRoute();
  for (const a of document.querySelectorAll(".tabs a")) {
    a.classList.toggle("active", a.dataset.view === r.name);
  }
  renderSidebar();
  const main = $("#view");
  main.replaceChildren();
  state.view = {};
  await views[r.name](main, r, state.view);
}

async function overviewView(main, r, view) {
  const rejected = h("div", { id: "rejected" });
  const backlog = h("div", { class: "body", id: "backlog" }, h("p", { class: "muted" }, "…"));
  const activity = h("div", { class: "body", id: "activity" });
  const datasets = h("div", { id: "datasets-panel" });
  main.append(
    h("div", { class: "view-head" },
      h("div", {}, h("h1", {}, "Overview"),
        h("p", { class: "muted" }, "Files dropped in the inbox become datasets you can query."))),
    rejected,
    h("div", { class: "grid-2" },
      panel("Backlog", backlog, h("span", { class: "faint" }, "GET /status")),
      panel("Last activity", activity)),
    h("div", { style: "height:18px" }),
    datasets);

  async function loadRejected() {
    try {
      const body = await getJSON(`/events${query({ type: "ingest.rejected", order: "desc", limit: 5 })}`);
      if (!body.events.length) { rejected.replaceChildren(); return; }
      rejected.replaceChildren(h("section", { class: "alert", id: "rejected-files" },
        h("h2", {}, "Rejected files",
          h("a", { href: "#/events?type=ingest.rejected", style: "margin-left:auto;font-size:13px;font-weight:500" },
            "every rejection →")),
        h("ul", {}, body.events.map((e) => h("li", {},
          h("span", { class: "file" }, (e.data.source && e.data.source.name) || "?"),
          " ", h("span", { class: "faint" }, "· ", ago(e.at)),
          h("span", { class: "reason" }, e.data.reason)))),
        h("p", { class: "muted", style: "margin:8px 0 0" },
          "Each waits in ", h("code", {}, "inbox/.rejected/"), " beside its ",
          h("code", {}, "error.json"), "; fix it and drop it in again.")));
    } catch (e) {
      rejected.replaceChildren(apiError(e));
    }
  }

  function renderDatasets() {
    if (!state.datasets.length) {
      datasets.replaceChildren(panel("Datasets", emptyState(
        "No dataset yet. Drop a CSV file into the inbox: ", h("code", {}, "inbox/workers.csv"),
        " becomes ", h("code", {}, "workers"), "; files in ", h("code", {}, "inbox/sales/"),
        " are appended to ", h("code", {}, "sales"), ".")));
      return;
    }
    const rows = state.datasets.map((d) => h("tr", {
      class: "link", onclick: () => { location.hash = `#/datasets/${encodeURIComponent(d.name)}`; },
    },
    h("td", {}, h("a", { href: `#/datasets/${encodeURIComponent(d.name)}`, class: "mono" }, d.name)),
    h("td", {}, h("span", { class: "badge mode" }, d.mode)),
    h("td", { class: "num" }, number(d.version)),
    h("td", { class: "num" }, number(d.rows)),
    h("td", { class: "num" }, bytes(d.bytes)),
    h("td", { class: "num" }, number(d.parts)),
    h("td", { class: "muted" }, d.schema.map((c) => c.name).join(", ")),
    h("td", {}, when(d.updated_at))));
    datasets.replaceChildren(panel("Datasets",
      table(["Name", "Mode", h("th", { class: "num" }, "Version"), h("th", { class: "num" }, "Rows"),
        h("th", { class: "num" }, "Size"), h("th", { class: "num" }, "Parts"), "Columns", "Updated"],
      rows, { id: "datasets-table" }),
      h("span", { class: "faint" }, `${state.datasets.length} datasets`)));
  }

  view.onStatus = (status) => renderBacklog(backlog, activity, status);
  view.onSeq = () => { renderDatasets(); loadRejected(); };
  renderDatasets();
  await loadRejected();
  try {
    view.onStatus(await getJSON("/status"));
  } catch (e) {
    backlog.replaceChildren(apiError(e));
  }
}

function renderBacklog(backlog, activity, status) {
  const c = status.counts || {};
  const flights = (status.in_flight || []).map((f) => {
    const fraction = f.bytes_total ? f.bytes_done / f.bytes_total : 0;
    return h("div", { class: "flight" },
      h("span", { class: "name", title: f.file }, f.file),
      h("div", { class: "progress", title: `${bytes(f.bytes_done)} of ${bytes(f.bytes_total)}` },
        h("span", { style: `width:${Math.round(fraction * 100)}%` })),
      h("span", { class: "muted num" }, `${Math.round(fraction * 100)}%`));
  });
  const waiting = (status.pending || []).slice(0, 6).map((p) => h("tr", {},
    h("td", { class: "mono" }, p.file),
    h("td", {}, h("span", { class: "badge" }, p.state)),
    h("td", { class: p.error ? "error-text" : "muted" },
      p.error ? `${p.error} (retry in ${seconds(p.retry_in_s)})` : ago(p.since))));
  put(backlog,
    h("div", { class: "stats" },
      stat("Pending", number(status.files_pending)),
      stat("In flight", number(c.in_flight)),
      stat("Queued", number((c.queued || 0) + (c.waiting || 0))),
      stat("Retrying", number(c.retrying)),
      stat("Oldest", seconds(status.oldest_pending_s))),
    flights.length ? h("div", { style: "margin-top:12px" }, h("h3", {}, "Ingesting"), flights) : null,
    waiting.length ? h("div", { style: "margin-top:12px" }, table(["File", "State", ""], waiting)) : null,
    !status.files_pending ? h("p", { class: "muted", style: "margin:12px 0 0" }, "Nothing waiting: the inbox is idle.") : null);
  const last = status.last_ingested;
  const err = status.last_error;
  const problems = status.problems || [];
  activity.replaceChildren(h("dl", { class: "kv" },
    h("dt", {}, "Last ingested"),
    h("dd", {}, last ? [h("span", { class: "mono" }, last.file), " → ",
      h("a", { href: `#/datasets/${encodeURIComponent(last.dataset || "")}` }, last.dataset),
      " ", h("span", { class: "faint" }, `(${last.status}, seq ${last.seq}, ${ago(last.at)})`)]
      : h("span", { class: "faint" }, "nothing since the daemon started")),
    h("dt", {}, "Last error"),
    h("dd", {}, err ? [h("span", { class: "mono" }, err.file), " ", h("span", { class: "faint" }, ago(err.at)),
      h("div", { class: "error-text" }, err.reason)] : h("span", { class: "faint" }, "none")),
    h("dt", {}, "Health"),
    h("dd", {}, problems.length
      ? problems.map((p) => h("div", { class: "error-text" }, `${p.part}: ${p.reason}`))
      : h("span", { class: "faint" }, `${status.health}; no problem`))));
}

async function datasetView(main, r, view) {
  const name = r.arg;
  const head = h("div", { class: "view-head" });
  const body = h("div", { class: "stack" });
  main.append(head, body);

  async function load() {
    let d;
    try {
      d = await getJSON(`/datasets/${encodeURIComponent(name)}`);
    } catch (e) {
      head.replaceChildren(h("h1", { class: "mono" }, name));
      body.replaceChildren(apiError(e));
      return;
    }
    const sql = `SELECT * FROM ${/^[a-z_][a-z0-9_]*$/.test(name) ? name : `"${name}"`} LIMIT 100`;
    head.replaceChildren(
      h("div", {},
        h("h1", { class: "mono", id: "dataset-name" }, d.name),
        h("p", { class: "muted" }, h("span", { class: "badge mode" }, d.mode), "  ",
          `version ${d.version} · fingerprint `, h("code", { title: d.fingerprint }, d.fingerprint.slice(0, 12)))),
      h("div", { style: "display:flex;gap:8px" },
        h("button", { type: "button", onclick: () => { location.hash = `#/events?dataset=${encodeURIComponent(name)}`; } }, "Events"),
        h("button", { type: "button", class: "primary", id: "query-dataset",
          onclick: () => { location.hash = `#/sql?q=${encodeURIComponent(sql)}`; } }, "Query")));
    const schema = table(["Column", "Type", "Nullable"], d.schema.map((c) => h("tr", {},
      h("td", { class: "mono" }, c.name), h("td", { class: "mono muted" }, c.type),
      h("td", { class: "muted" }, c.nullable === false ? "no" : "yes"))), { id: "schema-table" });
    const versions = table(["Version", "When", "Mode", h("th", { class: "num" }, "Rows"), h("th", { class: "num" }, "Size"), "Seq"],
      [...d.versions].reverse().map((v) => h("tr", {},
        h("td", { class: "num" }, v.version), h("td", {}, when(v.at)),
        h("td", {}, h("span", { class: "badge mode" }, v.mode)),
        h("td", { class: "num" }, number(v.rows)), h("td", { class: "num" }, bytes(v.bytes)),
        h("td", { class: "muted" }, v.seq))), { id: "versions-table" });
    const parts = table(["#", "Source", h("th", { class: "num" }, "Rows"), h("th", { class: "num" }, "Size"), "Object", "Added in"],
      d.parts.map((p, i) => h("tr", {},
        h("td", { class: "muted" }, i + 1),
        h("td", { class: "mono", title: p.source_uri || "" }, (p.source_uri || "?").split("/").pop()),
        h("td", { class: "num" }, number(p.rows)), h("td", { class: "num" }, bytes(p.object_bytes)),
        h("td", { class: "mono muted", title: p.object_key }, `${p.object_sha256.slice(0, 12)}…`),
        h("td", { class: "muted" }, `version ${p.version_added}`))), { id: "parts-table" });
    body.replaceChildren(
      h("section", { class: "panel" }, h("div", { class: "body stats" },
        stat("Rows", number(d.rows)), stat("Size", bytes(d.bytes)), stat("Parts", number(d.parts.length)),
        stat("Columns", number(d.schema.length)), stat("Updated", ago(d.updated_at), true),
        stat("Created", ago(d.created_at), true))),
      h("div", { class: "grid-2" }, panel("Schema", schema), panel("Versions", versions)),
      panel("Parts", parts, h("span", { class: "faint" }, "the objects the current version reads")),
      await historyPanel(name));
  }

  view.onSeq = load;
  await load();
}

/** The dataset's history (GET /datasets/{name}/history), newest first: each version, what
 * made it and why, what it holds, the files it brought and how its schema changed. */
async function historyPanel(name) {
  try {
    const body = await getJSON(`/datasets/${encodeURIComponent(name)}/history`);
    const versions = [...body.versions].reverse();
    const change = (d) => [
      ...d.added.map((c) => `+${c}`),
      ...d.removed.map((c) => `−${c}`),
      ...d.retyped.map((r) => `${r.name}: ${r.from} → ${r.to}`),
    ].join(" ");
    return panel("History", table(
      ["Version", "When", "Event", "Rows", "Size", "Files added", "Schema", "Reason"],
      versions.map((v, i) => h("tr", { class: v.expired ? "muted" : "" },
        h("td", {}, v.version, v.expired ? " (expired)" : ""),
        h("td", {}, when(v.at)),
        h("td", {}, badge(v.event)),
        h("td", { class: "num" }, number(v.rows)),
        h("td", { class: "num" }, bytes(v.bytes)),
        h("td", { class: "mono" }, v.sources_added.map((s) => s.name || s.uri).join(", ") || "–"),
        h("td", { class: "mono" }, i === versions.length - 1 ? "" : change(v.schema_diff)),
        h("td", {}, v.reason || ""))),
      { id: "history-table" }),
      h("a", { href: `#/events?dataset=${encodeURIComponent(name)}` }, "every event →"));
  } catch (e) {
    return apiError(e);
  }
}

/** `text` with the words of a search marked where they occur. */
function highlight(text, q) {
  const words = (q || "").split(/\s+/).filter(Boolean).map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  if (!words.length) return text;
  const parts = text.split(new RegExp(`(${words.join("|")})`, "giu"));
  return parts.map((part, i) => (i % 2 ? h("mark", {}, part) : part));
}

function eventsTable(events, id, q = "") {
  if (!events.length) return emptyState("No event matches.");
  const known = new Set(state.datasets.map((d) => d.name));
  return table(["Seq", "When", "Type", "Dataset", "What"], events.map((e) => h("tr", {},
    h("td", { class: "muted" }, e.seq),
    h("td", {}, when(e.at)),
    h("td", {}, badge(e.type)),
    h("td", { class: "mono" }, !e.dataset ? "–" : known.has(e.dataset)
      ? h("a", { href: `#/datasets/${encodeURIComponent(e.dataset)}` }, e.dataset) : e.dataset),
    h("td", { class: "what" }, h("details", {},
      h("summary", {}, highlight(e.summary || e.type, q)),
      h("pre", {}, JSON.stringify(e.data, null, 2)))))), { id, class: "events" });
}

async function sqlView(main, r, view) {
  const initial = r.params.get("q") || "";
  const editor = h("textarea", {
    class: "editor", id: "sql-input", spellcheck: "false", "aria-label": "SQL",
    placeholder: "SELECT * FROM workers LIMIT 10",
  });
  editor.value = initial || (state.datasets.length ? `SELECT * FROM ${state.datasets[0].name} LIMIT 100` : "");
  const maxRows = h("input", { type: "number", min: "1", id: "max-rows", value: r.params.get("max_rows") || "1000" });
  const result = h("div", { id: "result" });
  const run = h("button", { type: "button", class: "primary", id: "run-query", onclick: () => execute() }, "Run ▶");
  const downloads = Object.keys(DOWNLOADS).map((fmt) => h("button", {
    type: "button", id: `download-${fmt}`, onclick: () => download(fmt),
  }, { csv: "CSV", ndjson: "NDJSON", arrow: "Arrow" }[fmt]));
  main.append(
    h("div", { class: "view-head" }, h("div", {}, h("h1", {}, "Query"),
      h("p", { class: "muted" }, "One SELECT over the datasets. The query is in the address, so the link can be shared."))),
    h("section", { class: "panel" }, editor,
      h("div", { class: "toolbar" }, run, h("span", { class: "faint" }, h("kbd", {}, "Ctrl"), "+", h("kbd", {}, "Enter")),
        h("label", {}, "max rows", maxRows),
        h("span", { class: "spacer" }),
        h("span", { class: "muted" }, "Download"), ...downloads)),
    result);
  editor.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); execute(); }
  });

  function remember(sql) {
    history.replaceState(null, "", `#/sql${query({ q: sql, max_rows: maxRows.value === "1000" ? "" : maxRows.value })}`);
  }

  async function execute() {
    const sql = editor.value.trim();
    if (!sql) return;
    remember(sql);
    run.disabled = true;
    result.replaceChildren(h("p", { class: "muted" }, "Running…"));
    try {
      const body = await getJSON("/sql", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ sql, max_rows: Number(maxRows.value) || 1000 }),
      });
      result.replaceChildren(resultTable(body));
    } catch (e) {
      result.replaceChildren(apiError(e));
    } finally {
      run.disabled = false;
    }
  }

  async function download(fmt) {
    const sql = editor.value.trim();
    if (!sql) return;
    remember(sql);
    try {
      const response = await api("/sql", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ sql, format: fmt }),
      });
      if (!response.ok) throw await failure(response);
      const blob = await response.blob();
      const seq = response.headers.get("X-Catalog-Seq") || "0";
      const a = h("a", { href: URL.createObjectURL(blob), download: `lakehoused-seq${seq}.${DOWNLOADS[fmt]}` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 60000);
    } catch (e) {
      result.replaceChildren(apiError(e));
    }
  }

  if (initial) await execute();
}

function resultTable(body) {
  const meta = h("div", { class: "meta", id: "result-meta" },
    h("span", {}, h("b", { id: "row-count" }, number(body.row_count)), body.row_count === 1 ? " row" : " rows"),
    body.truncated ? h("span", { class: "flag", id: "truncated" }, "truncated: download for every row") : null,
    h("span", { class: "muted" }, "catalog seq ", h("b", { id: "result-seq" }, body.catalog_seq)),
    h("span", { class: "muted" }, h("b", {}, body.elapsed_ms), " ms"));
  const numeric = body.columns.map((c) => NUMERIC.test(c.type));
  const head = body.columns.map((c, i) => h("th", { class: numeric[i] ? "num" : "" }, c.name, h("span", { class: "type" }, c.type)));
  const rows = body.rows.map((row) => h("tr", {}, row.map((v, i) => {
    if (v === null) return h("td", { class: "null" }, "NULL");
    const text = typeof v === "object" ? JSON.stringify(v) : String(v);
    return h("td", { class: numeric[i] ? "num" : "" }, text);
  })));
  return h("section", { class: "panel" },
    h("header", {}, meta),
    body.columns.length ? table(head, rows, { id: "result-table", class: "result" }) : emptyState("No columns."));
}

async function eventsView(main, r, view) {
  const params = r.params;
  const search = h("input", {
    type: "search", id: "events-search", placeholder: "Search reasons, file names…",
    "aria-label": "Search events", value: params.get("q") || "",
  });
  const typeSelect = h("select", { id: "events-type", "aria-label": "Event type" },
    h("option", { value: "" }, "every type"),
    FACTS.eventTypes.map((t) => h("option", { value: t, selected: t === params.get("type") }, t)));
  const datasetSelect = h("select", { id: "events-dataset", "aria-label": "Dataset" },
    h("option", { value: "" }, "every dataset"),
    [...new Set([...state.datasets.map((d) => d.name), params.get("dataset")].filter(Boolean))]
      .map((n) => h("option", { value: n, selected: n === params.get("dataset") }, n)));
  const list = h("div", { id: "events-list" });
  const newer = h("button", { type: "button", id: "events-newer", onclick: () => page(-1) }, "← Newer");
  const older = h("button", { type: "button", id: "events-older", onclick: () => page(1) }, "Older →");
  const where = h("span", { class: "muted" });
  const pages = [params.get("before") || null]; // the `before` of each page seen
  main.append(
    h("div", { class: "view-head" }, h("div", {}, h("h1", {}, "Events"),
      h("p", { class: "muted" }, "Every decision the daemon took, from the append-only log, newest first."))),
    h("section", { class: "panel" },
      h("header", {}, h("form", { class: "filters", id: "events-filters", onsubmit: (e) => { e.preventDefault(); restart(); } },
        search, typeSelect, datasetSelect, h("button", { type: "submit" }, "Search"))),
      list,
      h("div", { class: "pager" }, where, newer, older)));

  let timer = null;
  search.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(restart, 300); });
  typeSelect.addEventListener("change", restart);
  datasetSelect.addEventListener("change", restart);

  function filters() {
    return { q: search.value.trim(), type: typeSelect.value, dataset: datasetSelect.value };
  }

  function restart() {
    pages.length = 0;
    pages.push(null);
    load();
  }

  function page(step) {
    if (step > 0 && older.dataset.next) pages.push(older.dataset.next);
    if (step < 0 && pages.length > 1) pages.pop();
    load();
  }

  async function load() {
    const f = filters();
    const before = pages[pages.length - 1];
    history.replaceState(null, "", `#/events${query({ ...f, before })}`);
    try {
      const body = await getJSON(`/events${query({ ...f, before, order: "desc", limit: EVENTS_PAGE })}`);
      list.replaceChildren(eventsTable(body.events, "events-table", f.q));
      older.disabled = body.next_before === null;
      older.dataset.next = body.next_before ?? "";
      newer.disabled = pages.length <= 1;
      where.textContent = body.events.length
        ? `seq ${body.events[0].seq} to ${body.events[body.events.length - 1].seq}` : "";
    } catch (e) {
      list.replaceChildren(apiError(e));
    }
  }

  view.onSeq = () => { if (pages.length <= 1) load(); };
  await load();
}

// -- start ------------------------------------------------------------------------------

function start() {
  $("#token-form").addEventListener("submit", () => { /* method=dialog closes it */ });
  $("#token-dialog").addEventListener("cancel", (e) => e.preventDefault()); // the page needs it
  $("#token-button").hidden = !sessionStorage.getItem(TOKEN_KEY);
  $("#token-button").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  $("#dataset-filter").addEventListener("input", renderSidebar);
  window.addEventListener("hashchange", route);
  document.title = `lakehoused ${FACTS.version}`;
  poll().finally(() => {
    route();
    setInterval(poll, POLL_MS);
  });
}

start();
