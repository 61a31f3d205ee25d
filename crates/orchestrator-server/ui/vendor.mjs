// Copies the layout library from node_modules into vendor/ (committed, so
// `cargo build` embeds it without network). Run after changing its version:
// npm ci && npm run vendor
import { readFileSync, writeFileSync } from "node:fs";

const dist = "node_modules/@dagrejs/dagre/dist";
const { version } = JSON.parse(readFileSync("node_modules/@dagrejs/dagre/package.json", "utf8"));
const license = readFileSync(`${dist}/dagre.min.js.LEGAL.txt`, "utf8").trim();
const code = readFileSync(`${dist}/dagre.min.js`, "utf8")
  .split("\n")
  .filter((line) => !line.startsWith("//# sourceMappingURL") && !line.includes("For license information"))
  .join("\n")
  .trim();
writeFileSync("vendor/dagre.min.js", `/*! @dagrejs/dagre ${version} */\n${license}\n${code}\n`);
console.log(`vendor/dagre.min.js: @dagrejs/dagre ${version}`);
