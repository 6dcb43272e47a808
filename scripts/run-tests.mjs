// Runs every *.test.ts under the given folders (default: test/) with Node's test runner and tsx.
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";

const roots = process.argv.slice(2).length ? process.argv.slice(2) : ["test"];
const files = [];
const walk = (p) => {
  if (statSync(p).isDirectory()) for (const e of readdirSync(p).sort()) walk(join(p, e));
  else if (p.endsWith(".test.ts")) files.push(p);
};
roots.forEach(walk);
const concurrency = process.env.CI ? "2" : "4";
const r = spawnSync(process.execPath, ["--import", "tsx", "--test", `--test-concurrency=${concurrency}`, "--test-reporter=spec", ...files], { stdio: "inherit" });
process.exit(r.status ?? 1);
