/**
 * bench:cluster-muc — a room's fan-out across cluster nodes against the same room on one node
 * (docs/CLUSTER.md, "Rooms"). Each node is a process of its own on real Redis and Postgres, so the
 * CPU measured is the servers' (the sum over the node processes), not the clients'. Two rounds in
 * one run, same occupants, same open-loop message rate:
 *   - "one node": a single node without `cluster` (Postgres storage, as the cluster has);
 *   - "N nodes": the occupants spread evenly over --nodes cluster nodes, the room hosted on the
 *     first; the sender sits on --sender (0 = the host, 1 = another node: its messages are
 *     forwarded to the host first).
 * Reported per round: deliveries/s (from the first message sent to the last copy received), lost,
 * server CPU µs per delivery (over the whole round, drain included), fanout bus entries per message.
 * Usage: npm run bench:cluster-muc -- [--occupants 256] [--nodes 3] [--rate 50] [--seconds 5] [--sender 1]
 */
import { fork, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { rawSession, type RawClient } from "../test/helpers/raw.js";
import { dropKeyPrefix, dropSchema, REDIS_URL } from "../test/helpers/cluster.js";
import { PG_URL } from "../test/helpers/postgres.js";
import { onNumberedBodies } from "./room-arrivals.js";

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? def : Number(process.argv[i + 1]);
};
const OCCUPANTS = arg("occupants", 256);
const NODES = arg("nodes", 3);
const RATE = arg("rate", 50);
const SECONDS = arg("seconds", 5);
const SENDER_NODE = Math.min(arg("sender", 1), NODES - 1);
const MUC = "http://jabber.org/protocol/muc";

const schema = `parley_bench_cluster_muc_${randomBytes(6).toString("hex")}`;
const keyPrefix = `parley-bench-${randomBytes(6).toString("hex")}`;
const storage = { driver: "postgres", url: PG_URL, schema, poolSize: 8 };

interface Node { process: ChildProcess; port: number }
type Snapshot = { cpu: NodeJS.CpuUsage; sent?: Record<string, number> };

async function startNode(config: Record<string, unknown>, users: number): Promise<Node> {
  const child = fork(fileURLToPath(new URL("./cluster-muc-node.ts", import.meta.url)), [JSON.stringify(config)], {
    execArgv: ["--import", "tsx"], env: { ...process.env, BENCH_USERS: String(users) },
  });
  const port = await new Promise<number>((resolve, reject) => {
    child.on("message", (m: { ready?: boolean; port?: number }) => { if (m.ready) resolve(m.port!); });
    child.once("exit", (code) => reject(new Error(`bench node exited (${code})`)));
  });
  return { process: child, port };
}

const snapshot = (node: Node) => new Promise<Snapshot>((resolve) => {
  const on = (m: { snapshot?: Snapshot }) => {
    if (!m.snapshot) return;
    node.process.off("message", on);
    resolve(m.snapshot);
  };
  node.process.on("message", on);
  node.process.send({ cmd: "snapshot" });
});

const stop = (node: Node) => new Promise<void>((resolve) => {
  node.process.once("exit", () => resolve());
  node.process.send({ cmd: "stop" });
});

/** How many copies of each numbered message arrived, and when the last one did. */
function countArrivals(clients: RawClient[]): Map<number, number> & { last: number } {
  const arrivals = Object.assign(new Map<number, number>(), { last: 0 });
  for (const c of clients) {
    onNumberedBodies(c, (n, now) => {
      arrivals.set(n, (arrivals.get(n) ?? 0) + 1);
      arrivals.last = now;
    });
  }
  return arrivals;
}

