// Orchestrator web console. Plain JavaScript, no build step: it uses the
// public HTTP API only, and the dagre library (vendor/) for graph layout.
// Every piece of data goes into the page as text (textContent), never as HTML.

const TOKEN_KEY = "orchestrator.token";
const DRAFT_KEY = "orchestrator.draft";
const INPUTS_KEY = "orchestrator.inputs";
const REFRESH_KEY = "orchestrator.autorefresh";
const LIST_REFRESH_MS = 3000;
const GRAPH_LIMIT = 400;
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const STEP_STATES = ["pending", "ready", "running", "retrying", "waiting", "succeeded", "failed", "skipped", "cancelled"];
const EXECUTION_STATES = ["resolving", "queued", "running", "succeeded", "failed", "cancelled"];

const view = document.getElementById("view");
const notice = document.getElementById("notice");
let session = { auth: false };
let current = null; // the page shown: { leave() }

// ---------------------------------------------------------------- helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  return add(node, children);
}

/** Appends children: nested arrays are flattened, null/undefined/false skipped,
 * anything else not a node becomes text. */
function add(node, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** Replaces a node's children (as `add` takes them). */
function fill(node, ...children) {
  node.replaceChildren();
  return add(node, children);
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function badge(status) {
  return el("span", { class: `badge s-${status}`, text: status });
}

function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

function elapsed(item) {
  if (!item.started_at) return null;
  const end = item.finished_at ? Date.parse(item.finished_at) : Date.now();
  return Math.max(0, end - Date.parse(item.started_at));
}

function json(value) {
  return el("pre", { class: "json", text: JSON.stringify(value, null, 2) });
}

function showNotice(text, ok = false) {
  notice.textContent = text;
  notice.classList.toggle("ok", ok);
  notice.hidden = false;
  clearTimeout(showNotice.timer);
  if (ok) showNotice.timer = setTimeout(() => (notice.hidden = true), 5000);
}

function clearNotice() {
  notice.hidden = true;
  notice.textContent = "";
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    });
  });
}

function ready(name) {
  view.dataset.ready = name;
  performance.mark(`ready:${name}`);
}

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `the server answered ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(method, path, body, { signal, retried = false, headers: extra = {} } = {}) {
  if (session.auth && !sessionStorage.getItem(TOKEN_KEY)) await askToken();
  const headers = { Accept: "application/json", ...extra, ...authHeaders() };
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const res = await fetch(path, { method, headers, body: payload, signal });
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { detail: text };
  }
  if (res.status === 401 && !retried) {
    sessionStorage.removeItem(TOKEN_KEY);
    await askToken(`The server did not accept the token: ${data?.detail || "unauthorized"}`);
    return api(method, path, body, { signal, retried: true, headers: extra });
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

// ---------------------------------------------------------------- token

const tokenDialog = document.getElementById("token-dialog");
const tokenInput = document.getElementById("token-input");
const tokenWhy = document.getElementById("token-why");
const tokenDefault = tokenWhy.textContent;
let tokenWaiters = [];

function askToken(why) {
  tokenWhy.textContent = why || tokenDefault;
  tokenInput.value = "";
  if (!tokenDialog.open) tokenDialog.showModal();
  tokenInput.focus();
  return new Promise((resolve, reject) => tokenWaiters.push({ resolve, reject }));
}

function settleToken(ok) {
  const waiters = tokenWaiters;
  tokenWaiters = [];
  for (const w of waiters) {
    if (ok) w.resolve();
    else w.reject(new ApiError(401, { detail: "an API token is needed; use the API token button" }));
  }
}

document.getElementById("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const token = tokenInput.value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  tokenDialog.close("save");
  settleToken(true);
  if (!current) route();
});
document.getElementById("token-forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  tokenInput.value = "";
  showNotice("The token is forgotten.", true);
});
document.getElementById("token-cancel").addEventListener("click", () => tokenDialog.close());
tokenDialog.addEventListener("close", () => {
  if (tokenDialog.returnValue !== "save") settleToken(false);
  tokenDialog.returnValue = "";
});
document.getElementById("token-button").addEventListener("click", () => {
  askToken().catch(() => {});
});

// ---------------------------------------------------------------- confirm

const confirmDialog = document.getElementById("confirm-dialog");

function confirmAction(title, text, yes) {
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-yes").textContent = yes;
  confirmDialog.returnValue = "";
  confirmDialog.showModal();
  return new Promise((resolve) =>
    confirmDialog.addEventListener("close", () => resolve(confirmDialog.returnValue === "yes"), { once: true }),
  );
}

// ---------------------------------------------------------------- router

function route() {
  current?.leave?.();
  current = null;
  const hash = location.hash.replace(/^#/, "") || "/executions";
  const [path, query] = hash.split("?");
  const parts = path.split("/").filter(Boolean);
  const params = new URLSearchParams(query || "");
  const section = ["submit", "waiting", "pipelines"].includes(parts[0]) ? parts[0] : "executions";
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  delete view.dataset.ready;
  fill(view);
  if (parts[0] === "executions" && parts[1]) current = executionPage(decodeURIComponent(parts[1]), params.get("step"));
  else if (parts[0] === "submit") current = submitPage();
  else if (parts[0] === "waiting") current = waitingPage();
  else if (parts[0] === "pipelines" && parts[1]) current = pipelinePage(decodeURIComponent(parts[1]), params.get("version"));
  else if (parts[0] === "pipelines") current = pipelinesPage();
  else current = listPage(params);
}

window.addEventListener("hashchange", () => {
  clearNotice();
  route();
  view.focus({ preventScroll: true });
});

// ---------------------------------------------------------------- executions list

function listPage(params) {
  const controller = new AbortController();
  const status = params.get("status") || "";
  const pipeline = params.get("pipeline") || "";
  const cursor = params.get("cursor") || "";
  const auto = sessionStorage.getItem(REFRESH_KEY) !== "off";

  const statusSelect = el(
    "select",
    { id: "filter-status", name: "status" },
    el("option", { value: "", text: "any" }),
    EXECUTION_STATES.map((s) => el("option", { value: s, text: s, selected: s === status })),
  );
  const pipelineInput = el("input", {
    id: "filter-pipeline",
    name: "pipeline",
    value: pipeline,
    placeholder: "pipeline name",
    autocomplete: "off",
  });
  const autoBox = el("input", { type: "checkbox", id: "auto-refresh", checked: auto });
  const form = el(
    "form",
    { class: "toolbar", role: "search" },
    el("div", { class: "field" }, el("label", { for: "filter-status", text: "Status" }), statusSelect),
    el("div", { class: "field grow" }, el("label", { for: "filter-pipeline", text: "Pipeline" }), pipelineInput),
    el("button", { type: "submit", class: "primary", text: "Filter" }),
    el("label", { class: "check", for: "auto-refresh" }, autoBox, "Auto-refresh"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    if (statusSelect.value) q.set("status", statusSelect.value);
    if (pipelineInput.value.trim()) q.set("pipeline", pipelineInput.value.trim());
    location.hash = `#/executions${q.size ? `?${q}` : ""}`;
  });
  autoBox.addEventListener("change", () => sessionStorage.setItem(REFRESH_KEY, autoBox.checked ? "on" : "off"));

  const body = el("tbody");
  const table = el(
    "table",
    { id: "executions" },
    el("caption", { class: "skip", text: "Executions, newest first" }),
    el(
      "thead",
      {},
      el(
        "tr",
        {},
        ["Execution", "Pipeline", "Status", "Created", "Started", "Duration", "Error"].map((h) => el("th", { scope: "col", text: h })),
      ),
    ),
    body,
  );
  const pager = el("div", { class: "pager" });
  view.append(el("h1", { text: "Executions" }), form, table, pager);

  const pageLink = (next) => {
    const q = new URLSearchParams();
    if (status) q.set("status", status);
    if (pipeline) q.set("pipeline", pipeline);
    if (next) q.set("cursor", next);
    return `#/executions${q.size ? `?${q}` : ""}`;
  };

  let first = true;
  async function load() {
    const q = new URLSearchParams({ limit: "50" });
    if (status) q.set("status", status);
    if (pipeline) q.set("pipeline", pipeline);
    if (cursor) q.set("cursor", cursor);
    let page;
    try {
      page = await api("GET", `/executions?${q}`, undefined, { signal: controller.signal });
    } catch (e) {
      if (!controller.signal.aborted) showNotice(`Could not list executions: ${e.message}`);
      return;
    }
    const rows = page.items.map((x) =>
      el(
        "tr",
        { "data-id": x.id, "data-status": x.status },
        el("td", { class: "mono" }, el("a", { href: `#/executions/${x.id}`, text: x.id })),
        el("td", { text: x.pipeline_name }),
        el("td", {}, badge(x.status)),
        el("td", { text: when(x.created_at) }),
        el("td", { text: when(x.started_at) }),
        el("td", { text: duration(elapsed(x)) }),
        el("td", { class: "error", title: x.error || "", text: x.error || "" }),
      ),
    );
    if (rows.length === 0) {
      rows.push(el("tr", {}, el("td", { colspan: 7, class: "empty", text: "No executions match." })));
    }
    fill(body, ...rows);
    fill(pager,
      cursor ? el("a", { href: pageLink(""), text: "← Newest" }) : null,
      page.next_cursor ? el("a", { href: pageLink(page.next_cursor), id: "older", text: "Older →" }) : null,
      el("span", { class: "info", text: `${page.items.length} shown${autoBox.checked ? " · refreshes every 3 s" : ""}` }),
    );
    if (first) {
      first = false;
      ready("executions");
    }
  }

  load();
  const timer = setInterval(() => {
    if (autoBox.checked && !document.hidden) load();
  }, LIST_REFRESH_MS);
  return {
    leave() {
      clearInterval(timer);
      controller.abort();
    },
  };
}

