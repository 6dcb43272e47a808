/**
 * npm run bench:compare -- [--targets parley,parley-postgres,ejabberd,prosody] [--scenarios s0,s1,s2,s3,s4,s5]
 *                          [--runs 3] [--once s1] [--users N] [--duration S] [--no-docs]
 *                          [--render bench/results/compare-….json]   (the table again, from saved results)
 *
 * Runs the scenarios against each target in turn — run 1 of every target, then run 2, so drift on a
 * shared machine spreads over all of them — with only the target under test running (the peers
 * are stopped, reset and started by ../shared/peers). Writes a markdown table of medians with
 * Parley/peer and Parley/S0 ratios to bench/results/ and into docs/PERFORMANCE.md.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync, mkdirSync, existsSync } from "node:fs";
import { cpus, release, totalmem } from "node:os";
import { fileURLToPath } from "node:url";
import { log, median } from "./common.js";
import { canPin } from "./proc.js";
import { PEERS, resolveTarget, type Target, type TargetOptions } from "./targets.js";
import { RESULTS_DIR, pinGenerator, saveRaw, SCENARIOS, TARGET_SCENARIOS, type Scenario } from "./run.js";
import { s0, type ScenarioOptions, type ScenarioResult } from "./scenarios.js";
import { Connection } from "./xmpp.js";

const args = process.argv.slice(2);
const option = (name: string, fallback: string) => { const i = args.indexOf(`--${name}`); return i === -1 ? fallback : args[i + 1]!; };
const targets = option("targets", "parley,parley-postgres,ejabberd,prosody").split(",");
const scenarios = option("scenarios", SCENARIOS.join(",")).split(",") as Scenario[];
const runs = Number(option("runs", "3"));
const usersOption = args.includes("--users") ? Number(option("users", "0")) : undefined;
const writeDocs = !args.includes("--no-docs");
/** Scenarios run in the first round only: S1's 10,000 logins take minutes per server. */
const once = option("once", "s1").split(",");
const durationSeconds = args.includes("--duration") ? Number(option("duration", "5")) : undefined;

/** Parley on Postgres is only of interest where storage is on the path: the offline store. */
const POSTGRES_SCENARIOS: readonly Scenario[] = ["s4"];

function peers(...command: string[]): void {
  // Started under taskset, a server sees one CPU from its first instruction: the BEAM then starts
  // one scheduler instead of two that would spin against each other on a core pinned afterwards.
  const [file, argv] = canPin() && command[0] === "start" ? ["taskset", ["-c", "0", PEERS, ...command]] : [PEERS, command];
  execFileSync(file, argv, { stdio: ["ignore", "ignore", "inherit"] });
}

function targetOptions(name: string): TargetOptions {
  return {
    target: name === "parley-postgres" ? "parley" : name, tls: "direct", sasl: "scram-sha-1",
    storage: name === "parley-postgres" ? "postgres" : "sqlite",
  };
}

async function tlsParameters(target: Target): Promise<string> {
  const c = new Connection(target.endpoint);
  await c.open();
  const socket = c.socket as import("node:tls").TLSSocket;
  const cert = socket.getPeerCertificate();
  const described = `${socket.getProtocol()} ${socket.getCipher().name}, ${cert.asn1Curve ? `EC ${cert.asn1Curve}` : `RSA-${cert.bits}`} certificate`;
  c.destroy();
  return described;
}

async function runTarget(name: string, run: number, results: ScenarioResult[], tls: Map<string, string>): Promise<void> {
  const wanted = scenarios.filter((s) => s !== "s0" && (run === 1 || !once.includes(s)) && (name !== "parley-postgres" || POSTGRES_SCENARIOS.includes(s)));
  if (!wanted.length) return;
  const isPeer = name === "prosody" || name === "ejabberd";
  if (isPeer) { peers("stop", "all"); peers("reset", name); peers("start", name); }
  else if (existsSync(PEERS)) peers("stop", "all");
  const target = await resolveTarget(targetOptions(name));
  const label = name === "parley-postgres" ? "parley-postgres" : target.name;
  try {
    if (!tls.has(label)) tls.set(label, await tlsParameters(target));
    for (const scenario of wanted) {
      const options: ScenarioOptions = { register: true, prefix: "lt", durationSeconds, users: usersOption === undefined ? undefined : scenario === "s5" ? Math.min(usersOption, 256) : usersOption };
      log(`run ${run}/${runs}: ${scenario} against ${label}`);
      const result = { ...(await TARGET_SCENARIOS[scenario as Exclude<Scenario, "s0">](target, options)), target: label, run };
      saveRaw(result);
      results.push(result);
    }
  } finally {
    await target.stop();
    if (isPeer) peers("stop", name);
  }
}

