/**
 * What the generator points at: a Parley process it starts itself (pinned to CPU 0, fresh data
 * directory, the kit's RSA-2048 certificate when present so every target presents the same kind),
 * with `--nodes N` a Parley cluster of N local nodes on Postgres and Redis (cluster-target.ts),
 * the Prosody or ejabberd of `../shared/peers` (pinned to CPU 0 as well), or any `host:port`.
 */
import { spawn, execFileSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import type { Endpoint, SaslMechanism } from "./xmpp.js";
import { canPin, pin, processTree } from "./proc.js";
import { log } from "./common.js";
import { installArchive, seededArchive } from "./archive.js";
import { waitForNodes, type ClusterInfo } from "./cluster-target.js";
import { dropKeyPrefix } from "../../test/helpers/cluster.js";
import { PARLEY_VERSION } from "../../src/version.js";

export interface Target {
  name: string;
  version: string;
  endpoint: Endpoint;
  /** Both client ports where known, for scenarios that log in over STARTTLS and direct TLS alike. */
  ports?: { starttls: number; direct: number };
  /** Parley's XMPP-over-WebSocket endpoint (its HTTPS port), for scenarios that use both transports on one server. */
  websocketPort?: number;
  mucDomain: string;
  /** The server's process (with `--nodes`, the primary: CPU and memory are its whole tree); undefined when unknown (a remote target). */
  pid: number | undefined;
  /** The kind of key the server's certificate has, where the generator chose it (Parley). */
  certificate?: string;
  /** Set when the target is a Parley cluster (`--nodes N`). */
  cluster?: ClusterInfo;
  stop(): Promise<void>;
}

export interface TargetOptions {
  target: string;
  domain?: string;
  tls: "direct" | "starttls";
  sasl: SaslMechanism;
  /** tcp, or websocket (RFC 7395 on Parley's HTTPS port; Parley targets only). */
  transport?: "tcp" | "websocket";
  storage: "sqlite" | "postgres" | "memory";
  serverPid?: number;
  mucDomain?: string;
  /**
   * Parley's certificate: "kit" (default) the kit's RSA-2048 one where the kit has made it (what the
   * peers present), else Parley's own self-signed ECDSA P-256; "rsa" or "ecdsa" a self-signed
   * RSA-2048 or P-256 one made here, to compare the server's cost of a full handshake.
   */
  cert?: "kit" | "rsa" | "ecdsa";
  /** Parley only: run as a cluster of this many local nodes (`parley start --nodes N`, Postgres and Redis). */
  nodes?: number;
  /** Parley only: the CPUs its processes are pinned to (taskset list, default "0"; the generator has 1). */
  serverCpus?: string;
  /** Parley on SQLite only: start on a database that already holds this archive (archive.ts). */
  archive?: { records: number; prefix: string };
}

const REPO = fileURLToPath(new URL("../../", import.meta.url));
export const PEERS = join(REPO, "../shared/peers/peers");

export function peersEnv(): Record<string, string> {
  if (!existsSync(PEERS)) return {};
  const out = execFileSync(PEERS, ["env"], { encoding: "utf8" });
  return Object.fromEntries([...out.matchAll(/^export (\w+)=(.*)$/gm)].map((m) => [m[1]!, m[2]!.replace(/^'(.*)'$/, "$1")]));
}

/** The kit's RSA-2048 certificate for parley.test (what the peers present too), when the kit has made one. */
export function kitParleyCertificate(env = peersEnv()): { cert: string; key: string; ca: string } | undefined {
  if (!env.PEERS_PARLEY_FULLCHAIN || !existsSync(env.PEERS_PARLEY_FULLCHAIN)) return undefined;
  return { cert: env.PEERS_PARLEY_FULLCHAIN, key: env.PEERS_PARLEY_KEY!, ca: env.PEERS_CA_FILE! };
}

/** A self-signed certificate for `domain` and its service names, made with openssl; it is its own CA. */
function benchCertificate(kind: "rsa" | "ecdsa", domain: string, dir: string): { cert: string; key: string; ca: string } {
  const cert = join(dir, `bench-${kind}.crt`);
  const key = join(dir, `bench-${kind}.key`);
  const names = [domain, ...["conference", "upload", "push"].map((s) => `${s}.${domain}`)].map((n) => `DNS:${n}`).join(",");
  const newKey = kind === "rsa" ? ["-newkey", "rsa:2048"] : ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
  execFileSync("openssl", ["req", "-x509", ...newKey, "-nodes", "-keyout", key, "-out", cert, "-days", "30", "-subj", `/CN=${domain}`, "-addext", `subjectAltName=${names}`], { stdio: "ignore" });
  return { cert, key, ca: cert };
}

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}