// ---------------------------------------------------------------- waiting steps

function waitingPage() {
  const controller = new AbortController();
  const body = el("tbody");
  const info = el("p", { class: "hint" });
  view.append(
    el("h1", { text: "Waiting for an answer" }),
    el("p", { class: "hint", text: "Waiting steps, oldest first: questions to a person (user-prompt, approval-gate, feedback-collection; open one to answer it) and pipeline-executor steps waiting for their child execution." }),
    el(
      "table",
      { id: "waiting" },
      el("caption", { class: "skip", text: "Open questions, oldest first" }),
      el("thead", {}, el("tr", {}, ["Question", "Asks", "Execution", "Step", "Asked", "Deadline"].map((h) => el("th", { scope: "col", text: h })))),
      body,
    ),
    info,
  );
  let first = true;
  async function load() {
    let page;
    try {
      page = await api("GET", "/waiting?limit=1000", undefined, { signal: controller.signal });
    } catch (e) {
      if (!controller.signal.aborted) showNotice(`Could not list waiting steps: ${e.message}`);
      return;
    }
    const rows = page.items.map((w) => {
      const r = w.request || {};
      const asked = w.kind === "pipeline-executor"
        ? `waits for its child execution (${r.pipeline || "inline"})`
        : r.title || r.prompt || r.content || "(no text)";
      const href = `#/executions/${w.execution_id}?step=${encodeURIComponent(w.step_id)}`;
      return el(
        "tr",
        { "data-id": w.execution_id, "data-step": w.step_id },
        el("td", {}, el("a", { href, text: asked })),
        el("td", { text: w.kind }),
        el("td", { class: "mono" }, el("a", { href: `#/executions/${w.execution_id}`, text: w.execution_id })),
        el("td", { text: w.step_id }),
        el("td", { text: when(w.asked_at) }),
        el("td", { text: w.deadline ? when(w.deadline) : "—" }),
      );
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 6, class: "empty", text: "Nothing is waiting for an answer." })));
    fill(body, ...rows);
    info.textContent = `${page.items.length} open · refreshes every 3 s`;
    if (first) {
      first = false;
      ready("waiting");
    }
  }
  load();
  const timer = setInterval(() => {
    if (!document.hidden) load();
  }, LIST_REFRESH_MS);
  return {
    leave() {
      clearInterval(timer);
      controller.abort();
    },
  };
}

// ---------------------------------------------------------------- stored pipelines

