/**
 * Fault test (issue 16): Postgres unreachable for 10 s under a two-node cluster, with traffic
 * from a sender on node a to a receiver on node b, both with XEP-0198. Every node reaches
 * Postgres through a TCP proxy in this process; the outage closes every proxied connection and
 * refuses new ones for 10 s. A chat message to a resource on another node takes the durable path
 * (docs/CLUSTER.md, "How the promise holds"): the sender's 'h' covers it only once its offline
 * row is committed, so during the outage the acks wait; afterwards everything is delivered.
 * lost = acked, never delivered nor refused; it must be 0.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createServer, connect, type Server as NetServer, type Socket } from "node:net";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { rawSession, type RawClient } from "../helpers/raw.js";
import { PG_URL, postgresUnavailable } from "../helpers/postgres.js";
import { REDIS_URL, dropKeyPrefix, dropSchema, freshKeyPrefix, redisUnavailable, until } from "../helpers/cluster.js";
import { Sender, check, deliveries } from "../helpers/traffic.js";

const missing = (await postgresUnavailable()) ?? (await redisUnavailable());
if (missing) console.log(`# SKIPPED cluster Postgres outage: ${missing}`);

const SM = "urn:xmpp:sm:3";
const OUTAGE_MS = 10_000;
const BEFORE = 30;
const DURING = 40;
const AFTER = 30;

/** A TCP proxy to Postgres that can be cut: every connection through it closed, new ones refused. */
class CuttableProxy {
  private readonly sockets = new Set<Socket>();
  private down = false;
  private server: NetServer | undefined;
  refused = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  async listen(): Promise<number> {
    this.server = createServer((client) => {
      if (this.down) {
        this.refused++;
        client.destroy();
        return;
      }
      const upstream = connect(this.target);
      for (const [from, to] of [[client, upstream], [upstream, client]] as const) {
        this.sockets.add(from);
        from.on("error", () => to.destroy());
        from.on("close", () => { this.sockets.delete(from); to.destroy(); });
        from.pipe(to);
      }
    });
    await new Promise<void>((resolve) => this.server!.listen(0, "127.0.0.1", resolve));
    return (this.server.address() as { port: number }).port;
  }

  cut(): number {
    this.down = true;
    const open = this.sockets.size / 2;
    for (const s of this.sockets) s.destroy();
    return open;
  }

  restore(): void {
    this.down = false;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise((resolve) => this.server?.close(resolve));
  }
}

/** XEP-0198 'h' of a client: the stanzas it received since <enabled/>. */
const handledBy = (c: RawClient, since: number) => c.elements.slice(since).filter((e) => ["message", "presence", "iq"].includes(e.name)).length;

async function enable(c: RawClient): Promise<number> {
  const mark = c.elements.length;
  c.send(`<enable xmlns='${SM}'/>`);
  await c.waitForElement((e) => e.is("enabled", SM), 10_000, mark);
  return c.elements.length;
}

