// Browser tests of the web console: real server, real SQLite, headless Chromium.
import assert from "node:assert/strict";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { openBrowser, screenshot, startServer } from "./harness.mjs";

let chrome;
before(async () => {
  chrome = await openBrowser();
});
after(async () => {
  await chrome?.close();
});

const REPAIRABLE = `name: repairable
steps:
  - id: prepare
    tool: filesystem
    action: write
    parameters: {path: ui/notes.txt, content: prepared}
  - id: optional
    tool: filesystem
    action: write
    condition: "{{ false }}"
    parameters: {path: ui/never.txt, content: never}
  - id: read_input
    tool: filesystem
    action: read
    depends_on: [prepare]
    parameters: {path: ui/input.txt}
  - id: publish
    tool: filesystem
    action: write
    parameters: {path: ui/out.txt, content: "{{ read_input.result.content }}"}
outputs:
  published: "{{ read_input.result.content }}"
`;

/** The fill colour the browser paints a step's node with. */
function fillOf(page, step) {
  return page.$eval(`#graph g.node[data-step="${step}"] rect`, (r) => getComputedStyle(r).fill);
}

async function typeInto(page, selector, text) {
  await page.fill(selector, text);
  await page.dispatchEvent(selector, "input");
}

test("submit through the console, watch it fail, repair it and recover", async () => {
  const server = await startServer({ auth: true });
  const page = await chrome.page();
  try {
    await page.goto(`${server.base}/`);
    // Authentication is on: the token is asked for once.
    await page.waitForSelector("#token-dialog[open]");
    await page.fill("#token-input", server.token);
    await page.keyboard.press("Enter");
    await page.waitForSelector('#view[data-ready="executions"]');
    assert.equal(await page.evaluate(() => sessionStorage.getItem("orchestrator.token")), server.token);
    assert.equal(await page.evaluate(() => localStorage.length), 0, "nothing is kept beyond the tab");

    // A pipeline with two errors: each is shown at its line.
    await page.click('a[data-nav="submit"]');
    await page.waitForSelector('#view[data-ready="submit"]');
    const broken = REPAIRABLE.replace("tool: filesystem\n    action: read", "tool: filesystm\n    action: read").replace(
      "depends_on: [prepare]",
      "depends_on: [prepare, nowhere]",
    );
    await typeInto(page, "#pipeline-source", broken);
    await page.click("#validate");
    await page.waitForSelector("#problems li");
    const lines = broken.split("\n");
    const toolLine = lines.findIndex((l) => l.includes("filesystm")) + 1;
    const depLine = lines.findIndex((l) => l.includes("nowhere")) + 1;
    const flagged = await page.$$eval("#listing .ln.bad", (els) => els.map((e) => Number(e.dataset.line)));
    assert.ok(flagged.includes(toolLine), `line ${toolLine} (unknown tool) flagged; flagged: ${flagged}`);
    assert.ok(flagged.includes(depLine), `line ${depLine} (unknown dependency) flagged; flagged: ${flagged}`);
    const toolMessage = await page.textContent(`#listing .msg[data-line="${toolLine}"]`);
    assert.match(toolMessage, /filesystm/);
    assert.ok(await page.$(`.gutter .bad`), "the editor's gutter marks the lines");
    await screenshot(page, "01-validate-errors");

    // Fixed: valid, then run.
    await typeInto(page, "#pipeline-source", REPAIRABLE);
    await page.click("#validate");
    await page.waitForSelector("#valid");
    assert.match(await page.textContent("#valid"), /4 steps/);
    await page.click("#run");
    await page.waitForSelector('#view[data-ready="execution"]');
    await page.waitForSelector('h1[data-status="failed"]', { timeout: 20000 });
    await page.waitForSelector('#graph g.node.s-failed[data-step="read_input"]');
    await page.waitForSelector('#graph g.node.s-skipped[data-step="optional"]');
    await page.waitForSelector('#graph g.node.s-succeeded[data-step="prepare"]');
    const failed = await fillOf(page, "read_input");
    const skipped = await fillOf(page, "optional");
    const succeeded = await fillOf(page, "prepare");
    assert.notEqual(failed, skipped, "failed and skipped steps are coloured differently");
    assert.notEqual(failed, succeeded);
    assert.notEqual(skipped, succeeded);
    // The failed step is selected and its error shown.
    assert.match(await page.textContent("#step-error"), /input\.txt/);
    await screenshot(page, "02-failed-and-skipped");

    // Repair the input and recover: only the failed step and its dependents run.
    const id = page.url().split("/").pop();
    mkdirSync(join(server.workspace, "ui"), { recursive: true });
    writeFileSync(join(server.workspace, "ui", "input.txt"), "repaired");
    await page.click("#recover");
    await page.waitForSelector("#confirm-dialog[open]");
    await screenshot(page, "03-recover-confirm");
    await page.click("#confirm-yes");
    await page.waitForSelector('h1[data-status="succeeded"]', { timeout: 20000 });
    await page.waitForSelector('#graph g.node.s-succeeded[data-step="read_input"]');
    await page.waitForSelector('#graph g.node.s-succeeded[data-step="publish"]');
    assert.match(await page.textContent("#outputs"), /repaired/);
    const view = (await server.api("GET", `/executions/${id}`)).body;
    const prepare = view.steps.find((s) => s.id === "prepare");
    assert.equal(prepare.attempt, 1, "the succeeded step was not run again");
    await screenshot(page, "04-recovered");

    // Recover from a checkpoint: exactly that step and its downstream run again.
    writeFileSync(join(server.workspace, "ui", "input.txt"), "second take");
    await page.selectOption("#recover-from", "read_input");
    await page.click("#recover");
    await page.click("#confirm-yes");
    await page.waitForFunction(() => document.querySelector("#notice").textContent.includes("read_input, publish"));
    await page.waitForSelector('h1[data-status="succeeded"]', { timeout: 20000 });
    await page.waitForFunction(() => document.querySelector("#outputs").textContent.includes("second take"));
    const again = (await server.api("GET", `/executions/${id}`)).body;
    assert.equal(again.steps.find((s) => s.id === "prepare").attempt, 1);
    assert.deepEqual(page.problems, []);
  } finally {
    await page.context().close();
    await server.stop();
  }
});