function pipelinesPage() {
  const controller = new AbortController();
  const body = el("tbody");
  view.append(
    el("h1", { text: "Stored pipelines" }),
    el("p", { class: "hint" },
      "Pipelines stored by name (PUT /pipelines/{name}); a pipeline-executor step or a client runs them by name. Store one from the ",
      el("a", { href: "#/submit", text: "Submit" }),
      " page.",
    ),
    el(
      "table",
      { id: "pipelines" },
      el("caption", { class: "skip", text: "Stored pipelines by name" }),
      el("thead", {}, el("tr", {}, ["Name", "Newest version", "First stored", "Last stored"].map((h) => el("th", { scope: "col", text: h })))),
      body,
    ),
  );
  (async () => {
    let list;
    try {
      list = await api("GET", "/pipelines", undefined, { signal: controller.signal });
    } catch (e) {
      if (!controller.signal.aborted) showNotice(`Could not list pipelines: ${e.message}`);
      return;
    }
    const rows = list.items.map((p) =>
      el(
        "tr",
        { "data-name": p.name },
        el("td", {}, el("a", { href: `#/pipelines/${encodeURIComponent(p.name)}`, text: p.name })),
        el("td", { text: String(p.latest_version) }),
        el("td", { text: when(p.created_at) }),
        el("td", { text: when(p.updated_at) }),
      ),
    );
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 4, class: "empty", text: "No pipelines are stored yet." })));
    fill(body, ...rows);
    ready("pipelines");
  })();
  return { leave: () => controller.abort() };
}

function pipelinePage(name, version) {
  const controller = new AbortController();
  const title = el("h1", {}, `Pipeline ${name}`);
  const meta = el("dl", { class: "meta" });
  const versionSelect = el("select", { id: "pipeline-version" });
  const source = el("pre", { class: "source", id: "pipeline-source" });
  const inputs = el("textarea", { id: "pipeline-inputs", rows: "4", spellcheck: "false", placeholder: '{"topic": "tides"}' });
  const run = el("button", { type: "button", class: "primary", id: "pipeline-run", text: "Run" });
  const error = el("p", { class: "step-error", id: "pipeline-run-error", hidden: true });
  const runs = el("tbody");
  view.append(
    el("p", { class: "hint" }, el("a", { href: "#/pipelines", text: "← Stored pipelines" })),
    title,
    el("section", { class: "panel", "aria-label": "Version" }, meta,
      el("div", { class: "toolbar-field" }, el("label", { for: "pipeline-version", text: "Version " }), versionSelect)),
    el("section", { class: "panel", "aria-label": "Run" },
      el("h2", { text: "Run this version" }),
      el("label", { for: "pipeline-inputs", text: "Inputs (JSON object)" }),
      inputs, run, error),
    el("section", { class: "panel", "aria-label": "Source" }, el("h2", { text: "Source" }), source),
    el("section", { class: "panel", "aria-label": "Recent executions" },
      el("h2", { text: "Recent executions" }),
      el("table", { id: "pipeline-executions" },
        el("thead", {}, el("tr", {}, ["Execution", "Status", "Created", "Error"].map((h) => el("th", { scope: "col", text: h })))),
        runs)),
  );
  versionSelect.addEventListener("change", () => {
    location.hash = `#/pipelines/${encodeURIComponent(name)}?version=${versionSelect.value}`;
  });
  let shown = null;
  run.addEventListener("click", async () => {
    error.hidden = true;
    let given = {};
    if (inputs.value.trim()) {
      try {
        given = JSON.parse(inputs.value);
      } catch (e) {
        error.textContent = `Inputs are not JSON: ${e.message}`;
        error.hidden = false;
        return;
      }
    }
    run.disabled = true;
    try {
      const x = await api("POST", `/pipelines/${encodeURIComponent(name)}/executions${shown ? `?version=${shown.version}` : ""}`, { inputs: given });
      location.hash = `#/executions/${x.id}`;
    } catch (e) {
      error.textContent = e.message;
      error.hidden = false;
    } finally {
      run.disabled = false;
    }
  });
  (async () => {
    try {
      const q = version ? `?version=${encodeURIComponent(version)}` : "";
      shown = await api("GET", `/pipelines/${encodeURIComponent(name)}${q}`, undefined, { signal: controller.signal });
    } catch (e) {
      if (!controller.signal.aborted) showNotice(`Could not read pipeline ${name}: ${e.message}`);
      return;
    }
    const latest = (await api("GET", `/pipelines/${encodeURIComponent(name)}`, undefined, { signal: controller.signal }).catch(() => shown)).version;
    fill(versionSelect, Array.from({ length: latest }, (_, i) => latest - i).map((v) =>
      el("option", { value: String(v), text: v === latest ? `${v} (newest)` : String(v), selected: v === shown.version })));
    fill(meta, ...[
      ["Pipeline id", shown.pipeline_id],
      ["Steps", String(shown.steps)],
      ["Stored", when(shown.created_at)],
      ["Stored by", shown.created_by || "—"],
      ["Format", shown.format],
    ].map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: v }))));
    source.textContent = shown.source || "";
    try {
      const page = await api("GET", `/executions?pipeline=${encodeURIComponent(name)}&limit=10`, undefined, { signal: controller.signal });
      const rows = page.items.map((x) => el("tr", { "data-id": x.id },
        el("td", { class: "mono" }, el("a", { href: `#/executions/${x.id}`, text: x.id })),
        el("td", {}, badge(x.status)),
        el("td", { text: when(x.created_at) }),
        el("td", { class: "error", title: x.error || "", text: x.error || "" })));
      if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 4, class: "empty", text: "None yet." })));
      fill(runs, ...rows);
    } catch {
      // The listing is a convenience; the page stands without it.
    }
    ready("pipeline");
  })();
  return { leave: () => controller.abort() };
}

// ---------------------------------------------------------------- one execution

/** Reads an execution's Server-Sent Events with fetch (EventSource cannot
 * send the Authorization header). Resumes after a dropped connection from
 * the last event seen; resolves when the server ends the stream (the
 * execution is over) or the signal aborts. */
async function followEvents(id, after, signal, onEvent) {
  return followStream(`/executions/${encodeURIComponent(id)}/events`, after, signal, onEvent);
}

/** Reads a resumable SSE stream of JSON items numbered by `seq` (events,
 * log lines) until the server ends it or the signal aborts. */
async function followStream(path, after, signal, onEvent) {
  let last = after;
  while (!signal.aborted) {
    try {
      const res = await fetch(`${path}${path.includes("?") ? "&" : "?"}after=${last}`, {
        headers: { Accept: "text/event-stream", ...authHeaders() },
        signal,
      });
      if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        buffer += value.replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = block
            .split("\n")
            .filter((l) => l.startsWith("data:"))
            .map((l) => l.slice(5).replace(/^ /, ""))
            .join("\n");
          if (!data) continue;
          const event = JSON.parse(data);
          last = event.seq;
          onEvent(event);
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && (e.status === 401 || e.status === 403 || e.status === 404)) throw e;
      await sleep(1000, signal);
    }
  }
}

