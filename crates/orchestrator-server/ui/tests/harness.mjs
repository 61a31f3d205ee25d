// Starts real `orchestrator serve` processes on temporary SQLite databases
// and a headless Chromium for the console's browser tests.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const REPO = resolve(here, "../../../..");
export const ARTIFACTS = process.env.UI_ARTIFACTS || join(REPO, "target", "ui-tests");
mkdirSync(ARTIFACTS, { recursive: true });

const BIN = process.env.ORCHESTRATOR_BIN;
if (!BIN) throw new Error("set ORCHESTRATOR_BIN to the orchestrator binary (scripts/ui-test does)");
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** A server on its own database and workspace; `auth` turns tokens on and
 * creates an admin token with the CLI. */
export async function startServer({ auth = false, env = {} } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "orchestrator-ui-"));
  const workspace = join(dir, "workspace");
  mkdirSync(workspace);
  const database = `sqlite://${join(dir, "orchestrator.db")}`;
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const childEnv = {
    ...process.env,
    ORCHESTRATOR_AUTH_ENABLED: auth ? "true" : "false",
    ORCHESTRATOR_AUTH_PEPPER: "console-test-pepper",
    ORCHESTRATOR_LOG_LEVEL: "warn",
    ...env,
  };
  const flags = ["--database-url", database, "--workspace-root", workspace];
  const child = spawn(BIN, ["serve", "--bind", `127.0.0.1:${port}`, ...flags], {
    env: childEnv,
    stdio: ["ignore", "inherit", "inherit"],
  });
  const exited = new Promise((resolve) => child.on("exit", resolve));
  for (let i = 0; ; i++) {
    try {
      const res = await fetch(`${base}/ready`);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null) throw new Error(`the server exited with ${child.exitCode}`);
    if (i > 300) throw new Error("the server did not become ready in 30 s");
    await new Promise((r) => setTimeout(r, 100));
  }
  let token = null;
  if (auth) {
    token = execFileSync(BIN, ["token", ...flags, "create", "--name", "console-test", "--scope", "admin"], {
      env: childEnv,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    }).trim();
  }
  return {
    base,
    dir,
    workspace,
    database: join(dir, "orchestrator.db"),
    token,
    async api(method, path, body) {
      const headers = { "content-type": "application/json" };
      if (token) headers.authorization = `Bearer ${token}`;
      const res = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : null };
    },
    async stop() {
      child.kill("SIGTERM");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Chromium with a page that records console errors and page errors. */
export async function openBrowser() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
  return {
    browser,
    async page() {
      const context = await browser.newContext({ viewport: { width: 1360, height: 900 } });
      const page = await context.newPage();
      const problems = [];
      page.on("console", (m) => {
        if (m.type() === "error") problems.push(`console: ${m.text()}`);
      });
      page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
      page.problems = problems;
      return page;
    },
    close: () => browser.close(),
  };
}

export async function screenshot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}