test("the list filters and pages, and works from the keyboard", async () => {
  const server = await startServer();
  const page = await chrome.page();
  try {
    const pipeline = "name: keyboard\nsteps:\n  - id: one\n    tool: filesystem\n    action: write\n    parameters: {path: k.txt, content: k}\n";
    const bad = "name: doomed\nsteps:\n  - id: one\n    tool: filesystem\n    action: read\n    parameters: {path: missing.txt}\n";
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push((await server.api("POST", "/executions", { pipeline })).body.id);
    const doomed = (await server.api("POST", "/executions", { pipeline: bad })).body.id;
    await page.goto(`${server.base}/ui/`);
    await page.waitForSelector('#view[data-ready="executions"]');
    // Auto-refresh brings every execution to its final state without a reload.
    await page.waitForFunction(
      (n) => document.querySelectorAll('#executions tr[data-status="succeeded"]').length === n,
      3,
      { timeout: 20000 },
    );
    await page.waitForSelector(`#executions tr[data-id="${doomed}"][data-status="failed"]`, { timeout: 20000 });

    // Filter by status with the keyboard only.
    await page.focus("#filter-status");
    await page.selectOption("#filter-status", "failed");
    await page.keyboard.press("Tab"); // to the pipeline field
    await page.keyboard.press("Enter"); // submits the filter form
    await page.waitForFunction(() => location.hash.includes("status=failed"));
    await page.waitForSelector('#view[data-ready="executions"]');
    const shown = await page.$$eval("#executions tbody tr[data-id]", (rows) => rows.map((r) => r.dataset.id));
    assert.deepEqual(shown, [doomed]);
    await screenshot(page, "05-list-filtered");

    // Open it by keyboard: Tab through the page to its link, Enter.
    await page.focus(`#executions tr[data-id="${doomed}"] a`);
    await page.keyboard.press("Enter");
    await page.waitForSelector('#view[data-ready="execution"]');
    await page.waitForSelector('h1[data-status="failed"]');
    // A graph node takes focus and Enter selects its step.
    await page.focus('#graph g.node[data-step="one"]');
    await page.keyboard.press("Enter");
    await page.waitForSelector("#step-title");
    assert.match(await page.textContent("#step-title"), /one/);

    // Paging: 2 per page over the 4 executions.
    await page.goto(`${server.base}/ui/#/executions`);
    await page.waitForSelector('#view[data-ready="executions"]');
    const all = await page.$$eval("#executions tbody tr[data-id]", (rows) => rows.map((r) => r.dataset.id));
    assert.equal(all.length, 4);
    assert.deepEqual([...all].sort(), [...ids, doomed].sort());
    const listed = await server.api("GET", "/executions?limit=2");
    await page.goto(`${server.base}/ui/#/executions?cursor=${encodeURIComponent(listed.body.next_cursor)}`);
    await page.waitForSelector('#view[data-ready="executions"]');
    const older = await page.$$eval("#executions tbody tr[data-id]", (rows) => rows.map((r) => r.dataset.id));
    assert.deepEqual(older, all.slice(2));

    // Data is shown as text, never run as markup.
    const hostile = '<img src=x onerror="window.pwned=1">';
    const named = `name: '${hostile}'\nsteps:\n  - id: one\n    tool: echo\n    parameters: {text: '<script>window.pwned=2</script>'}\n`;
    const hid = (await server.api("POST", "/executions", { pipeline: named })).body.id;
    await page.goto(`${server.base}/ui/#/executions/${hid}`);
    await page.waitForSelector('h1[data-status="succeeded"]', { timeout: 20000 });
    assert.match(await page.textContent("h1"), /<img src=x onerror/);
    await page.goto(`${server.base}/ui/#/executions`);
    await page.waitForSelector(`#executions tr[data-id="${hid}"]`);
    assert.equal(await page.evaluate(() => window.pwned), undefined);
    assert.equal(await page.$$eval("#view img, #view script", (n) => n.length), 0);
    assert.deepEqual(page.problems, []);
  } finally {
    await page.context().close();
    await server.stop();
  }
});

