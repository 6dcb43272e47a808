/**
 * npm run bench -- <scenario> [options]: Parley's load generator, for any XMPP server.
 *
 *   scenarios  s0 (machine limits: bare Node TLS relay), s1 (idle sessions), s2 (login storm),
 *              s3 (1:1 messaging), s4 (offline store and drain), s5 (256-occupant room), all;
 *              s6 (Parley over WebSocket next to TCP: S3, S1 and S2 on each, one fresh server each)
 *              s7 (login paths: classic STARTTLS and direct TLS, SASL2 + Bind 2, FAST + Bind 2, FAST + inline
 *                  resumption, both FAST ones again resuming TLS, and bare TLS handshakes (full, resumed):
 *                  round trips, ms to the first message, server CPU per login; then S2 classic and FAST)
 *              s8 (S3 at one rate, steps alternating between TCP and WebSocket users on one server:
 *                  server CPU-s per 10k messages side by side; --rounds N, default 3)
 *   --target   parley (started here, pinned to CPU 0) | prosody | ejabberd (../shared/peers) | host:port
 *   --domain D --tls direct|starttls --sasl scram-sha-1|scram-sha-256|plain --storage sqlite|postgres|memory (parley)
 *   --login classic|sasl2|fast   (S2: how the storm logs in)   --logins N   (S7: logins per path)
 *   --paths classic,tls-full,...  (S7: only these paths)   --no-storms   (S7: the paths only, no S2 storms)
 *   --tls-resume       (S2 with sasl2/fast: each device resumes its last TLS session, as phones do)
 *   --transport tcp|websocket   (parley: XMPP over WebSocket, RFC 7395, on its HTTPS port)
 *   --cert kit|rsa|ecdsa   (parley: the kit's RSA-2048 certificate, default, or a self-signed RSA-2048 / ECDSA P-256 one)
 *   --nodes N          (parley: a cluster, `parley start --nodes N`, on Postgres and Redis with a fresh schema
 *                       and key prefix; N = 1 is one node with Redis; CPU and memory are the primary's and
 *                       all workers'; S3 pairs users at random, so about (N-1)/N of messages cross nodes)
 *   --pairs random|cross  (S3 on a cluster: users paired at random, the default, or each with one on another node)
 *   --archive N        (parley on SQLite: start on a database that already holds N archived 1:1 messages among
 *                       10,000 accounts named as --prefix names them; seeded once, cached in the temp dir)
 *   --server-cpus L    (parley: the CPUs its processes are pinned to, a taskset list; default 0, the generator has 1)
 *   --users N --rates 1000,2000 (or --rate R) --duration S --settle S --runs K --no-register
 *   --sm               (S3: the pairs enable stream management, so every message takes durable live delivery)
 *   --server-pid PID   (host:port targets: the process to read CPU and memory from)
 *   --prefix P         account names P0, P1, ... (default "lt"), password "pw-" + name
 *   --accounts-command "prosodyctl register {user} {domain} {password}"   instead of in-band registration
 *
 * The generator pins itself to CPU 1 and the server to CPU 0 where the machine has two cores.
 * Results: JSON on stdout and in bench/results/raw/; with --runs K > 1, the medians of each headline
 * figure too, in bench/results/<scenario>-<target>-<date>.json.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { canPin, pin } from "./proc.js";
import { resolveTarget, type TargetOptions } from "./targets.js";
import { s0, s1, s2, s3, s4, s5, type ScenarioOptions, type ScenarioResult } from "./scenarios.js";
import { log, median } from "./common.js";
import { s6, s8 } from "./websocket.js";
import { s7 } from "./login-paths.js";
import { LOGIN_MODES, type LoginMode, type SaslMechanism } from "./xmpp.js";

export const SCENARIOS = ["s0", "s1", "s2", "s3", "s4", "s5"] as const;
export type Scenario = (typeof SCENARIOS)[number];
/** S6 and S8 compare the transports, S7 the ways of logging in; none is part of `all`. */
export type RunnableScenario = Scenario | "s6" | "s7" | "s8";

