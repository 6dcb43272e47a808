/**
 * Redis restarted mid-traffic (issue 16, faults): a private redis-server without persistence,
 * killed with SIGKILL and started again empty on the same port, under two nodes on Postgres.
 * The nodes write their sessions to the directory again and traffic between them resumes;
 * every message the sender's XEP-0198 'h' covered is delivered or in offline storage.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { promisify } from "node:util";
import { Redis } from "ioredis";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { rawSession, type RawClient } from "../helpers/raw.js";
import { PG_URL, postgresUnavailable } from "../helpers/postgres.js";
import { dropSchema, freePort, until } from "../helpers/cluster.js";

const NS_SM = "urn:xmpp:sm:3";
const missing = (await postgresUnavailable()) ?? (await promisify(execFile)("redis-server", ["--version"]).then(() => undefined, (err: Error) => `redis-server not installed (${err.message})`));
if (missing) console.log(`# SKIPPED cluster Redis restart: ${missing}`);

async function startRedis(port: number): Promise<ChildProcess> {
  const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
  const probe = new Redis(port, "127.0.0.1", { lazyConnect: true, retryStrategy: () => 50, maxRetriesPerRequest: null });
  probe.on("error", () => {});
  try {
    await until(async () => (await probe.ping().catch(() => "")) === "PONG", "redis-server answering", 200, 25);
  } finally {
    probe.disconnect();
  }
  return child;
}

describe("cluster: Redis restarted mid-traffic (e2e)", { skip: missing ? `unavailable: ${missing}` : false }, () => {
  const schema = `parley_redis_${randomBytes(6).toString("hex")}`;
  let port: number;
  let redis: ChildProcess | undefined;
  let a: TestServer;
  let b: TestServer;
  const clients: RawClient[] = [];

  before(async () => {
    port = await freePort();
    redis = await startRedis(port);
    const cluster = (nodeId: string) => ({ nodeId, redisUrl: `redis://127.0.0.1:${port}`, keyPrefix: "parley", heartbeatSeconds: 0.25, nodeTimeoutSeconds: 1 });
    const storage = { driver: "postgres", url: PG_URL, schema, poolSize: 4 };
    a = await startTestServer({ storage, cluster: cluster("a") });
    b = await startTestServer({ storage, cluster: cluster("b") });
    for (const user of ["alice", "bob"]) await a.accounts.create(`${user}@localhost`, "pw");
  });

  after(async () => {
    for (const c of clients) c.close();
    await a?.cleanup();
    await b?.cleanup();
    redis?.kill("SIGKILL");
    await dropSchema(schema);
  });

  it("nodes recover, and nothing the sender's 'h' covered is lost", async () => {
    const alice = await rawSession(a.ports.c2sDirectTls!, "alice", "pw", "pc");
    const bob = await rawSession(b.ports.c2sDirectTls!, "bob", "pw", "phone");
    clients.push(alice, bob);
    bob.send("<presence/>");
    await until(() => a.sessions.get("bob@localhost/phone")?.presence !== undefined, "bob available on node a");
    const mark = alice.elements.length;
    alice.send(`<enable xmlns='${NS_SM}'/>`);
    await alice.waitForElement((e) => e.is("enabled", NS_SM), 10_000, mark);
    const since = alice.elements.length;
    const ids: string[] = [];
    const send = (id: string) => {
      ids.push(id);
      alice.send(`<message to='bob@localhost' type='chat' id='${id}'><body>${id}</body></message>`);
    };
    const acked = async () => {
      alice.send(`<r xmlns='${NS_SM}'/>`);
      const mark = alice.elements.length;
      const a = await alice.waitForElement((e) => e.is("a", NS_SM), 15_000, mark);
      return Number(a.attrs.h);
    };
    for (let i = 0; i < 5; i++) send(`before-${i}`);
    assert.equal(await acked(), 5);
    await until(() => ids.every((id) => bob.anyElement((e) => e.is("message") && e.attrs.id === id)), "messages before the restart delivered");

    redis!.kill("SIGKILL");
    await new Promise((resolve) => redis!.once("exit", resolve));
    // While Redis is gone: acknowledged once Postgres has each message (the durable path).
    for (let i = 0; i < 5; i++) send(`during-${i}`);
    const ackedDuring = await acked();
    redis = await startRedis(port);
    // Redis came back empty: both nodes wrote their sessions again.
    await until(async () => {
      const r = new Redis(port, "127.0.0.1");
      r.on("error", () => {});
      try {
        return (await r.hexists("parley:sess:bob@localhost", "bob@localhost/phone")) === 1 && (await r.hexists("parley:sess:alice@localhost", "alice@localhost/pc")) === 1;
      } finally {
        r.disconnect();
      }
    }, "directory entries written again", 200, 50);
    for (let i = 0; i < 5; i++) send(`after-${i}`);
    const ackedTotal = await acked();
    const delivered = (id: string) => bob.anyElement((e) => e.is("message") && e.attrs.id === id);
    await until(() => ids.filter((id) => id.startsWith("after")).every(delivered), "messages after the restart delivered live", 200, 50);
    const stored = new Set((await a.storage.offline.list("bob@localhost", 100)).map((r) => /id="([^"]+)"/.exec(r.stanza)?.[1]));
    const lost = ids.filter((id) => !delivered(id) && !stored.has(id));
    const duplicates = ids.reduce((n, id) => n + Math.max(0, bob.elements.filter((e) => e.is("message") && e.attrs.id === id).length - 1), 0);
    console.log(`# cluster Redis restart: sent ${ids.length}, acked ${ackedTotal} (${ackedDuring - 5} while Redis was down), delivered ${ids.filter(delivered).length}, stored offline ${ids.filter((id) => !delivered(id) && stored.has(id)).length}, duplicates ${duplicates}, lost ${lost.length}`);
    assert.equal(ackedTotal, 15);
    assert.deepEqual(lost, []);
  });
});
