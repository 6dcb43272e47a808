/**
 * bench:cluster — what a message costs when it crosses nodes (docs/CLUSTER.md). Two nodes in this
 * process on real Redis and Postgres; sender and receivers with XEP-0198 (the durable path, which
 * is the one a cross-node chat message takes). Same-node delivery (alice → bob, both on node a)
 * against cross-node delivery (alice → carol on node b), in the same run:
 *   - CPU-seconds per 10k messages of this whole process (both nodes and the clients: the
 *     difference between the rows is what crossing costs);
 *   - Redis commands per message (INFO commandstats, heartbeats slowed so that they do not count);
 *   - delivery latency percentiles at a paced rate.
 * Usage: npm run bench:cluster -- [--messages 5000] [--rate 1000] [--seconds 5]
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { Redis } from "ioredis";
import { parseConfig } from "../src/config.js";
import { startServer, type Server } from "../src/server.js";
import { silentLogger } from "../src/log.js";
import { rawSession, type RawClient } from "../test/helpers/raw.js";

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? def : Number(process.argv[i + 1]);
};
const MESSAGES = arg("messages", 5000);
const RATE = arg("rate", 1000);
const SECONDS = arg("seconds", 5);
const PG_URL = process.env.PARLEY_TEST_PG_URL ?? "postgres://root@127.0.0.1:5432/test";
const REDIS_URL = process.env.PARLEY_TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
const NS_SM = "urn:xmpp:sm:3";

const schema = `parley_bench_cluster_${randomBytes(6).toString("hex")}`;
const keyPrefix = `parley-bench-${randomBytes(6).toString("hex")}`;
const dirs: string[] = [];

async function node(nodeId: string): Promise<Server> {
  const dataDir = mkdtempSync(join(tmpdir(), "parley-bench-cluster-"));
  dirs.push(dataDir);
  return startServer(parseConfig({
    hosts: ["localhost"], dataDir, auth: { scramIterations: 4096 },
    storage: { driver: "postgres", url: PG_URL, schema, poolSize: 8 },
    listen: { address: "127.0.0.1", c2s: null, c2sDirectTls: 0, https: null, http: null, s2s: null },
    modules: { extdisco: { stun: { port: 0, address: "127.0.0.1" } } },
    streamManagement: { maxUnackedStanzas: 100_000 },
    // Slow heartbeats: the Redis commands counted are the messages'.
    cluster: { nodeId, redisUrl: REDIS_URL, keyPrefix, heartbeatSeconds: 60, nodeTimeoutSeconds: 120 },
  }), { log: silentLogger() });
}

/** A client with stream management that answers every <r/> with what it has received so far. */
async function smClient(server: Server, user: string): Promise<{ c: RawClient; received: () => number; arrivals: Map<string, number> }> {
  const c = await rawSession(server.ports.c2sDirectTls!, user, "pw", "bench");
  c.send(`<enable xmlns='${NS_SM}'/>`);
  await c.waitForElement((e) => e.is("enabled", NS_SM));
  const since = c.elements.length;
  let handled = 0;
  let scanned = since;
  const arrivals = new Map<string, number>();
  c.socket.on("data", () => {
    const now = performance.now();
    let asked = false;
    for (; scanned < c.elements.length; scanned++) {
      const e = c.elements[scanned]!;
      if (e.name === "message" || e.name === "presence" || e.name === "iq") {
        handled++;
        if (e.name === "message" && e.attrs.id) arrivals.set(e.attrs.id, now);
      } else if (e.is("r", NS_SM)) asked = true;
    }
    if (asked) c.send(`<a xmlns='${NS_SM}' h='${handled}'/>`);
    // Parsed elements are not needed after counting: keep memory flat over long runs.
    if (c.elements.length > 10_000) { c.elements.splice(0, c.elements.length); scanned = 0; }
  });
  return { c, received: () => arrivals.size, arrivals };
}