const STEP_EVENT = {
  "step.ready": "ready",
  "step.started": "running",
  "step.succeeded": "succeeded",
  "step.failed": "failed",
  "step.retrying": "retrying",
  "step.waiting": "waiting",
  "step.answered": "ready",
  "step.wait_expired": "ready",
  "step.skipped": "skipped",
  "step.cancelled": "cancelled",
};

function executionPage(id, step) {
  const controller = new AbortController();
  let execution = null;
  let selected = step || null;
  let chosen = Boolean(step);
  let childrenLoaded = 0;
  let graphKey = "";
  let following = false;
  let refreshTimer = null;
  let checkpoints = null;
  let checkpointsOf = "";

  const title = el("h1", {}, "Execution");
  const live = el("span", { class: "live", id: "live" });
  const meta = el("dl", { class: "meta" });
  const bar = el("div");
  const progress = el("div", { class: "progress", role: "progressbar", "aria-label": "Progress" }, bar);
  const progressText = el("div", { class: "hint" });
  const cancelButton = el("button", { type: "button", id: "cancel", class: "danger", text: "Cancel…" });
  const fromSelect = el("select", { id: "recover-from" });
  const recoverButton = el("button", { type: "button", id: "recover", class: "primary", text: "Recover…" });
  const actions = el(
    "div",
    { class: "actions" },
    cancelButton,
    el("div", { class: "toolbar-field" }, el("label", { for: "recover-from", text: "Recover from " }), fromSelect),
    recoverButton,
  );
  const graphBox = el("div", { class: "graph", id: "graph" });
  const legend = el(
    "ul",
    { class: "legend", "aria-label": "Step states" },
    STEP_STATES.map((s) => el("li", {}, badge(s))),
  );
  const stepsTable = el("tbody");
  const detail = el("div", { id: "step-detail", "aria-live": "polite" });
  const outputs = el("div", { id: "outputs" });
  const childrenBox = el("div", { id: "children" });
  const logBox = el("pre", { class: "log", id: "step-log", "aria-label": "Step log" });
  const LOG_LINES_SHOWN = 5000;
  let log = { step: null, controller: null, last: 0, done: false, signature: "" };

  /** Follows the selected step's log; again after it ran again. */
  function watchLog(s) {
    const signature = `${s.status}/${s.attempt}`;
    if (log.step === s.id && (!log.done || log.signature === signature)) return;
    const sameStep = log.step === s.id;
    log.controller?.abort();
    if (!sameStep) {
      fill(logBox);
      log.last = 0;
    }
    const mine = new AbortController();
    log = { step: s.id, controller: mine, last: log.last, done: false, signature };
    const path = `/executions/${encodeURIComponent(id)}/steps/${encodeURIComponent(s.id)}/logs?follow=true`;
    followStream(path, log.last, AbortSignal.any([controller.signal, mine.signal]), (line) => {
      log.last = line.seq;
      logBox.querySelector(".hint")?.remove();
      logBox.append(el("span", { class: `l-${line.stream}`, "data-seq": line.seq, title: `${when(line.at)} · attempt ${line.attempt} · ${line.stream}`, text: `${line.line}\n` }));
      while (logBox.childElementCount > LOG_LINES_SHOWN) logBox.firstElementChild.remove();
      if (logBox.scrollHeight - logBox.scrollTop - logBox.clientHeight < 80) logBox.scrollTop = logBox.scrollHeight;
    })
      .then(() => {
        if (log.controller === mine) {
          log.done = true;
          log.signature = signature;
          if (!logBox.childElementCount) logBox.append(el("span", { class: "hint", text: "(nothing written)" }));
        }
      })
      .catch(() => {});
  }

  view.append(
    el("p", { class: "hint" }, el("a", { href: "#/executions", text: "← Executions" })),
    title,
    el("section", { class: "panel", "aria-label": "Execution" }, meta, progress, progressText, live),
    el("section", { class: "panel", "aria-label": "Actions" }, actions),
    el(
      "div",
      { class: "layout" },
      el(
        "section",
        { "aria-label": "Graph" },
        el("h2", { text: "Steps" }),
        graphBox,
        legend,
        el(
          "table",
          { id: "steps" },
          el(
            "thead",
            {},
            el("tr", {}, ["Step", "Status", "Attempts", "Duration"].map((h) => el("th", { scope: "col", text: h }))),
          ),
          stepsTable,
        ),
      ),
      el("section", { class: "panel", "aria-label": "Step" }, detail),
    ),
    outputs,
    childrenBox,
  );

  /** Executions this one's pipeline-executor steps started (at most every 3 s). */
  async function loadChildren(x) {
    if (Date.now() - childrenLoaded < LIST_REFRESH_MS && !FINISHED.has(x.status)) return;
    childrenLoaded = Date.now();
    let page;
    try {
      page = await api("GET", `/executions?parent=${encodeURIComponent(id)}&limit=100`, undefined, { signal: controller.signal });
    } catch {
      return;
    }
    if (!page.items.length) return fill(childrenBox);
    fill(childrenBox, el("section", { class: "panel", "aria-label": "Child executions" },
      el("h2", { text: "Child executions" }),
      el("table", { id: "child-executions" },
        el("thead", {}, el("tr", {}, ["Execution", "Pipeline", "Step", "Status", "Created"].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, page.items.map((c) => el("tr", { "data-id": c.id },
          el("td", { class: "mono" }, el("a", { href: `#/executions/${c.id}`, text: c.id })),
          el("td", { text: c.pipeline_name }),
          el("td", {}, el("a", { href: `#/executions/${id}?step=${encodeURIComponent(c.parent_step_id || "")}`, text: c.parent_step_id || "" })),
          el("td", {}, badge(c.status)),
          el("td", { text: when(c.created_at) }),
        ))),
      ),
    ));
  }

  cancelButton.addEventListener("click", async () => {
    if (!(await confirmAction("Cancel this execution?", "Queued steps are cancelled at once; running steps are told to stop.", "Cancel execution")))
      return;
    try {
      const updated = await api("POST", `/executions/${encodeURIComponent(id)}/cancel`);
      showNotice("Cancelled.", true);
      show(updated);
    } catch (e) {
      showNotice(`Cancel failed: ${e.message}`);
    }
  });

  recoverButton.addEventListener("click", async () => {
    const from = fromSelect.value;
    const what = from
      ? `Step “${from}” and every step downstream of it run again; other finished steps keep their results.`
      : "Failed, cancelled and never-run steps run again; succeeded steps keep their checkpointed results.";
    if (!(await confirmAction("Recover this execution?", what, "Recover"))) return;
    try {
      const body = from ? { from_checkpoint: from } : {};
      const result = await api("POST", `/executions/${encodeURIComponent(id)}/recover`, body);
      showNotice(`Recovering: ${result.rerun.length ? result.rerun.join(", ") : "nothing"} will run again.`, true);
      checkpoints = null;
      show(result.execution);
      follow();
    } catch (e) {
      showNotice(`Recover failed: ${e.message}`);
    }
  });

  function scheduleRefresh() {
    if (refreshTimer) return;
    refreshTimer = setTimeout(async () => {
      refreshTimer = null;
      await refresh();
    }, 200);
  }

  async function refresh() {
    try {
      show(await api("GET", `/executions/${encodeURIComponent(id)}`, undefined, { signal: controller.signal }));
    } catch (e) {
      if (!controller.signal.aborted) showNotice(`Could not load the execution: ${e.message}`);
    }
  }

  async function follow() {
    if (following || !execution) return;
    following = true;
    live.textContent = "live";
    live.classList.add("on");
    try {
      await followEvents(id, execution.last_event_seq, controller.signal, (event) => {
        const status = STEP_EVENT[event.kind];
        if (status && event.step_id) paintStep(event.step_id, status);
        scheduleRefresh();
      });
    } catch (e) {
      if (!controller.signal.aborted) showNotice(`Live updates stopped: ${e.message}`);
    } finally {
      following = false;
      live.classList.remove("on");
      live.textContent = "";
    }
    if (!controller.signal.aborted) {
      await refresh();
      if (execution && !FINISHED.has(execution.status)) follow();
    }
  }

  function paintStep(stepId, status) {
    const node = graphBox.querySelector(`g.node[data-step="${CSS.escape(stepId)}"]`);
    if (node) {
      node.setAttribute("class", `node s-${status}${stepId === selected ? " selected" : ""}`);
      node.querySelector("text.status").textContent = status;
      node.setAttribute("aria-label", `${stepId}: ${status}`);
    }
  }

  function show(x) {
    execution = x;
    fill(title, x.pipeline_name, " ", badge(x.status));
    title.dataset.status = x.status;
    const usage = x.usage;
    const fields = [
      ["Execution", x.id],
      ["Pipeline id", x.pipeline_id],
      ["Created", when(x.created_at)],
      ["Started", when(x.started_at)],
      ["Finished", when(x.finished_at)],
      ["Duration", duration(x.duration_ms ?? elapsed(x))],
    ];
    if (usage && usage.calls) {
      fields.push(["Model calls", String(usage.calls)]);
      fields.push(["Tokens in / out", `${usage.input_tokens} / ${usage.output_tokens}`]);
      fields.push(["Cost", `$${usage.cost.toFixed(6)}`]);
      fields.push(["Models", usage.models.join(", ")]);
    }
    if (x.parent_execution_id) {
      fields.push([
        "Started by",
        el("a", {
          id: "parent-link",
          href: `#/executions/${x.parent_execution_id}?step=${encodeURIComponent(x.parent_step_id || "")}`,
          text: `${x.parent_execution_id} · step ${x.parent_step_id}`,
        }),
      ]);
    }
    fill(meta, ...fields.map(([k, v]) =>
      el("div", {}, el("dt", { text: k }), typeof v === "string" || v == null ? el("dd", { text: v, "data-field": k }) : el("dd", { "data-field": k }, v)),
    ));
    loadChildren(x);
    const p = x.progress;
    bar.style.width = `${p.percent}%`;
    progress.dataset.status = x.status;
    progress.setAttribute("aria-valuenow", String(Math.round(p.percent)));
    progress.setAttribute("aria-valuemin", "0");
    progress.setAttribute("aria-valuemax", "100");
    progressText.textContent =
      `${p.total} steps: ` +
      STEP_STATES.filter((s) => p[s])
        .map((s) => `${p[s]} ${s}`)
        .join(", ");

    cancelButton.disabled = FINISHED.has(x.status);
    recoverButton.disabled = !FINISHED.has(x.status);
    fromSelect.disabled = !FINISHED.has(x.status);
    const keep = fromSelect.value;
    fill(fromSelect,
      el("option", { value: "", text: "failed and unfinished steps" }),
      x.steps
        .filter((s) => s.status === "succeeded" || s.status === "failed")
        .map((s) => el("option", { value: s.id, text: `step ${s.id}`, selected: s.id === keep })),
    );

    drawGraph(x.steps);
    fill(stepsTable,
      ...x.steps.map((s) =>
        el(
          "tr",
          { "data-step": s.id, "data-status": s.status },
          el("td", {}, el("button", { type: "button", class: "link", text: s.id, onclick: () => select(s.id) })),
          el("td", {}, badge(s.status)),
          el("td", { text: `${s.attempt} / ${s.max_attempts}` }),
          el("td", { text: duration(s.duration_ms) }),
        ),
      ),
    );
    // Until someone picks a step, show the first failed one (else the first).
    if (!chosen && x.steps.length) {
      const pick = (x.steps.find((s) => s.status === "failed") || x.steps[0]).id;
      if (pick !== selected) checkpoints = null;
      selected = pick;
      for (const n of graphBox.querySelectorAll("g.node")) n.classList.toggle("selected", n.dataset.step === pick);
    }
    showStep();

    const parts = [];
    if (x.error) parts.push(el("h2", { text: "Error" }), el("p", { class: "step-error", id: "execution-error", text: x.error }));
    if (x.outputs && Object.keys(x.outputs).length) parts.push(el("h2", { text: "Outputs" }), json(x.outputs));
    if (x.inputs && Object.keys(x.inputs).length) parts.push(el("h2", { text: "Inputs" }), json(x.inputs));
    fill(outputs, ...(parts.length ? [el("section", { class: "panel", "aria-label": "Outputs" }, parts)] : []));
  }

  function drawGraph(steps) {
    if (steps.length > GRAPH_LIMIT) {
      fill(graphBox,
        el("p", { class: "empty", text: `${steps.length} steps: too many to draw; they are listed below.` }),
      );
      return;
    }
    const key = steps.map((s) => `${s.id}<${s.depends_on.join(",")}`).join("|");
    if (key !== graphKey || !graphBox.querySelector("svg")) {
      graphKey = key;
      fill(graphBox, layoutGraph(steps, select));
    }
    for (const s of steps) paintStep(s.id, s.status);
  }

  function select(stepId) {
    chosen = true;
    selected = stepId;
    checkpoints = null;
    for (const n of graphBox.querySelectorAll("g.node")) {
      n.classList.toggle("selected", n.dataset.step === stepId);
    }
    showStep();
  }

  async function loadCheckpoints() {
    try {
      const list = await api("GET", `/executions/${encodeURIComponent(id)}/checkpoints`, undefined, {
        signal: controller.signal,
      });
      checkpoints = list.items;
      showStep(true);
    } catch (e) {
      if (!controller.signal.aborted) showNotice(`Could not load checkpoints: ${e.message}`);
    }
  }

  // A waiting step's question, and a form to answer it (a JSON body,
  // prefilled from the answer's schema; what was typed survives re-renders).
  function waitingForm(s) {
    const w = s.waiting;
    const r = w.request || {};
    const previous = detail.querySelector(`#answer-body[data-step="${CSS.escape(s.id)}"]`);
    let template;
    if (w.kind === "user-prompt") template = { value: r.default ?? (r.choices ? r.choices[0] : "") };
    else if (w.kind === "approval-gate") template = { action: "approve", reason: "" };
    else template = { responses: Object.fromEntries((r.questions || []).map((q) => [q.id, null])) };
    const body = el("textarea", { id: "answer-body", rows: "6", spellcheck: "false" });
    body.dataset.step = s.id;
    body.value = previous ? previous.value : JSON.stringify(template, null, 2);
    const error = el("p", { class: "step-error", id: "answer-error", hidden: true });
    const send = el("button", { id: "answer-send", type: "button", text: "Send answer" });
    send.addEventListener("click", async () => {
      error.hidden = true;
      let answer;
      try {
        answer = JSON.parse(body.value);
      } catch (e) {
        error.textContent = `Not JSON: ${e.message}`;
        error.hidden = false;
        return;
      }
      send.disabled = true;
      try {
        await api("POST", w.answer_url, answer);
        await refresh();
      } catch (e) {
        error.textContent = e.message;
        error.hidden = false;
      } finally {
        send.disabled = false;
      }
    });
    const asked = [r.prompt, r.title, r.content].filter(Boolean).join("\n\n");
    const meta = [["Asks", w.kind], ["Asked", when(w.asked_at)]];
    if (w.deadline) meta.push(["Deadline", when(w.deadline)]);
    return [
      el("h2", { text: "Waiting for an answer" }),
      el("p", { class: "question", id: "answer-question", text: asked }),
      el("dl", { class: "meta" }, meta.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: v })))),
      el("details", {}, el("summary", { text: "Answer schema" }), json(r.schema || {})),
      el("label", { for: "answer-body", text: "Answer (JSON)" }),
      body,
      send,
      error,
    ];
  }

  function showStep(fromCheckpoints = false) {
    const s = execution?.steps.find((x) => x.id === selected);
    if (!s) {
      fill(detail, el("p", { class: "hint", text: "Select a step to see its details." }));
      return;
    }
    // Its checkpoints change only when its state or attempt does.
    const signature = `${s.id}/${s.status}/${s.attempt}`;
    if (!fromCheckpoints && (signature !== checkpointsOf || checkpoints === null)) {
      checkpointsOf = signature;
      loadCheckpoints();
    }
    const fields = [
      ["Tool", `${s.tool ?? "—"} · ${s.action}`],
      ["Attempts", `${s.attempt} of ${s.max_attempts}`],
      ["Started", when(s.started_at)],
      ["Finished", when(s.finished_at)],
      ["Duration", duration(s.duration_ms)],
      ["Depends on", s.depends_on.join(", ") || "—"],
    ];
    if (s.reason) fields.push(["Reason", s.reason]);
    if (s.usage && s.usage.calls) {
      fields.push(["Tokens in / out", `${s.usage.input_tokens} / ${s.usage.output_tokens}`]);
      fields.push(["Cost", `$${s.usage.cost.toFixed(6)}`]);
    }
    const parts = [
      el("h2", { id: "step-title" }, `Step ${s.id} `, badge(s.status)),
      el(
        "dl",
        { class: "meta" },
        fields.map(([k, v]) => el("div", {}, el("dt", { text: k }), el("dd", { text: v }))),
      ),
    ];
    if (s.error) {
      parts.push(
        el("h2", { text: `Error${s.error_type ? ` (${s.error_type})` : ""}${s.timed_out ? ", timed out" : ""}` }),
        el("p", { class: "step-error", id: "step-error", text: s.error }),
      );
    }
    const child = s.waiting?.request?.execution_id || s.result?.result?.execution_id;
    if (child) {
      parts.push(el("p", {}, el("a", { id: "child-link", href: `#/executions/${child}`, text: `Child execution ${child} →` })));
    }
    if (s.waiting && s.waiting.kind !== "pipeline-executor") parts.push(...waitingForm(s));
    else if (s.waiting) parts.push(el("p", { class: "hint", text: "Waiting for its child execution to end." }));
    if (s.tool && s.status !== "pending" && s.status !== "skipped") {
      watchLog(s);
      parts.push(el("h2", { text: "Log" }), logBox);
    }
    if (s.parameters !== null && s.parameters !== undefined) parts.push(el("h2", { text: "Parameters" }), json(s.parameters));
    if (s.result !== null && s.result !== undefined) parts.push(el("h2", { text: "Result" }), json(s.result));
    const mine = (checkpoints || []).filter((c) => c.step_id === s.id);
    if (mine.length) {
      parts.push(
        el("h2", { text: "Checkpoints" }),
        el(
          "table",
          { id: "attempts" },
          el("thead", {}, el("tr", {}, ["#", "Attempt", "Status", "Finished", "Error"].map((h) => el("th", { text: h })))),
          el(
            "tbody",
            {},
            mine.map((c) =>
              el(
                "tr",
                {},
                el("td", { text: String(c.id) }),
                el("td", { text: String(c.attempt) }),
                el("td", {}, badge(c.status)),
                el("td", { text: when(c.finished_at) }),
                el("td", { class: "error", title: c.error || "", text: c.error || "" }),
              ),
            ),
          ),
        ),
      );
    }
    // Moving the log box would lose where its reader had scrolled to.
    const scrolled = logBox.scrollTop;
    fill(detail, ...parts);
    logBox.scrollTop = scrolled;
  }

  // A running execution's duration moves between events too.
  const clock = setInterval(() => {
    if (!execution || FINISHED.has(execution.status) || !execution.started_at) return;
    const dd = meta.querySelector('dd[data-field="Duration"]');
    if (dd) dd.textContent = duration(elapsed(execution));
  }, 1000);

  (async () => {
    await refresh();
    if (!execution) {
      view.append(el("p", { class: "empty", text: "This execution could not be loaded." }));
      ready("execution");
      return;
    }
    ready("execution");
    if (!FINISHED.has(execution.status)) follow();
  })();

  return {
    leave() {
      controller.abort();
      clearTimeout(refreshTimer);
      clearInterval(clock);
    },
  };
}

