/**
 * `--nodes N`: Parley as a cluster on this machine (docs/CLUSTER.md): `parley start --nodes N`, a
 * primary and N node:cluster workers sharing the listening ports, on Postgres and Redis with a
 * fresh key prefix. What the scenarios need from it besides a Target: when every node is up,
 * which node holds a session (to count the messages that cross nodes), the sessions per node,
 * and which worker process is which node (for memory per node). Reads Redis only.
 */
import { readFileSync } from "node:fs";
import { Redis } from "ioredis";
import { ClusterKeys, RedisDirectory } from "../../src/cluster/directory.js";
import { processTree, sampleTreeProcesses } from "./proc.js";
import { sleep } from "./common.js";

export interface ClusterInfo {
  nodes: number;
  redisUrl: string;
  keyPrefix: string;
  /** The configured node id; worker i is `<nodeId>-<i>`. */
  nodeId: string;
}

/** The node each full JID is bound on, from the session directory (`P:sess:<bare>`, field = full JID). */
export async function nodesOf(info: ClusterInfo, fullJids: readonly string[]): Promise<Map<string, string>> {
  const redis = new Redis(info.redisUrl);
  const keys = new ClusterKeys(info.keyPrefix);
  try {
    const pipeline = redis.pipeline();
    for (const full of fullJids) pipeline.hget(keys.user(full.slice(0, full.indexOf("/"))), full);
    const replies = (await pipeline.exec()) ?? [];
    const out = new Map<string, string>();
    fullJids.forEach((full, i) => {
      const value = replies[i]?.[1];
      if (typeof value === "string") out.set(full, (JSON.parse(value) as { node: string }).node);
    });
    return out;
  } finally { redis.disconnect(); }
}

/** Every node and whether its heartbeat is alive, with its directory session count (what `parley status` prints). */
export async function clusterStatus(info: ClusterInfo): Promise<Array<{ node: string; alive: boolean; sessions: number }>> {
  const redis = new Redis(info.redisUrl);
  try { return await RedisDirectory.status(redis, new ClusterKeys(info.keyPrefix)); } finally { redis.disconnect(); }
}

/** Waits until all N nodes heartbeat (the primary reports nothing itself; each worker heartbeats once it runs). */
export async function waitForNodes(info: ClusterInfo, isAlive: () => boolean, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const alive = (await clusterStatus(info)).filter((n) => n.alive).length;
    if (alive >= info.nodes) return;
    if (!isAlive()) throw new Error("parley start --nodes ended before its nodes were up");
    if (Date.now() > deadline) throw new Error(`${alive} of ${info.nodes} cluster nodes up after ${timeoutMs} ms`);
    await sleep(250);
  }
}

/** The worker processes under the primary, by node id (a worker's PARLEY_NODE_INDEX, from its environment). */
export function workerPids(info: ClusterInfo, primary: number): Map<string, number> {
  const out = new Map<string, number>();
  for (const pid of processTree(primary).slice(1)) {
    let environ: string;
    try { environ = readFileSync(`/proc/${pid}/environ`, "utf8"); } catch { continue; }
    const index = /(?:^|\0)PARLEY_NODE_INDEX=(\d+)(?:\0|$)/.exec(environ)?.[1];
    if (index !== undefined) out.set(`${info.nodeId}-${index}`, pid);
  }
  return out;
}

/** RSS of each worker (node) and of the primary, in KB. */
export function rssByNode(info: ClusterInfo, primary: number): Record<string, number> {
  const byPid = new Map(sampleTreeProcesses(primary).map((p) => [p.pid, p.rssKB]));
  const out: Record<string, number> = { primary: byPid.get(primary) ?? NaN };
  for (const [node, pid] of workerPids(info, primary)) out[node] = byPid.get(pid) ?? NaN;
  return out;
}

/**
 * The share of messages that cross nodes when session i sends to session i ^ 1 (S3's pairs),
 * each sending equally: pairs whose two sessions the directory puts on different nodes.
 */
export async function crossNodeShare(info: ClusterInfo, pairedJids: readonly string[]): Promise<{ share: number; unknown: number }> {
  const nodes = await nodesOf(info, pairedJids);
  let crossing = 0;
  let unknown = 0;
  pairedJids.forEach((jid, i) => {
    const peer = pairedJids[i ^ 1];
    if (peer === undefined) return;
    const [mine, theirs] = [nodes.get(jid), nodes.get(peer)];
    if (mine === undefined || theirs === undefined) unknown++;
    else if (mine !== theirs) crossing++;
  });
  return { share: crossing / Math.max(1, pairedJids.length - unknown), unknown };
}

/**
 * The same items in an order fixed by `seed` (Fisher–Yates over a mulberry32 sequence). The
 * primary hands connections to the workers in turn, so connection i is on node i mod N: paired
 * in login order, every pair of two nodes would cross; shuffled, (N-1)/N of them do, as users
 * spread by a load balancer talk to each other.
 */
export function shuffled<T>(items: readonly T[], seed = 16): T[] {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/**
 * The items ordered so that items 2i and 2i+1 sit on different nodes wherever the counts allow
 * (`--pairs cross`: every message of S3 crosses nodes, for the cross-node latency). Each pair
 * takes one item from each of the two nodes with the most left; what one node has left over at
 * the end is paired on that node. Items whose node is unknown count as one more node.
 */
export function crossNodePairs<T>(items: readonly T[], nodeOf: (item: T) => string | undefined): T[] {
  const buckets = new Map<string, T[]>();
  for (const item of items) {
    const node = nodeOf(item) ?? "";
    const bucket = buckets.get(node) ?? [];
    bucket.push(item);
    buckets.set(node, bucket);
  }
  const out: T[] = [];
  for (;;) {
    const [first, second] = [...buckets.values()].filter((b) => b.length).sort((x, y) => y.length - x.length);
    if (!first) return out;
    if (!second) return [...out, ...first];
    out.push(first.pop()!, second.pop()!);
  }
}