export interface Args { scenarios: RunnableScenario[]; target: TargetOptions; scenario: ScenarioOptions; runs: number }

export function parseArgs(argv: string[]): Args {
  const args = [...argv];
  const take = (name: string) => {
    const i = args.indexOf(`--${name}`);
    if (i === -1) return undefined;
    const [, value] = args.splice(i, 2);
    if (value === undefined) throw new Error(`--${name} needs a value`);
    return value;
  };
  const flag = (name: string) => { const i = args.indexOf(`--${name}`); if (i !== -1) args.splice(i, 1); return i !== -1; };
  const num = (name: string) => { const v = take(name); return v === undefined ? undefined : Number(v); };
  const rate = take("rate");
  const storage = take("storage");
  const nodes = num("nodes");
  const rates = take("rates") ?? rate;
  const archive = num("archive");
  const parsed: Args = {
    target: {
      target: take("target") ?? "parley", domain: take("domain"),
      tls: (take("tls") ?? "direct") as "direct" | "starttls", sasl: (take("sasl") ?? "scram-sha-1") as SaslMechanism,
      storage: (storage ?? (nodes ? "postgres" : "sqlite")) as "sqlite" | "postgres" | "memory", serverPid: num("server-pid"), mucDomain: take("muc-domain"),
      transport: (take("transport") ?? "tcp") as "tcp" | "websocket", cert: take("cert") as TargetOptions["cert"], nodes, serverCpus: take("server-cpus"),
    },
    scenario: {
      users: num("users"), rates: rates?.split(",").map(Number), durationSeconds: num("duration"), settleSeconds: num("settle"),
      register: !flag("no-register"), prefix: take("prefix") ?? "lt", accountsCommand: take("accounts-command"),
      login: take("login") as LoginMode | undefined, logins: num("logins"), paths: take("paths")?.split(","), storms: !flag("no-storms"), resumeTls: flag("tls-resume"), streamManagement: flag("sm"), rounds: num("rounds"),
      pairs: take("pairs") as "random" | "cross" | undefined,
    },
    runs: num("runs") ?? 1,
    scenarios: [],
  };
  if (archive !== undefined) {
    if (!Number.isInteger(archive) || archive < 1) throw new Error("--archive takes a whole number of records ≥ 1");
    parsed.target.archive = { records: archive, prefix: parsed.scenario.prefix };
  }
  for (const a of args) {
    if (a === "all") parsed.scenarios.push(...SCENARIOS);
    else if ((SCENARIOS as readonly string[]).includes(a) || a === "s6" || a === "s7" || a === "s8") parsed.scenarios.push(a as RunnableScenario);
    else throw new Error(`unknown argument ${a}`);
  }
  if (!parsed.scenarios.length) throw new Error(`name a scenario: ${SCENARIOS.join(", ")}, s6, s7, s8 or all`);
  if (!["scram-sha-1", "scram-sha-256", "plain"].includes(parsed.target.sasl)) throw new Error("--sasl is scram-sha-1, scram-sha-256 or plain");
  if (parsed.scenario.login && !LOGIN_MODES.includes(parsed.scenario.login)) throw new Error(`--login is ${LOGIN_MODES.join(", ")}`);
  if (!["direct", "starttls"].includes(parsed.target.tls)) throw new Error("--tls is direct or starttls");
  if (!["tcp", "websocket"].includes(parsed.target.transport!)) throw new Error("--transport is tcp or websocket");
  if (parsed.target.cert && !["kit", "rsa", "ecdsa"].includes(parsed.target.cert)) throw new Error("--cert is kit, rsa or ecdsa");
  if (parsed.scenario.pairs && !["random", "cross"].includes(parsed.scenario.pairs)) throw new Error("--pairs is random or cross");
  if (nodes !== undefined && (!Number.isInteger(nodes) || nodes < 1)) throw new Error("--nodes takes a whole number ≥ 1");
  // A cluster shares Postgres (docs/CLUSTER.md): Parley refuses it on SQLite or memory.
  if (nodes !== undefined && parsed.target.storage !== "postgres") throw new Error("--nodes runs on Postgres: leave out --storage or give --storage postgres");
  return parsed;
}