async function round(label: string, nodes: Node[], room: string): Promise<string> {
  const clients: RawClient[] = [];
  for (let i = 0; i < OCCUPANTS; i += 32) {
    clients.push(...await Promise.all(Array.from({ length: Math.min(32, OCCUPANTS - i) }, (_, k) =>
      rawSession(nodes[(i + k) % nodes.length]!.port, `user${i + k}`, "pw", "bench"))));
  }
  // Every node learns every other node's sessions from the directory channel; a moment for that.
  await new Promise((r) => setTimeout(r, 1000));
  const owner = clients[0]!;
  owner.send(`<presence to='${room}/o'><x xmlns='${MUC}'/></presence>`);
  await owner.waitFor(/status code="201"/, 30_000);
  owner.send(`<iq type='set' id='cfg' to='${room}'><query xmlns='${MUC}#owner'><x xmlns='jabber:x:data' type='submit'/></query></iq>`);
  await owner.waitFor(/id="cfg"/, 30_000);
  await Promise.all(clients.slice(1).map(async (c, i) => {
    c.send(`<presence to='${room}/n${i + 1}'><x xmlns='${MUC}'><history maxstanzas='0'/></x></presence>`);
    await c.waitFor(/status code="110"/, 120_000);
  }));
  const sender = clients[SENDER_NODE % nodes.length]!;
  const arrivals = countArrivals(clients);
  const before = await Promise.all(nodes.map(snapshot));
  const total = RATE * SECONDS;
  const start = performance.now();
  for (let n = 0; n < total; n++) {
    const wait = start + (n * 1000) / RATE - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    sender.send(`<message to='${room}' type='groupchat'><body>t${n}:x</body></message>`);
  }
  // Until every copy arrived, or two seconds without progress.
  let seen = -1;
  for (;;) {
    const now = [...arrivals.values()].reduce((a, b) => a + b, 0);
    if (now >= total * OCCUPANTS || now === seen) break;
    seen = now;
    await new Promise((r) => setTimeout(r, 2000));
  }
  const elapsed = (arrivals.last - start) / 1000;
  const after = await Promise.all(nodes.map(snapshot));
  const delivered = [...arrivals.values()].reduce((a, b) => a + b, 0);
  const cpuMicros = after.reduce((sum, s, i) => sum + s.cpu.user + s.cpu.system - before[i]!.cpu.user - before[i]!.cpu.system, 0);
  const fanouts = after.reduce((sum, s, i) => sum + (s.sent?.fanout ?? 0) - (before[i]!.sent?.fanout ?? 0), 0);
  for (const c of clients) c.close();
  return `| ${label} | ${total} | ${delivered} | ${Math.round(delivered / elapsed)} | ${total * OCCUPANTS - delivered} | ${(cpuMicros / Math.max(delivered, 1)).toFixed(1)} | ${(fanouts / total).toFixed(2)} |`;
}

const rows: string[] = [];
try {
  // One node, no cluster: creates the accounts (and runs the migrations) for both rounds.
  const single = await startNode({ storage }, OCCUPANTS);
  rows.push(await round("one node", [single], "one@conference.localhost"));
  await stop(single);
  const cluster = (nodeId: string) => ({ nodeId, redisUrl: REDIS_URL, keyPrefix, heartbeatSeconds: 2, nodeTimeoutSeconds: 10 });
  const nodes: Node[] = [];
  for (let i = 0; i < NODES; i++) nodes.push(await startNode({ storage, cluster: cluster(`n${i}`) }, 0));
  rows.push(await round(`${NODES} nodes, sender on ${SENDER_NODE === 0 ? "the host" : "another node"}`, nodes, "spread@conference.localhost"));
  await Promise.all(nodes.map(stop));
  console.log(`# bench:cluster-muc — ${OCCUPANTS} occupants, ${RATE} room messages/s for ${SECONDS} s`);
  console.log("\n| round | messages | delivered | deliveries/s | lost | server CPU µs per delivery | fanout entries per message |");
  console.log("|---|---|---|---|---|---|---|");
  for (const row of rows) console.log(row);
} finally {
  await dropSchema(schema);
  await dropKeyPrefix(keyPrefix);
}
