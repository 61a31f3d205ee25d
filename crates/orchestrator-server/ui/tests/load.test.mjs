// How fast the console's pages are ready with 10,000 executions stored.
// Measured, not asserted: the numbers go to target/ui-tests/timings.json
// and the test output (timing belongs in benchmarks, not in pass/fail).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import { ARTIFACTS, openBrowser, screenshot, startServer } from "./harness.mjs";

const HISTORY = Number(process.env.UI_HISTORY || 10000);
const RUNS = 7;
const here = dirname(fileURLToPath(import.meta.url));

/** A full page load (not a hash change within the page), then the time from
 * navigation start to the page marking itself ready. */
async function readyAfter(page, url, name) {
  await page.goto("about:blank");
  await page.goto(url);
  await page.waitForSelector(`#view[data-ready="${name}"]`);
  return page.evaluate((mark) => performance.getEntriesByName(mark)[0].startTime, `ready:${name}`);
}

function summary(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    median_ms: Math.round(sorted[Math.floor(sorted.length / 2)]),
    max_ms: Math.round(sorted[sorted.length - 1]),
    runs: sorted.length,
  };
}

test(`pages are ready quickly with ${HISTORY} executions stored`, async () => {
  const server = await startServer();
  const chrome = await openBrowser();
  const page = await chrome.page();
  try {
    const ok = "name: seeded\nsteps:\n  - id: a\n    tool: filesystem\n    action: write\n    parameters: {path: a.txt, content: a}\n  - id: b\n    tool: filesystem\n    action: read\n    parameters: {path: '{{ a.result.path }}'}\n";
    const bad = "name: seeded-failing\nsteps:\n  - id: a\n    tool: filesystem\n    action: read\n    parameters: {path: none.txt}\n";
    const first = (await server.api("POST", "/executions", { pipeline: ok })).body.id;
    await server.api("POST", "/executions", { pipeline: bad, options: { max_retries: 1 } });
    for (let i = 0; i < 100; i++) {
      const list = (await server.api("GET", "/executions?limit=10")).body.items;
      if (list.every((x) => ["succeeded", "failed"].includes(x.status))) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    // A wide execution: 300 steps drawn as a graph.
    let wide = "name: wide\nsteps:\n  - id: start\n    tool: echo\n";
    for (let i = 0; i < 298; i++) wide += `  - id: s${i}\n    tool: echo\n    depends_on: [start]\n`;
    wide += `  - id: end\n    tool: echo\n    depends_on: [${Array.from({ length: 298 }, (_, i) => `s${i}`).join(", ")}]\n`;
    const wideId = (await server.api("POST", "/executions", { pipeline: wide })).body.id;
    for (let i = 0; i < 300; i++) {
      if ((await server.api("GET", `/executions/${wideId}`)).body.status === "succeeded") break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const total = Number(
      execFileSync("python3", [join(here, "seed.py"), server.database, String(HISTORY)], { encoding: "utf8" }).trim(),
    );
    assert.ok(total >= HISTORY, `seeded ${total}`);

    const pages = {
      "executions list (newest 50)": [`${server.base}/ui/#/executions`, "executions"],
      "executions list, status=failed": [`${server.base}/ui/#/executions?status=failed`, "executions"],
      "executions list, pipeline=seeded": [`${server.base}/ui/#/executions?pipeline=seeded`, "executions"],
      "execution page": [`${server.base}/ui/#/executions/${first}`, "execution"],
      "submit page": [`${server.base}/ui/#/submit`, "submit"],
      "execution page, 300 steps drawn": [`${server.base}/ui/#/executions/${wideId}`, "execution"],
    };
    const results = { executions: total, chromium: chrome.browser.version(), pages: {} };
    for (const [label, [url, name]] of Object.entries(pages)) {
      await readyAfter(page, url, name); // warm: assets cached, connection open
      const samples = [];
      for (let i = 0; i < RUNS; i++) samples.push(await readyAfter(page, url, name));
      results.pages[label] = summary(samples);
    }
    const rows = await page.goto(`${server.base}/ui/#/executions`).then(() =>
      page.waitForSelector('#view[data-ready="executions"]').then(() => page.$$eval("#executions tbody tr[data-id]", (r) => r.length)),
    );
    assert.equal(rows, 50, "a full first page");
    await page.goto(`${server.base}/ui/#/executions/${wideId}`);
    await page.waitForSelector('#view[data-ready="execution"]');
    assert.equal(await page.$$eval("#graph g.node.s-succeeded", (n) => n.length), 300);
    await screenshot(page, "10-wide-execution");
    await screenshot(page, "08-list-with-history");
    writeFileSync(join(ARTIFACTS, "timings.json"), `${JSON.stringify(results, null, 2)}\n`);
    console.log(`time to ready (navigation start → page drawn with its data), ${total} executions stored:`);
    for (const [label, s] of Object.entries(results.pages)) {
      console.log(`  ${label.padEnd(36)} median ${s.median_ms} ms, max ${s.max_ms} ms (${s.runs} loads)`);
    }
    assert.deepEqual(page.problems, []);
  } finally {
    await chrome.close();
    await server.stop();
  }
});