/** The scenarios that run against a target (S0 measures the machine, not a server). */
export const TARGET_SCENARIOS = { s1, s2, s3, s4, s5 } as const;
const RUNNABLE_TARGET_SCENARIOS = { ...TARGET_SCENARIOS, s7, s8 } as const;

/** One scenario against one target, started fresh (Parley) or as it runs (peers). */
export async function runScenario(scenario: RunnableScenario, targetOptions: TargetOptions, options: ScenarioOptions): Promise<ScenarioResult> {
  if (scenario === "s0") return s0(options);
  if (scenario === "s6") return s6(targetOptions, options, (s, t, o) => runScenario(s, t, o));
  const target = await resolveTarget(targetOptions);
  try {
    log(`${scenario} against ${target.name} ${target.version} at ${target.endpoint.host}:${target.endpoint.port} (${target.endpoint.transport === "websocket" ? "WebSocket" : `${target.endpoint.tls} TLS`}, ${target.endpoint.sasl}${target.certificate ? `, ${target.certificate}` : ""})`);
    return await RUNNABLE_TARGET_SCENARIOS[scenario](target, options);
  } finally {
    await target.stop();
  }
}

export const RESULTS_DIR = fileURLToPath(new URL("../results/", import.meta.url));

export function saveRaw(result: ScenarioResult & { run: number }): void {
  mkdirSync(`${RESULTS_DIR}raw`, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  writeFileSync(`${RESULTS_DIR}raw/${stamp}-${result.target}-${result.scenario}-run${result.run}.json`, JSON.stringify(result, null, 2));
}

export function pinGenerator(): void {
  if (canPin()) pin(process.pid, 1);
  else log(`cannot pin (${cpus().length} CPUs or no taskset): server and generator share cores, figures are not comparable`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  let args: Args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    // The usage is this file's header comment.
    const usage = readFileSync(fileURLToPath(import.meta.url), "utf8").match(/^\/\*\*([\s\S]*?)\*\//)![1]!.replace(/^ \*/gm, "");
    console.error(`${(err as Error).message}\n${usage}`);
    process.exit(2);
  }
  pinGenerator();
  for (const scenario of args.scenarios) {
    const headlines: ScenarioResult["headline"][] = [];
    let last: ScenarioResult | undefined;
    for (let run = 1; run <= args.runs; run++) {
      const result = { ...(await runScenario(scenario, args.target, args.scenario)), run };
      saveRaw(result);
      headlines.push(result.headline);
      last = result;
      console.log(JSON.stringify({ scenario: result.scenario, target: result.target, run, headline: result.headline }));
    }
    if (args.runs > 1 && last) saveMedians(last, headlines);
  }
}

/** Every headline figure's median over the runs, next to each run's figures and what the machine was doing. */
function saveMedians(last: ScenarioResult, headlines: ScenarioResult["headline"][]): void {
  const medians = Object.fromEntries(Object.keys(last.headline).map((key) => [key, median(headlines.map((h) => h[key] ?? NaN))]));
  const file = `${RESULTS_DIR}${last.scenario}-${last.target}-${new Date().toISOString().slice(0, 10)}.json`;
  writeFileSync(file, JSON.stringify({ scenario: last.scenario, target: last.target, version: last.version, runs: headlines.length, medians, headlines, loadAverageAtEnd: loadavg() }, null, 2));
  log(`medians of ${headlines.length} runs: ${JSON.stringify(medians)} (${file})`);
}