/** A table row; its label says with ↑/↓ which way is better. */
interface Row { label: string; scenario: Scenario; figure: string; s0?: { figure: string } }
const ROWS: Row[] = [
  { label: "S3 1:1 messages/s at p99 < 50 ms, no loss ↑", scenario: "s3", figure: "maxMessagesPerSecond", s0: { figure: "relayMaxRate" } },
  { label: "S3 server CPU-seconds per 10k messages at that rate ↓", scenario: "s3", figure: "serverCpuSecondsPer10kAtMax" },
  { label: "S3 p99 ms at 1,000 msg/s ↓", scenario: "s3", figure: "p99msAt1000", s0: { figure: "floorP99ms" } },
  { label: "S5 room deliveries/s at p99 < 50 ms, 256 occupants ↑", scenario: "s5", figure: "maxDeliveriesPerSecond" },
  { label: "S5 seconds for 256 occupants to join ↓", scenario: "s5", figure: "joinSeconds" },
  { label: "S1 KB of server memory per idle TLS session ↓", scenario: "s1", figure: "idleKBPerSession", s0: { figure: "idleTlsKB" } },
  { label: "S2 logins/s at p99 < 1 s (TLS+SCRAM+bind+roster+presence) ↑", scenario: "s2", figure: "maxLoginsPerSecond" },
  { label: "S4 offline messages stored/s (acked, p99 < 50 ms) ↑", scenario: "s4", figure: "maxStoredPerSecond" },
  { label: "S4 offline messages drained/s at login ↑", scenario: "s4", figure: "drainPerSecondAtMax" },
];

function table(results: ScenarioResult[], columns: string[]): string {
  const cell = (target: string, scenario: string, figure: string) => {
    const values = results.filter((r) => r.target === target && r.scenario === scenario).map((r) => r.headline[figure] ?? NaN);
    const m = median(values);
    if (!Number.isFinite(m)) return { text: "–", value: NaN };
    const finite = values.filter(Number.isFinite);
    const spread = finite.length > 1 ? ` (${Math.min(...finite)}–${Math.max(...finite)})` : "";
    return { text: `${fmt(m)}${spread}`, value: m };
  };
  const peersIn = columns.filter((c) => c === "ejabberd" || c === "prosody");
  const header = ["figure (median of runs, range)", ...columns, "S0 bare Node TLS", ...peersIn.map((p) => `Parley / ${p}`), "Parley / S0"];
  const lines = [`| ${header.join(" | ")} |`, `|${header.map(() => "---").join("|")}|`];
  for (const row of ROWS) {
    if (!scenarios.includes(row.scenario)) continue;
    const cells = columns.map((c) => cell(c, row.scenario, row.figure));
    const parley = cells[columns.indexOf("parley")]?.value ?? NaN;
    const base = row.s0 ? cell("node-tls-relay", "s0", row.s0.figure) : { text: "", value: NaN };
    const ratio = (a: number, b: number) => (Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? `${(a / b).toFixed(2)}×` : "–");
    lines.push(`| ${[row.label, ...cells.map((c) => c.text), base.text || "", ...peersIn.map((p) => ratio(parley, cells[columns.indexOf(p)]!.value)), row.s0 ? ratio(parley, base.value) : ""].join(" | ")} |`);
  }
  return lines.join("\n");
}

const fmt = (v: number) => (Math.abs(v) >= 100 ? Math.round(v).toLocaleString("en-US") : String(Math.round(v * 100) / 100));