test("a running step shows live and cancel stops it", async () => {
  const server = await startServer({ env: { ORCHESTRATOR_ENABLE_TERMINAL: "true" } });
  const page = await chrome.page();
  try {
    const pipeline =
      "name: slow\nsteps:\n  - id: wait\n    tool: terminal\n    action: run\n    parameters: {command: 'sleep 60'}\n  - id: after\n    tool: filesystem\n    action: write\n    depends_on: [wait]\n    parameters: {path: after.txt, content: x}\n";
    const id = (await server.api("POST", "/executions", { pipeline })).body.id;
    await page.goto(`${server.base}/ui/#/executions/${id}`);
    await page.waitForSelector('#view[data-ready="execution"]');
    // The stream moves the node to running without a reload.
    await page.waitForSelector('#graph g.node.s-running[data-step="wait"]', { timeout: 20000 });
    await page.waitForSelector("#live.on");
    await screenshot(page, "06-running");
    await page.click("#cancel");
    await page.waitForSelector("#confirm-dialog[open]");
    await page.keyboard.press("Escape"); // changing one's mind keeps it running
    assert.equal((await server.api("GET", `/executions/${id}`)).body.status, "running");
    await page.click("#cancel");
    await page.click("#confirm-yes");
    await page.waitForSelector('h1[data-status="cancelled"]', { timeout: 10000 });
    await page.waitForSelector('#graph g.node.s-cancelled[data-step="after"]');
    assert.equal((await server.api("GET", `/executions/${id}`)).body.status, "cancelled");
    await screenshot(page, "07-cancelled");
    assert.deepEqual(page.problems, []);
  } finally {
    await page.context().close();
    await server.stop();
  }
});