export async function waitForPort(port: number, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ port, host: "127.0.0.1" }, () => { s.destroy(); resolve(true); });
      s.on("error", () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

let compiled: string | undefined;

/**
 * Parley runs as it is deployed (the Dockerfile runs `node dist/main.js`): compiled by tsc, not
 * through tsx, whose per-closure name helpers cost ~3 % of the server's CPU in S3. The build goes
 * to .bench-build/ (a sibling of src/, so `../package.json` still resolves), once per generator.
 */
function compiledParley(): string {
  if (!compiled) {
    log("compiling Parley (tsc -p tsconfig.build.json --outDir .bench-build)");
    execFileSync(process.execPath, [join(REPO, "node_modules/typescript/bin/tsc"), "-p", join(REPO, "tsconfig.build.json"), "--outDir", join(REPO, ".bench-build")], { stdio: "inherit" });
    compiled = join(REPO, ".bench-build/main.js");
  }
  return compiled;
}

async function startParley(o: TargetOptions): Promise<Target> {
  const domain = o.domain ?? "parley.test";
  const dataDir = mkdtempSync(join(tmpdir(), "parley-load-"));
  const [c2s, direct, https] = [await freePort(), await freePort(), await freePort()];
  const certificate = o.cert === "rsa" || o.cert === "ecdsa" ? benchCertificate(o.cert, domain, dataDir) : domain === "parley.test" ? kitParleyCertificate() : undefined;
  const schema = `load_${process.pid}_${Date.now()}`;
  const pgUrl = process.env.PARLEY_BENCH_PG_URL ?? "postgres://root@127.0.0.1:5432/test";
  const storage = o.storage === "postgres" || o.nodes ? { driver: "postgres", url: pgUrl, schema } : { driver: o.storage };
  // A fresh key prefix per target, as the schema: nothing of an earlier run is in the directory.
  const cluster: ClusterInfo | undefined = o.nodes ? {
    nodes: o.nodes, nodeId: "load", keyPrefix: `load-${process.pid}-${Date.now()}`,
    redisUrl: process.env.PARLEY_BENCH_REDIS_URL ?? "redis://127.0.0.1:6379",
  } : undefined;
  const config = {
    hosts: [domain], dataDir, log: { level: "warn" },
    // HTTPS serves the WebSocket endpoint (--transport websocket); the chat page is not needed.
    // No federation listener: S1–S7 do not use it, and a fixed 5269 collides with any other server on the machine.
    listen: { address: "127.0.0.1", c2s, c2sDirectTls: direct, https, http: null, s2s: null },
    chat: { enabled: false },
    tls: { certificates: certificate ? { [domain]: { cert: certificate.cert, key: certificate.key } } : {} },
    storage,
    // The generator logs in thousands of users from one address.
    limits: { maxConnectionsPerAddress: 1_000_000 },
    // S4's senders are not in the recipients' rosters; the peers have no strangers' share either.
    modules: { offline: { maxFromStrangers: 10_000, maxPerStranger: 10_000 } },
    ...(cluster ? { cluster: { nodeId: cluster.nodeId, redisUrl: cluster.redisUrl, keyPrefix: cluster.keyPrefix } } : {}),
  };
  if (o.archive) {
    if (storage.driver !== "sqlite") throw new Error("--archive seeds Parley's SQLite database: leave out --storage or give --storage sqlite");
    installArchive(await seededArchive(o.archive.records, o.archive.prefix, domain), dataDir);
  }
  const configFile = join(dataDir, "parley.json.yaml");
  writeFileSync(configFile, JSON.stringify(config, null, 2)); // JSON is YAML
  // PARLEY_BENCH_PROF=<dir> writes a V8 CPU profile of the server there when it stops.
  const profile = process.env.PARLEY_BENCH_PROF ? ["--cpu-prof", `--cpu-prof-dir=${process.env.PARLEY_BENCH_PROF}`] : [];
  // PARLEY_BENCH_NODE_FLAGS="--trace-gc ..." for the server process; its stdout then goes to ours.
  const flags = process.env.PARLEY_BENCH_NODE_FLAGS?.split(" ").filter(Boolean) ?? [];
  const nodesArgs = cluster ? ["--nodes", String(cluster.nodes)] : [];
  const child: ChildProcess = spawn(process.execPath, [...profile, ...flags, compiledParley(), "start", "--config", configFile, ...nodesArgs], {
    cwd: REPO, stdio: ["ignore", flags.length ? "inherit" : "ignore", "inherit"], env: { ...process.env, NODE_ENV: "production" },
  });
  let exited = false;
  child.once("exit", () => { exited = true; });
  const serverCpus = o.serverCpus ?? "0";
  if (canPin()) pin(child.pid!, serverCpus);
  const websocket = o.transport === "websocket";
  const port = websocket ? https : o.tls === "direct" ? direct : c2s;
  let workers: number[] = [];
  const stop = async () => {
    if (!exited) {
      child.kill("SIGTERM");
      await new Promise((r) => { child.once("exit", r); setTimeout(r, 10_000); });
    }
    // A node the primary did not stop in time, or that outlived it, is ended here: the workers
    // seen under the primary and any process still running this target's configuration.
    for (const pid of new Set([...workers, ...(child.pid ? processTree(child.pid).slice(1) : [])])) {
      if (runsConfig(pid, configFile)) try { process.kill(pid, "SIGKILL"); } catch { /* ended meanwhile */ }
    }
    rmSync(dataDir, { recursive: true, force: true });
    if (storage.driver === "postgres") {
      const client = new pg.Client({ connectionString: pgUrl });
      await client.connect();
      await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await client.end();
    }
    if (cluster) await dropKeyPrefix(cluster.keyPrefix, cluster.redisUrl);
  };
  try {
    if (cluster) {
      await waitForNodes(cluster, () => !exited);
      // Workers inherit the primary's CPUs when it was pinned before it forked them; pinned again
      // here, every thread of every process, since the pin and the forks may have raced.
      workers = processTree(child.pid!).slice(1);
      if (canPin()) for (const pid of [child.pid!, ...workers]) pin(pid, serverCpus);
    }
    await waitForPort(port);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    name: `${websocket ? "parley-websocket" : "parley"}${cluster ? `-${cluster.nodes}node${cluster.nodes > 1 ? "s" : ""}` : ""}`,
    version: `${PARLEY_VERSION} (${storage.driver}${cluster ? `, cluster of ${cluster.nodes} on Redis, CPUs ${serverCpus}` : ""})`,
    endpoint: { host: "127.0.0.1", port, domain, tls: o.tls, sasl: o.sasl, transport: o.transport, ca: certificate ? readFileSync(certificate.ca) : undefined },
    certificate: o.cert === "rsa" ? "RSA-2048 (self-signed)" : o.cert === "ecdsa" ? "ECDSA P-256 (self-signed)" : certificate ? "RSA-2048 (kit)" : "ECDSA P-256 (Parley's self-signed)",
    ports: websocket ? undefined : { starttls: c2s, direct },
    websocketPort: https,
    mucDomain: `conference.${domain}`,
    pid: child.pid,
    cluster,
    stop,
  };
}

/** Whether process `pid` is a Parley started with this configuration file (not a reused pid). */
function runsConfig(pid: number, configFile: string): boolean {
  try { return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes(configFile); } catch { return false; }
}

function peerTarget(name: "prosody" | "ejabberd", o: TargetOptions): Target {
  const env = peersEnv();
  const NAME = name.toUpperCase();
  if (env[`PEERS_${NAME}_UP`] !== "1") throw new Error(`${name} is not running: ${PEERS} start ${name}`);
  const pid = Number(env[`PEERS_${NAME}_PID`]);
  if (canPin()) pin(pid, 0);
  const port = Number(o.tls === "direct" ? env[`PEERS_${NAME}_C2S_TLS_PORT`] : env[`PEERS_${NAME}_C2S_PORT`]);
  return {
    name, version: peerVersion(name),
    endpoint: { host: "127.0.0.1", port, domain: env[`PEERS_${NAME}_DOMAIN`]!, tls: o.tls, sasl: o.sasl, ca: readFileSync(env.PEERS_CA_FILE!) },
    ports: { starttls: Number(env[`PEERS_${NAME}_C2S_PORT`]), direct: Number(env[`PEERS_${NAME}_C2S_TLS_PORT`]) },
    mucDomain: env[`PEERS_${NAME}_MUC_DOMAIN`]!,
    pid,
    async stop() {},
  };
}

function peerVersion(name: string): string {
  try {
    const out = execFileSync("dpkg-query", ["-W", "-f=${Version}", name], { encoding: "utf8" });
    return out.trim();
  } catch { return "unknown"; }
}

export async function resolveTarget(o: TargetOptions): Promise<Target> {
  if (o.target === "parley") return startParley(o);
  if (o.nodes) throw new Error("--nodes is for --target parley");
  if (o.transport === "websocket") throw new Error("--transport websocket is for --target parley");
  if (o.target === "prosody" || o.target === "ejabberd") return peerTarget(o.target, o);
  const [host, port] = o.target.split(":");
  if (!host || !port || !o.domain) throw new Error("--target host:port needs --domain");
  if (o.serverPid && canPin()) pin(o.serverPid, 0);
  return {
    name: o.target, version: "unknown",
    endpoint: { host, port: Number(port), domain: o.domain, tls: o.tls, sasl: o.sasl },
    mucDomain: o.mucDomain ?? `conference.${o.domain}`,
    pid: o.serverPid,
    async stop() {},
  };
}