async function redisCalls(redis: Redis): Promise<number> {
  const info = await redis.info("commandstats");
  return [...info.matchAll(/calls=(\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0);
}

/** Polls for up to a minute; false if the condition never held. */
const reached = async (condition: () => boolean) => {
  for (let i = 0; i < 6000; i++) {
    if (condition()) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return false;
};
const until = async (condition: () => boolean, what: string) => {
  if (!(await reached(condition))) throw new Error(`timed out: ${what}`);
};

const a = await node("a");
const b = await node("b");
const redis = new Redis(REDIS_URL);
try {
  for (const user of ["alice", "bob", "carol"]) await a.accounts.create(`${user}@localhost`, "pw");
  const sender = await smClient(a, "alice");
  const local = await smClient(a, "bob");
  const remote = await smClient(b, "carol");
  for (const r of [local, remote]) r.c.send("<presence/>");
  await until(() => a.sessions.get("carol@localhost/bench")?.presence !== undefined, "carol known on node a");

  const burst = async (label: string, to: string, receiver: typeof local) => {
    const before = receiver.received();
    const cpu = process.cpuUsage();
    const calls = await redisCalls(redis);
    const start = performance.now();
    for (let i = 0; i < MESSAGES; i++) {
      sender.c.send(`<message to='${to}' type='chat' id='${label}-${i}'><body>message ${i} of a typical length, a sentence or so</body></message>`);
      if (i % 100 === 99) sender.c.send(`<r xmlns='${NS_SM}'/>`);
    }
    await until(() => receiver.received() - before >= MESSAGES, `${label}: all delivered`);
    const seconds = (performance.now() - start) / 1000;
    const used = process.cpuUsage(cpu);
    const redisPerMessage = ((await redisCalls(redis)) - calls - 1) / MESSAGES;
    return { label, cpuPer10k: ((used.user + used.system) / 1e6) * (10_000 / MESSAGES), rate: MESSAGES / seconds, redisPerMessage };
  };

  const paced = async (label: string, to: string, receiver: typeof local) => {
    const sent = new Map<string, number>();
    const total = RATE * SECONDS;
    const start = performance.now();
    for (let i = 0; i < total; i++) {
      const due = start + (i * 1000) / RATE;
      const wait = due - performance.now();
      if (wait > 1) await new Promise((r) => setTimeout(r, wait));
      const id = `${label}-p${i}`;
      sent.set(id, performance.now());
      sender.c.send(`<message to='${to}' type='chat' id='${id}'><body>paced ${i}</body></message>`);
      if (i % 100 === 99) sender.c.send(`<r xmlns='${NS_SM}'/>`);
    }
    // A process that cannot keep up with the rate falls behind without bound: after a minute the
    // latencies of what arrived are reported with the number still missing, not an exception.
    await reached(() => [...sent.keys()].every((id) => receiver.arrivals.has(id)));
    const latencies = [...sent].filter(([id]) => receiver.arrivals.has(id)).map(([id, at]) => receiver.arrivals.get(id)! - at).sort((x, y) => x - y);
    const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? NaN;
    return { label, p50: pct(50), p99: pct(99), max: latencies.at(-1) ?? NaN, missing: sent.size - latencies.length };
  };

  // Warm-up, then the measured bursts alternating, so that load changes hit both rows alike.
  await burst("warm-same", "bob@localhost/bench", local);
  await burst("warm-cross", "carol@localhost/bench", remote);
  const rows: Array<Awaited<ReturnType<typeof burst>>> = [];
  for (let round = 0; round < 2; round++) {
    rows.push(await burst(`same${round}`, "bob@localhost/bench", local));
    rows.push(await burst(`cross${round}`, "carol@localhost/bench", remote));
  }
  console.log(`cluster bench: ${MESSAGES} messages per burst, 2 nodes in one process, Postgres storage, XEP-0198 on every client\n`);
  console.log("| delivery | CPU-seconds per 10k messages (whole process) | msg/s | Redis commands per message |");
  console.log("|---|---|---|---|");
  for (const r of rows) console.log(`| ${r.label.startsWith("same") ? "same node" : "cross node"} (${r.label}) | ${r.cpuPer10k.toFixed(2)} | ${Math.round(r.rate)} | ${r.redisPerMessage.toFixed(2)} |`);
  const avg = (prefix: string) => rows.filter((r) => r.label.startsWith(prefix)).reduce((s, r) => s + r.cpuPer10k, 0) / 2;
  console.log(`\ncross/same CPU ratio (mean of 2 rounds): ${(avg("cross") / avg("same")).toFixed(2)}×`);
  const lat = [await paced("same", "bob@localhost/bench", local), await paced("cross", "carol@localhost/bench", remote)];
  console.log(`\n| paced at ${RATE} msg/s for ${SECONDS} s | p50 ms | p99 ms | max ms | not delivered after 60 s |`);
  console.log("|---|---|---|---|---|");
  for (const l of lat) console.log(`| ${l.label} node | ${l.p50.toFixed(1)} | ${l.p99.toFixed(1)} | ${l.max.toFixed(1)} | ${l.missing} |`);
  for (const r of [sender, local, remote]) r.c.close();
} finally {
  await a.stop();
  await b.stop();
  const keys = await redis.keys(`${keyPrefix}:*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await c.end();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}