test("an execution that used a model shows its tokens and cost", async () => {
  // A local OpenAI-compatible endpoint speaking the real wire format.
  const { createServer } = await import("node:http");
  const requests = [];
  const provider = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      requests.push({ url: req.url, body: JSON.parse(body) });
      res.writeHead(200, { "content-type": "application/json" });
      res.end(
        JSON.stringify({
          id: "chatcmpl-1",
          object: "chat.completion",
          model: "tiny",
          choices: [{ index: 0, message: { role: "assistant", content: "A short summary." }, finish_reason: "stop" }],
          usage: { prompt_tokens: 1200, completion_tokens: 300, total_tokens: 1500 },
        }),
      );
    });
  });
  await new Promise((r) => provider.listen(0, "127.0.0.1", r));
  // The provider is on loopback, which registered models may not reach by default.
  const server = await startServer({ env: { ORCHESTRATOR_MODELS_ALLOW_PRIVATE_NETWORKS: "true" } });
  const page = await chrome.page();
  try {
    const model = {
      id: "local-tiny",
      provider: "openai",
      model: "tiny",
      base_url: `http://127.0.0.1:${provider.address().port}/v1`,
      capabilities: ["generate", "summarization"],
      cost_per_1k_tokens: { input: 0.001, output: 0.002 },
    };
    assert.equal((await server.api("POST", "/models", model)).status, 201);
    const pipeline =
      "name: summary\nsteps:\n  - id: summarise\n    action: generate\n    model: local-tiny\n    parameters: {prompt: 'Summarise: a long text', max_tokens: 50}\n";
    const id = (await server.api("POST", "/executions", { pipeline })).body.id;
    await page.goto(`${server.base}/ui/#/executions/${id}`);
    await page.waitForSelector('h1[data-status="succeeded"]', { timeout: 20000 });
    const meta = await page.textContent("dl.meta");
    assert.match(meta, /Tokens in \/ out\s*1200 \/ 300/);
    assert.match(meta, /Cost\s*\$0\.001800/);
    assert.match(meta, /local-tiny/);
    const step = await page.textContent("#step-detail");
    assert.match(step, /1200 \/ 300/);
    assert.match(step, /A short summary\./);
    assert.equal(requests.length, 1);
    assert.equal(requests[0].url, "/v1/chat/completions");
    await screenshot(page, "09-model-usage");
    assert.deepEqual(page.problems, []);
  } finally {
    await page.context().close();
    await server.stop();
    provider.close();
  }
});

test("a step waiting for a person shows its question and takes the answer", async () => {
  const server = await startServer();
  const page = await chrome.page();
  try {
    const pipeline =
      "name: gate\nsteps:\n  - id: gate\n    tool: approval-gate\n    action: execute\n    parameters: {title: 'Deploy 2.4?', content: 'release notes'}\n  - id: deploy\n    tool: echo\n    condition: '{{ gate.approved }}'\n";
    const id = (await server.api("POST", "/executions", { pipeline })).body.id;
    await page.goto(`${server.base}/ui/#/executions/${id}`);
    await page.waitForSelector('#view[data-ready="execution"]');
    await page.waitForSelector('#graph g.node.s-waiting[data-step="gate"]', { timeout: 20000 });
    await page.click('#graph g.node[data-step="gate"]');
    await page.waitForSelector("#answer-body");
    assert.match(await page.textContent("#answer-question"), /Deploy 2\.4\?/);
    await screenshot(page, "09-waiting-for-an-answer");

    // A rejection without a reason is refused, with the reason shown.
    await page.fill("#answer-body", '{"action": "reject"}');
    await page.click("#answer-send");
    await page.waitForSelector("#answer-error:not([hidden])");
    assert.match(await page.textContent("#answer-error"), /reason/);

    await page.fill("#answer-body", '{"action": "approve"}');
    await page.click("#answer-send");
    await page.waitForSelector('h1[data-status="succeeded"]', { timeout: 20000 });
    const view = (await server.api("GET", `/executions/${id}`)).body;
    assert.equal(view.steps.find((s) => s.id === "gate").result.result.approved, true);
    assert.equal(view.steps.find((s) => s.id === "deploy").status, "succeeded");
    // The refused answer is the only failed request.
    assert.deepEqual(
      page.problems.filter((p) => !p.includes("status of 422")),
      [],
    );
  } finally {
    await page.context().close();
    await server.stop();
  }
});