describe("cluster fault: Postgres unreachable for 10 s (e2e, Redis + Postgres)", { skip: missing ? `services unreachable: ${missing}` : false }, () => {
  const schema = `parley_cluster_pg_${randomBytes(6).toString("hex")}`;
  const keyPrefix = freshKeyPrefix();
  const target = new URL(PG_URL);
  const proxy = new CuttableProxy({ host: target.hostname, port: Number(target.port || 5432) });
  // Generous: nobody dies here, and on a loaded machine an event loop that stalls past a short
  // timeout would get a live node taken for dead.
  const cluster = (nodeId: string) => ({ nodeId, redisUrl: REDIS_URL, keyPrefix, heartbeatSeconds: 1, nodeTimeoutSeconds: 10 });
  let a: TestServer;
  let b: TestServer;
  const clients: RawClient[] = [];

  before(async () => {
    const proxied = new URL(PG_URL);
    proxied.hostname = "127.0.0.1";
    proxied.port = String(await proxy.listen());
    const storage = { driver: "postgres", url: proxied.toString(), schema, poolSize: 4 };
    a = await startTestServer({ storage, cluster: cluster("a") });
    b = await startTestServer({ storage, cluster: cluster("b") });
    for (const user of ["sender", "receiver"]) await a.accounts.create(`${user}@localhost`, "pw");
    for (const [x, y] of [["sender", "receiver"], ["receiver", "sender"]]) {
      await a.storage.roster.put(`${x}@localhost`, { jid: `${y}@localhost`, groups: [], subscription: "both", ask: false, approved: false });
    }
  });

  after(async () => {
    for (const c of clients) c.close();
    proxy.restore();
    await a?.cleanup();
    await b?.cleanup();
    await proxy.close();
    await dropSchema(schema);
    await dropKeyPrefix(keyPrefix);
  });

  it("acks wait while storage cannot have the messages; afterwards every message is delivered once", async () => {
    const receiver = await rawSession(b.ports.c2sDirectTls!, "receiver", "pw", "phone");
    clients.push(receiver);
    const receiverSince = await enable(receiver);
    receiver.send("<presence/>");
    const senderClient = await rawSession(a.ports.c2sDirectTls!, "sender", "pw", "desk");
    clients.push(senderClient);
    await enable(senderClient);
    const sender = new Sender(senderClient, "pg");
    await until(() => a.sessions.get("receiver@localhost/phone")?.presence !== undefined, "node a sees the receiver available");
    const to = "receiver@localhost/phone";
    const pace = () => new Promise((r) => setTimeout(r, 20));

    let n = 0;
    for (; n < BEFORE; n++) {
      sender.send(to, n);
      await pace();
    }
    await sender.settle(20_000);
    assert.equal(sender.acked, BEFORE, "before the outage every message is acknowledged");

    const cutConnections = proxy.cut();
    const outageStart = Date.now();
    for (; n < BEFORE + DURING; n++) {
      sender.send(to, n);
      await new Promise((r) => setTimeout(r, (OUTAGE_MS * 0.8) / DURING));
    }
    senderClient.send(`<r xmlns='${SM}'/>`);
    // The receiver acknowledges what it has during the outage: removing those durable copies waits too.
    receiver.send(`<a xmlns='${SM}' h='${handledBy(receiver, receiverSince)}'/>`);
    await new Promise((r) => setTimeout(r, Math.max(0, OUTAGE_MS - (Date.now() - outageStart))));
    const ackedDuringOutage = sender.acked;
    const deliveredDuringOutage = deliveries([receiver.elements], "pg").length;
    proxy.restore();

    for (; n < BEFORE + DURING + AFTER; n++) {
      sender.send(to, n);
      await pace();
    }
    await sender.settle(60_000);
    const total = BEFORE + DURING + AFTER;
    await until(() => new Set(deliveries([receiver.elements], "pg")).size >= total || sender.errored.size > 0, "every message delivered", 3000, 20);
    const figures = check(sender, deliveries([receiver.elements], "pg"));
    console.log(`# cluster fault postgres 10 s: ${JSON.stringify({ ...figures, ackedDuringOutage, deliveredDuringOutage, cutConnections, refusedDuringOutage: proxy.refused })}`);
    assert.ok(cutConnections > 0, "the fault was injected");
    assert.ok(proxy.refused > 0, "the nodes tried to reach Postgres during the outage");
    assert.ok(ackedDuringOutage <= BEFORE, `no ack covers a message sent during the outage (acked ${ackedDuringOutage} of ${BEFORE} sent before it)`);
    assert.equal(figures.acked, total, "every message acknowledged in the end");
    assert.equal(figures.errored, 0, "none refused");
    assert.equal(figures.lost, 0);
    assert.equal(figures.delivered, total);
    assert.equal(figures.duplicates, 0);
    // The receiver acknowledges all it handled: the durable copies go (none is delivered again later).
    receiver.send(`<a xmlns='${SM}' h='${handledBy(receiver, receiverSince)}'/>`);
    await until(async () => (await a.storage.offline.count("receiver@localhost")) === 0, "no offline copy left once the receiver acknowledged", 1500, 20);
  });
});
