/**
 * The s2s outbox on a cluster, on real Redis and Postgres (docs/CLUSTER.md, "The s2s outbox"): a
 * stanza node a queued for a remote server that does not answer is node a's row. A node that
 * starts later does not restore it (it would send it a second time); when node a is gone, its
 * reaper takes the row over and sends it from then on.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { rawSession, type RawClient } from "../helpers/raw.js";
import { PG_URL, postgresUnavailable } from "../helpers/postgres.js";
import { REDIS_URL, dropKeyPrefix, dropSchema, freePort, freshKeyPrefix, redisUnavailable, until } from "../helpers/cluster.js";

const missing = (await postgresUnavailable()) ?? (await redisUnavailable());
if (missing) console.log(`# SKIPPED cluster s2s outbox e2e: ${missing}`);

describe("cluster s2s outbox (e2e, Redis + Postgres)", { skip: missing ? `services unreachable: ${missing}` : false }, () => {
  const schema = `parley_cluster_outbox_${randomBytes(6).toString("hex")}`;
  const keyPrefix = freshKeyPrefix();
  const storage = { driver: "postgres", url: PG_URL, schema, poolSize: 4 };
  // A clean stop deletes the heartbeat, so the reaper comes within a heartbeat; the long timeout
  // keeps a node whose event loop stalls on a loaded machine from being taken for dead.
  const cluster = (nodeId: string) => ({ nodeId, redisUrl: REDIS_URL, keyPrefix, heartbeatSeconds: 0.25, nodeTimeoutSeconds: 10 });
  let a: TestServer | undefined;
  let c: TestServer | undefined;
  const clients: RawClient[] = [];
  /** Where down.test's server would be: nothing listens, so the stanza waits in the outbox. */
  let s2s: Record<string, unknown>;
  const queuedFor = (server: TestServer, domain: string) => server.s2s().outgoing.filter((r) => r.remote === domain).reduce((n, r) => n + r.queued, 0);

  before(async () => {
    s2s = { routes: { "down.test": `127.0.0.1:${await freePort()}` }, queueTimeoutSeconds: 600 };
    a = await startTestServer({ storage, s2s, cluster: cluster("a") });
    await a.accounts.create("alice@localhost", "pw");
  });

  after(async () => {
    for (const client of clients) client.close();
    await a?.cleanup();
    await c?.cleanup();
    await dropSchema(schema);
    await dropKeyPrefix(keyPrefix);
  });

  it("a node that starts does not restore another node's rows; the reaper of a dead node takes them over", async () => {
    const alice = await rawSession(a!.ports.c2sDirectTls!, "alice", "pw", "desk");
    clients.push(alice);
    alice.send("<message to='bob@down.test' type='chat' id='far'><body>to a server that is down</body></message>");
    await until(async () => (await a!.storage.s2sOutbox.list("a")).length === 1, "node a's outbox row committed");
    assert.equal(queuedFor(a!, "down.test"), 1);

    c = await startTestServer({ storage, s2s, cluster: cluster("c") });
    assert.equal(queuedFor(c, "down.test"), 0, "node c does not send node a's stanza");
    assert.deepEqual(await c.storage.s2sOutbox.list("c"), []);

    alice.close();
    await a!.cleanup();
    a = undefined;
    // Node a stopped cleanly: its row stays for it; node c reaps it within a heartbeat and adopts the row.
    await until(() => queuedFor(c!, "down.test") === 1, "node c queues node a's stanza");
    const rows = await c.storage.s2sOutbox.list("c");
    assert.equal(rows.length, 1);
    assert.equal(rows[0]!.remote, "down.test");
    assert.deepEqual(await c.storage.s2sOutbox.list("a"), []);
  });
});