test("stored pipelines, the waiting list and the links between parent and child executions", async () => {
  const server = await startServer();
  const page = await chrome.page();
  try {
    // Store from the Submit page.
    await page.goto(`${server.base}/ui/#/submit`);
    await page.waitForSelector('#view[data-ready="submit"]');
    const child =
      "name: asker\nsteps:\n  - id: ask\n    tool: approval-gate\n    action: execute\n    parameters: {title: 'Ship it?', content: 'v1'}\noutputs:\n  approved: '{{ ask.approved }}'\n";
    await typeInto(page, "#pipeline-source", child);
    await page.fill("#store-name", "asker");
    await page.click("#store");
    await page.waitForSelector('#view[data-ready="pipeline"]');
    assert.match(await page.textContent("#pipeline-source"), /Ship it\?/);
    assert.match(await page.textContent("#pipeline-version"), /1 \(newest\)/);
    await page.goto(`${server.base}/ui/#/pipelines`);
    await page.waitForSelector('#view[data-ready="pipelines"]');
    assert.equal(await page.textContent('#pipelines tr[data-name="asker"] td:nth-child(2)'), "1");
    await screenshot(page, "10-stored-pipelines");

    // A parent runs it as a child; the child's question shows in the waiting list.
    const parent =
      "name: parent\nsteps:\n  - id: run_asker\n    tool: pipeline-executor\n    action: execute\n    parameters: {pipeline: asker}\n";
    const id = (await server.api("POST", "/executions", { pipeline: parent })).body.id;
    await page.goto(`${server.base}/ui/#/waiting`);
    await page.waitForSelector('#view[data-ready="waiting"]');
    await page.waitForSelector('#waiting tr[data-step="ask"]', { timeout: 20000 });
    await screenshot(page, "11-waiting-list");
    await page.click('#waiting tr[data-step="ask"] td:first-child a');
    await page.waitForSelector("#answer-body");
    // The child names its parent.
    assert.match(await page.textContent("#parent-link"), new RegExp(`${id} · step run_asker`));
    await page.fill("#answer-body", '{"action": "approve"}');
    await page.click("#answer-send");
    await page.waitForSelector('h1[data-status="succeeded"]', { timeout: 20000 });
    // Up to the parent, which lists its child.
    await page.click("#parent-link");
    await page.waitForSelector('#view[data-ready="execution"]');
    await page.waitForSelector('h1[data-status="succeeded"]', { timeout: 20000 });
    await page.waitForSelector("#child-executions tbody tr");
    assert.match(await page.textContent("#child-executions"), /asker/);
    assert.match(await page.textContent("#child-link"), /Child execution/);
    await screenshot(page, "12-parent-with-child");
    assert.deepEqual(page.problems, []);
  } finally {
    await page.context().close();
    await server.stop();
  }
});

test("a step's log shows live while it runs and stays after it failed", async () => {
  const server = await startServer({ env: { ORCHESTRATOR_ENABLE_TERMINAL: "true" } });
  const page = await chrome.page();
  try {
    const pipeline =
      "name: noisy\nsteps:\n  - id: build\n    tool: terminal\n    action: run\n    max_retries: 1\n    parameters: {command: 'echo compiling; sleep 1; echo step two; echo boom >&2; sleep 1; exit 3'}\n";
    const id = (await server.api("POST", "/executions", { pipeline })).body.id;
    await page.goto(`${server.base}/ui/#/executions/${id}?step=build`);
    await page.waitForSelector('#view[data-ready="execution"]');
    // Live: the first line shows while the step still runs.
    await page.waitForSelector('#step-log span[data-seq="1"]', { timeout: 20000 });
    assert.match(await page.textContent("#step-log"), /compiling/);
    assert.notEqual(await page.getAttribute("h1", "data-status"), "failed");
    await page.waitForSelector('h1[data-status="failed"]', { timeout: 20000 });
    await page.waitForSelector("#step-log .l-stderr");
    const text = await page.textContent("#step-log");
    // stdout and stderr are two pipes: their lines interleave as they are read.
    assert.match(text, /compiling\n(.*\n)?step two\n/);
    assert.match(await page.textContent("#step-log .l-stderr"), /boom/);
    await screenshot(page, "13-step-log");
    assert.deepEqual(page.problems, []);
  } finally {
    await page.context().close();
    await server.stop();
  }
});

test("Swagger UI's prefilled submission runs as it stands", async () => {
  const server = await startServer();
  const page = await chrome.page();
  try {
    await page.goto(`${server.base}/swagger-ui/`);
    const op = "#operations-executions-create_execution";
    await page.waitForSelector(op, { timeout: 20000 });
    await page.click(`${op} .opblock-summary`);
    await page.click(`${op} button.try-out__btn`);
    const body = await page.inputValue(`${op} textarea.body-param__text`);
    assert.match(body, /"pipeline": "name: hello/);
    await page.click(`${op} button.execute`);
    await page.waitForSelector(`${op} .live-responses-table tbody .response-col_status`, { timeout: 20000 });
    const status = (await page.textContent(`${op} .live-responses-table tbody .response-col_status`)).trim();
    assert.equal(status, "201");
    await screenshot(page, "14-swagger-submit");
    // It ran: the execution is there and succeeded.
    const listed = await server.api("GET", "/executions?pipeline=hello");
    assert.equal(listed.body.items.length, 1);
    assert.deepEqual(page.problems, []);
  } finally {
    await page.context().close();
    await server.stop();
  }
});