/** Lays the steps out top-down with dagre and draws them as SVG; each node
 * is focusable and selects its step with a click, Enter or Space. */
function layoutGraph(steps, onSelect) {
  const measure = document.createElement("canvas").getContext("2d");
  measure.font = "12px system-ui, sans-serif";
  const label = (id) => (id.length > 36 ? `${id.slice(0, 35)}…` : id);
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "TB", nodesep: 22, ranksep: 36, marginx: 14, marginy: 14 });
  g.setDefaultEdgeLabel(() => ({}));
  const ids = new Set(steps.map((s) => s.id));
  for (const s of steps) {
    const width = Math.max(110, Math.ceil(measure.measureText(label(s.id)).width) + 28);
    g.setNode(s.id, { width, height: 44 });
  }
  for (const s of steps) for (const d of s.depends_on) if (ids.has(d)) g.setEdge(d, s.id);
  dagre.layout(g);
  const { width, height } = g.graph();
  const root = svg("svg", {
    width: Math.ceil(width),
    height: Math.ceil(height),
    viewBox: `0 0 ${Math.ceil(width)} ${Math.ceil(height)}`,
    role: "group",
    "aria-label": "Step graph",
  });
  const defs = svg("defs");
  const marker = svg("marker", {
    id: "arrow",
    viewBox: "0 0 10 10",
    refX: 9,
    refY: 5,
    markerWidth: 7,
    markerHeight: 7,
    orient: "auto",
  });
  marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }));
  defs.append(marker);
  root.append(defs);
  for (const e of g.edges()) {
    const points = g.edge(e).points;
    const d = points.map((p, i) => `${i ? "L" : "M"}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(" ");
    root.append(svg("path", { d, class: "edge", "marker-end": "url(#arrow)" }));
  }
  for (const s of steps) {
    const n = g.node(s.id);
    const node = svg("g", {
      class: "node",
      "data-step": s.id,
      transform: `translate(${(n.x - n.width / 2).toFixed(1)},${(n.y - n.height / 2).toFixed(1)})`,
      tabindex: 0,
      role: "button",
      "aria-label": s.id,
    });
    const tip = svg("title");
    tip.textContent = s.id;
    const name = svg("text", { x: n.width / 2, y: 18, "text-anchor": "middle" });
    name.textContent = label(s.id);
    const state = svg("text", { x: n.width / 2, y: 34, "text-anchor": "middle", class: "status" });
    node.append(tip, svg("rect", { width: n.width, height: n.height, rx: 7 }), name, state);
    node.addEventListener("click", () => onSelect(s.id));
    node.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        onSelect(s.id);
      }
    });
    root.append(node);
  }
  return root;
}

// ---------------------------------------------------------------- submit

const EXAMPLE = `# Write a greeting, read it back, expose it as an output.
name: hello
inputs:
  who:
    type: string
    default: world
steps:
  - id: write_greeting
    tool: filesystem
    action: write
    parameters:
      path: out/greeting.txt
      content: "hello, {{ who }}"
  - id: read_greeting
    tool: filesystem
    action: read
    parameters:
      path: "{{ write_greeting.result.path }}"
outputs:
  greeting: "{{ read_greeting.result.content }}"
`;

/** `name=value` lines; a value that parses as JSON is taken as JSON. */
function parseInputs(text) {
  const context = {};
  const errors = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith("#")) return;
    const eq = line.indexOf("=");
    if (eq <= 0) {
      errors.push(`inputs line ${i + 1}: expected name=value, got “${line}”`);
      return;
    }
    const name = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim();
    try {
      context[name] = JSON.parse(value);
    } catch {
      context[name] = value;
    }
  });
  return { context, errors };
}

function submitPage() {
  const source = el("textarea", {
    id: "pipeline-source",
    spellcheck: "false",
    autocomplete: "off",
    "aria-label": "Pipeline YAML",
    wrap: "off",
  });
  source.value = sessionStorage.getItem(DRAFT_KEY) ?? EXAMPLE;
  const gutter = el("pre", { class: "gutter", "aria-hidden": "true" });
  const inputs = el("textarea", {
    id: "pipeline-inputs",
    class: "inputs",
    spellcheck: "false",
    placeholder: "who=Ada\ncount=3",
  });
  inputs.value = sessionStorage.getItem(INPUTS_KEY) ?? "";
  const validateButton = el("button", { type: "button", id: "validate", text: "Validate" });
  const runButton = el("button", { type: "button", id: "run", class: "primary", text: "Run" });
  const storeName = el("input", { id: "store-name", name: "store-name", placeholder: "name", autocomplete: "off", pattern: "[A-Za-z0-9][A-Za-z0-9._-]*" });
  const storeButton = el("button", { type: "button", id: "store", text: "Store as" });
  const result = el("section", { id: "validation", "aria-live": "polite" });
  let marks = new Map(); // line -> messages

  function paintGutter() {
    const count = source.value.split("\n").length;
    const lines = [];
    for (let i = 1; i <= count; i++) {
      const msgs = marks.get(i);
      lines.push(msgs ? el("span", { class: "bad", title: msgs.join("\n"), text: String(i) }) : String(i), "\n");
    }
    fill(gutter, ...lines);
    gutter.scrollTop = source.scrollTop;
  }

  source.addEventListener("input", () => {
    sessionStorage.setItem(DRAFT_KEY, source.value);
    paintGutter();
  });
  source.addEventListener("scroll", () => (gutter.scrollTop = source.scrollTop));
  inputs.addEventListener("input", () => sessionStorage.setItem(INPUTS_KEY, inputs.value));

  function goToLine(line, column) {
    const lines = source.value.split("\n");
    let offset = 0;
    for (let i = 0; i < line - 1 && i < lines.length; i++) offset += lines[i].length + 1;
    offset += Math.max(0, (column || 1) - 1);
    source.focus();
    source.setSelectionRange(offset, offset);
    source.scrollTop = Math.max(0, (line - 4) * 18);
  }

  function showProblems(errors, warnings, heading) {
    marks = new Map();
    for (const p of errors) {
      if (!p.line) continue;
      if (!marks.has(p.line)) marks.set(p.line, []);
      marks.get(p.line).push(p.message);
    }
    paintGutter();
    const item = (p, cls) =>
      el(
        "li",
        { class: cls },
        p.line
          ? el("button", {
              type: "button",
              text: `Line ${p.line}${p.column ? `:${p.column}` : ""}`,
              onclick: () => goToLine(p.line, p.column),
            })
          : null,
        p.line ? " " : null,
        p.step ? `step ${p.step}: ` : "",
        p.message,
        p.code ? el("span", { class: "hint", text: ` (${p.code})` }) : null,
      );
    const listing = el("div", { class: "listing mono", id: "listing", "aria-label": "The pipeline with its errors" });
    const byLine = new Map();
    for (const p of errors) if (p.line) byLine.set(p.line, [...(byLine.get(p.line) || []), p]);
    source.value.split("\n").forEach((text, i) => {
      const problems = byLine.get(i + 1);
      listing.append(
        el(
          "div",
          { class: `ln${problems ? " bad" : ""}`, "data-line": i + 1 },
          el("span", { class: "no", text: String(i + 1) }),
          el("span", { text: text || " " }),
        ),
      );
      for (const p of problems || []) {
        listing.append(
          el("div", { class: "msg", "data-line": i + 1 }, `${p.column ? `column ${p.column}: ` : ""}${p.message}`),
        );
      }
    });
    fill(result,
      el("h2", { text: heading }),
      el("ul", { class: "problems", id: "problems" }, errors.map((p) => item(p, "error")), warnings.map((p) => item(p, "warning"))),
      byLine.size ? listing : null,
    );
  }

  function request() {
    const { context, errors } = parseInputs(inputs.value);
    if (errors.length) {
      showProblems(
        errors.map((message) => ({ message })),
        [],
        "The inputs are not name=value lines",
      );
      return null;
    }
    return { pipeline: source.value, context };
  }

  function showErrors(p) {
    const n = p.errors.length;
    showProblems(p.errors, p.warnings || [], `${n} error${n > 1 ? "s" : ""}: the pipeline is invalid`);
  }

  /** Validates (compile errors are an answer, not a failure: lenient
   * handling), then, for Run, submits a pipeline that compiled. */
  async function submit(run) {
    const body = request();
    if (!body) return null;
    clearNotice();
    validateButton.disabled = runButton.disabled = true;
    try {
      const v = await api("POST", "/pipelines/validate", body, { headers: { Prefer: "handling=lenient" } });
      if (!v.valid) {
        showErrors(v);
        return null;
      }
      return run ? await api("POST", "/executions", body) : v;
    } catch (e) {
      const p = e.problem || {};
      if (p.errors?.length) {
        showErrors(p);
      } else {
        fill(result);
        showNotice(`${p.title ? `${p.title}: ` : ""}${e.message}`);
      }
      return null;
    } finally {
      validateButton.disabled = runButton.disabled = false;
    }
  }

  validateButton.addEventListener("click", async () => {
    const v = await submit(false);
    if (!v) return;
    marks = new Map();
    paintGutter();
    fill(result,
      el("h2", { class: "valid", id: "valid", text: `Valid: ${v.name}, ${v.steps} step${v.steps === 1 ? "" : "s"}` }),
      el("p", {}, "Levels (steps in one level can run in parallel):"),
      el(
        "ol",
        { id: "levels" },
        v.levels.map((level) => el("li", { class: "mono", text: level.join(", ") })),
      ),
      v.warnings.length
        ? el("ul", { class: "problems" }, v.warnings.map((p) => el("li", { class: "warning", text: p.message })))
        : null,
    );
  });

  storeButton.addEventListener("click", async () => {
    const name = storeName.value.trim();
    if (!name) {
      storeName.focus();
      showNotice("Name the pipeline to store it.");
      return;
    }
    clearNotice();
    storeButton.disabled = true;
    try {
      const stored = await api("PUT", `/pipelines/${encodeURIComponent(name)}`, { pipeline: source.value });
      location.hash = `#/pipelines/${encodeURIComponent(stored.name)}?version=${stored.version}`;
    } catch (e) {
      const p = e.problem || {};
      if (p.errors?.length) showErrors(p);
      else showNotice(`${p.title ? `${p.title}: ` : ""}${e.message}`);
    } finally {
      storeButton.disabled = false;
    }
  });

  runButton.addEventListener("click", async () => {
    const x = await submit(true);
    if (x) location.hash = `#/executions/${x.id}`;
  });

  // Ctrl+Enter runs, as in most editors with a Run button.
  source.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      runButton.click();
    }
  });

  view.append(
    el("h1", { text: "Submit a pipeline" }),
    el(
      "p",
      { class: "hint" },
      "YAML as in the pipeline language reference. Validate compiles it and shows every error at its line; Run submits it (Ctrl+Enter); Store as keeps it by name, as a new version.",
    ),
    el("label", { for: "pipeline-source", text: "Pipeline" }),
    el("div", { class: "editor" }, gutter, source),
    el("div", { class: "panel", style: null }, el("label", { for: "pipeline-inputs", text: "Inputs (one name=value per line; JSON values allowed)" }), inputs),
    el("div", { class: "actions" }, validateButton, runButton, storeButton,
      el("label", { for: "store-name", class: "skip", text: "Name to store it as" }), storeName, el("button", {
      type: "button",
      id: "reset-example",
      text: "Load example",
      onclick: () => {
        source.value = EXAMPLE;
        sessionStorage.setItem(DRAFT_KEY, EXAMPLE);
        marks = new Map();
        paintGutter();
        fill(result);
      },
    })),
    result,
  );
  paintGutter();
  ready("submit");
  return {};
}

// ---------------------------------------------------------------- start

async function start() {
  try {
    const res = await fetch("/ui/session", { headers: { Accept: "application/json" } });
    if (res.ok) session = await res.json();
  } catch {
    // The API calls will say what is wrong.
  }
  document.getElementById("token-button").hidden = !session.auth;
  route();
}

start();