function currentCommit(): string {
  try {
    const head = execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--", "src"], { encoding: "utf8" }).trim() !== "";
    return dirty ? `${head} with uncommitted changes in src/` : head;
  } catch { return "unknown"; }
}

function machine(): string {
  const cpu = cpus()[0]?.model ?? "unknown CPU";
  let openssl = process.versions.openssl;
  try { openssl = execFileSync("openssl", ["version"], { encoding: "utf8" }).trim(); } catch { /* Node's own is shown */ }
  return `${cpus().length} × ${cpu}, ${Math.round(totalmem() / 2 ** 30)} GiB, Linux ${release()}, Node ${process.version} (its OpenSSL ${process.versions.openssl}; system ${openssl})`;
}

/** `--render FILE.json` rebuilds the table of an earlier comparison from its raw results. */
const renderFrom = args.includes("--render") ? option("render", "") : undefined;
const results: ScenarioResult[] = renderFrom ? JSON.parse(readFileSync(renderFrom, "utf8")) : [];
const saved = renderFrom ? (JSON.parse(readFileSync(renderFrom.replace(/\.json$/, ".meta.json"), "utf8")) as { tls: [string, string][]; commit: string }) : undefined;
const tls = new Map<string, string>(saved?.tls ?? []);
const commit = saved?.commit ?? currentCommit();
if (!renderFrom) pinGenerator();
for (let run = 1; run <= (renderFrom ? 0 : runs); run++) {
  if (scenarios.includes("s0") && (run === 1 || !once.includes("s0"))) {
    log(`run ${run}/${runs}: s0 (bare Node TLS relay)`);
    if (existsSync(PEERS)) peers("stop", "all");
    const result = { ...(await s0({ register: false, prefix: "lt", users: usersOption, durationSeconds })), run };
    saveRaw(result);
    results.push(result);
  }
  for (const name of targets) await runTarget(name, run, results, tls);
}

const columns = targets.filter((t) => results.some((r) => r.target === t) || t === "parley");
const versions = [...new Set(results.map((r) => `${r.target} ${r.version}`))].join("; ");
const rounds = Math.max(...results.map((r) => (r as ScenarioResult & { run: number }).run));
const takenAt = renderFrom ? (/compare-(\d{4}-\d{2}-\d{2})-(\d{2})-(\d{2})/.exec(renderFrom) ?? []).slice(1) : [];
const stamp = renderFrom ? `${takenAt[0]}-${takenAt[1]}-${takenAt[2]}` : new Date().toISOString().slice(0, 16).replace(/[:T]/g, "-");
const report = `## Comparison of ${stamp.slice(0, 10)} (${rounds} round${rounds > 1 ? "s" : ""})

${table(results, columns)}

- Machine: ${machine()}. Server pinned to CPU 0, generator to CPU 1 (\`taskset -a\`).
- Versions: ${versions}. Parley at commit ${commit}.
- TLS as negotiated by the generator: ${[...tls].map(([t, d]) => `${t}: ${d}`).join("; ")}.
- Generator: \`bench/load\`, direct TLS (XEP-0368), SCRAM-SHA-1, open-loop rates; a step counts only if
  the generator used < 90 % of its core. Raw results: \`bench/results/raw/\`.
`;
mkdirSync(RESULTS_DIR, { recursive: true });
const out = `${RESULTS_DIR}compare-${stamp}.md`;
writeFileSync(out, report);
writeFileSync(out.replace(/\.md$/, ".json"), JSON.stringify(results, null, 2));
writeFileSync(out.replace(/\.md$/, ".meta.json"), JSON.stringify({ tls: [...tls], commit }));
console.log(report);
log(`written ${out}`);
if (writeDocs) {
  const docs = fileURLToPath(new URL("../../docs/PERFORMANCE.md", import.meta.url));
  const text = readFileSync(docs, "utf8");
  const [begin, end] = ["<!-- compare:begin -->", "<!-- compare:end -->"];
  const updated = text.replace(new RegExp(`${begin}[\\s\\S]*${end}`), `${begin}\n${report}\n${end}`);
  writeFileSync(docs, updated);
  log(`updated ${docs}`);
}
