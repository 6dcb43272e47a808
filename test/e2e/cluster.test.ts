/**
 * A cluster on real Redis and Postgres (docs/CLUSTER.md): nodes A and B in this process, node C a
 * child process (so it can be killed with SIGKILL), one fresh Postgres schema and one Redis key
 * prefix for the whole file. Users on different nodes subscribe, see presence and chat; bare-JID
 * routing picks the top priority anywhere; a full JID bound twice gets <conflict/>; resource
 * limits count every node; a killed node's entries expire and its users' messages are stored.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { Redis } from "ioredis";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { rawSession, openStream, header, streamError, errorReply, type RawClient } from "../helpers/raw.js";
import { PG_URL, postgresUnavailable } from "../helpers/postgres.js";
import { REDIS_URL, dropKeyPrefix, dropSchema, freshKeyPrefix, redisUnavailable, until } from "../helpers/cluster.js";
import type { Element } from "@xmpp/xml";

const NS_SM = "urn:xmpp:sm:3";
const missing = (await postgresUnavailable()) ?? (await redisUnavailable());
if (missing) console.log(`# SKIPPED cluster e2e: ${missing}`);

const HEARTBEAT_SECONDS = 0.25;
const NODE_TIMEOUT_SECONDS = 1;

/** Stanzas counted for XEP-0198 'h': what the client received since <enabled/>. */
function handled(c: RawClient, since: number): number {
  return c.elements.slice(since).filter((e) => ["message", "presence", "iq"].includes(e.name)).length;
}

async function enableSm(c: RawClient): Promise<number> {
  const mark = c.elements.length;
  c.send(`<enable xmlns='${NS_SM}'/>`);
  await c.waitForElement((e) => e.is("enabled", NS_SM), 10_000, mark);
  return c.elements.length;
}

const message = (id: string) => (e: Element) => e.is("message") && e.attrs.id === id;

describe("cluster (e2e, Redis + Postgres)", { skip: missing ? `services unreachable: ${missing}` : false }, () => {
  const schema = `parley_cluster_${randomBytes(6).toString("hex")}`;
  const keyPrefix = freshKeyPrefix();
  const storage = { driver: "postgres", url: PG_URL, schema, poolSize: 4 };
  const cluster = (nodeId: string) => ({ nodeId, redisUrl: REDIS_URL, keyPrefix, heartbeatSeconds: HEARTBEAT_SECONDS, nodeTimeoutSeconds: NODE_TIMEOUT_SECONDS });
  const limits = { maxResourcesPerUser: 6 };
  let a: TestServer;
  let b: TestServer;
  const clients: RawClient[] = [];
  const login = async (server: TestServer, user: string, resource: string) => {
    const c = await rawSession(server.ports.c2sDirectTls!, user, "pw", resource);
    clients.push(c);
    return c;
  };
  /** Both nodes know the session (each node learns the other's from the directory channel). */
  const known = (full: string) => until(() => a.sessions.get(full) !== undefined && b.sessions.get(full) !== undefined, `${full} known on both nodes`);

  before(async () => {
    // One after the other: the first runs the schema's migrations.
    a = await startTestServer({ storage, limits, cluster: cluster("a") });
    b = await startTestServer({ storage, limits, cluster: cluster("b") });
    for (const user of ["alice", "bob", "carol", "dave", "erin", "frank", "grace"]) await a.accounts.create(`${user}@localhost`, "pw");
  });

  after(async () => {
    for (const c of clients) c.close();
    await a?.cleanup();
    await b?.cleanup();
    await dropSchema(schema);
    await dropKeyPrefix(keyPrefix);
  });

  it("users on different nodes subscribe, see each other's presence and chat", async () => {
    const alice = await login(a, "alice", "pc");
    const bob = await login(b, "bob", "phone");
    await known("alice@localhost/pc");
    await known("bob@localhost/phone");
    for (const c of [alice, bob]) {
      c.send("<iq type='get' id='roster1'><query xmlns='jabber:iq:roster'/></iq>");
      await c.waitForElement((e) => e.is("iq") && e.attrs.id === "roster1" && e.attrs.type === "result");
    }
    alice.send("<presence/>");
    bob.send("<presence/>");
    await until(() => a.sessions.get("bob@localhost/phone")?.presence !== undefined, "bob available as node a sees it");
    // RFC 6121 §3.1.3: the request reaches the contact's available resources that asked for the roster.
    alice.send("<presence to='bob@localhost' type='subscribe'/>");
    await bob.waitForElement((e) => e.is("presence") && e.attrs.type === "subscribe" && e.attrs.from === "alice@localhost", 10_000);
    bob.send("<presence to='alice@localhost' type='subscribed'/>");
    await alice.waitForElement((e) => e.is("presence") && e.attrs.type === "subscribed" && e.attrs.from === "bob@localhost", 10_000);
    const mark = alice.elements.length;
    bob.send("<presence><status>on node b</status></presence>");
    // RFC 6121 §4.4: bob's presence broadcast reaches his subscriber on the other node.
    const seen = await alice.waitForElement((e) => e.is("presence") && e.attrs.from === "bob@localhost/phone" && e.getChildText("status") === "on node b", 10_000, mark);
    assert.equal(seen.attrs.type, undefined);
    alice.send("<message to='bob@localhost' type='chat' id='m1'><body>hello from a</body></message>");
    const got = await bob.waitForElement(message("m1"), 10_000);
    assert.equal(got.attrs.from, "alice@localhost/pc");
    assert.equal(got.getChildText("body"), "hello from a");
    bob.send("<message to='alice@localhost/pc' type='chat' id='m2'><body>hello from b</body></message>");
    const back = await alice.waitForElement(message("m2"), 10_000);
    assert.equal(back.attrs.from, "bob@localhost/phone");
  });

  it("a message to a session with stream management on another node is stored until its client acknowledges it", async () => {
    const alice = await login(a, "alice", "sm");
    const bob = await login(b, "bob", "sm");
    await known("bob@localhost/sm");
    const aliceSince = await enableSm(alice);
    const bobSince = await enableSm(bob);
    alice.send("<message to='bob@localhost/sm' type='chat' id='durable1'><body>kept until acked</body></message>");
    alice.send(`<r xmlns='${NS_SM}'/>`);
    const ack = await alice.waitForElement((e) => e.is("a", NS_SM) && Number(e.attrs.h) >= 1, 10_000, aliceSince);
    assert.equal(Number(ack.attrs.h), 1);
    // The sender's 'h' covers the message once storage has it: the row is there before bob acknowledges.
    const rows = await a.storage.offline.list("bob@localhost", 10);
    assert.ok(rows.some((r) => r.stanza.includes("durable1")), "the durable copy exists while bob has not acknowledged");
    await bob.waitForElement(message("durable1"), 10_000, bobSince);
    bob.send(`<a xmlns='${NS_SM}' h='${handled(bob, bobSince)}'/>`);
    await until(async () => !(await a.storage.offline.list("bob@localhost", 10)).some((r) => r.stanza.includes("durable1")), "durable copy removed after bob's ack on node b");
  });

  it("a message to a bare JID goes to the top-priority resource, on whichever node it is", async () => {
    const alice = await login(a, "alice", "prio");
    const desk = await login(a, "bob", "desk");
    const laptop = await login(b, "bob", "laptop");
    desk.send("<presence><priority>1</priority></presence>");
    laptop.send("<presence><priority>7</priority></presence>");
    await until(() => a.sessions.get("bob@localhost/laptop")?.priority === 7 && b.sessions.get("bob@localhost/desk")?.priority === 1, "priorities known on both nodes");
    alice.send("<message to='bob@localhost' type='chat' id='bare1'><body>to the top priority</body></message>");
    await laptop.waitForElement(message("bare1"), 10_000);
    // Markers sent after it, to the other resources: once they arrive, bare1 would have too.
    alice.send("<message to='bob@localhost/desk' type='chat' id='marker-desk'><body>m</body></message>");
    alice.send("<message to='bob@localhost/phone' type='chat' id='marker-phone'><body>m</body></message>");
    await desk.waitForElement(message("marker-desk"), 10_000);
    const phone = clients[1]!;
    await phone.waitForElement(message("marker-phone"), 10_000);
    assert.equal(desk.anyElement(message("bare1")), false);
    assert.equal(phone.anyElement(message("bare1")), false);
    for (const c of [desk, laptop]) c.send("<presence type='unavailable'/>");
  });

  it("the same full JID bound on another node replaces the old session with <conflict/>", async () => {
    const first = await login(a, "carol", "same");
    await known("carol@localhost/same");
    const second = await login(b, "carol", "same");
    await first.waitForElement(streamError("conflict"), 10_000);
    await first.closed;
    await until(() => a.sessions.get("carol@localhost/same") !== undefined && a.sessions.get("carol@localhost/same") !== b.sessions.get("carol@localhost/same")
      && a.sessions.get("carol@localhost/same")!.id === b.sessions.get("carol@localhost/same")!.id, "node a knows carol/same on node b");
    const alice = await login(a, "alice", "conflict");
    alice.send("<message to='carol@localhost/same' type='chat' id='after-conflict'><body>x</body></message>");
    await second.waitForElement(message("after-conflict"), 10_000);
  });

  it("the resource limit counts the user's sessions on every node", async () => {
    await login(a, "dave", "1");
    await login(b, "dave", "2");
    await login(a, "dave", "3");
    await login(b, "dave", "4");
    await login(a, "dave", "5");
    await login(b, "dave", "6");
    for (const r of ["1", "2", "3", "4", "5", "6"]) await known(`dave@localhost/${r}`);
    const seventh = await openStream(a.ports.c2sDirectTls!);
    clients.push(seventh);
    seventh.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from("\0dave\0pw").toString("base64")}</auth>`);
    await seventh.waitForElement((e) => e.is("success"));
    seventh.restartParser();
    seventh.send(header());
    await seventh.waitForElement((e) => e.is("features") && !!e.getChild("bind"));
    seventh.send("<iq type='set' id='bind7'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>7</resource></bind></iq>");
    // RFC 6120 §7.6.2.1: resource-constraint when the account has reached its limit.
    await seventh.waitForElement(errorReply("bind7", "resource-constraint"), 10_000);
  });

  it("carbons reach the user's resources on other nodes (XEP-0280)", async () => {
    const desk = await login(a, "grace", "desk");
    const phone = await login(b, "grace", "phone");
    const frank = await login(a, "frank", "carbons");
    phone.send("<iq type='set' id='carbons1'><enable xmlns='urn:xmpp:carbons:2'/></iq>");
    await phone.waitForElement((e) => e.is("iq") && e.attrs.id === "carbons1" && e.attrs.type === "result", 10_000);
    await until(() => a.sessions.get("grace@localhost/phone")?.flags.has("carbons") === true, "node a knows grace/phone enabled carbons");
    const forwarded = (kind: string, id: string) => (e: Element) => e.is("message") && e.getChild(kind, "urn:xmpp:carbons:2")?.getChild("forwarded", "urn:xmpp:forward:0")?.getChild("message")?.attrs.id === id;
    // Received: frank → grace/desk on node a; the copy goes to grace/phone on node b.
    frank.send("<message to='grace@localhost/desk' type='chat' id='carbon-in'><body>to the desk</body></message>");
    await desk.waitForElement(message("carbon-in"), 10_000);
    const received = await phone.waitForElement(forwarded("received", "carbon-in"), 10_000);
    assert.equal(received.attrs.from, "grace@localhost");
    // Sent: grace/desk → frank on node a; the copy goes to grace/phone on node b.
    desk.send("<message to='frank@localhost/carbons' type='chat' id='carbon-out'><body>from the desk</body></message>");
    await frank.waitForElement(message("carbon-out"), 10_000);
    await phone.waitForElement(forwarded("sent", "carbon-out"), 10_000);
    for (const c of [desk, phone, frank]) c.close();
  });

  it("a block on one node holds on the others: their cached blocklists are invalidated", async () => {
    const frank = await login(a, "frank", "x");
    const grace = await login(b, "grace", "y");
    frank.send("<presence/>");
    await until(() => b.sessions.get("frank@localhost/x")?.presence !== undefined, "frank available on node b");
    // Node b now holds frank's (empty) blocklist in its cache.
    grace.send("<message to='frank@localhost' type='chat' id='before-block'><body>hi</body></message>");
    await frank.waitForElement(message("before-block"), 10_000);
    frank.send("<iq type='set' id='block1'><block xmlns='urn:xmpp:blocking'><item jid='grace@localhost'/></block></iq>");
    await frank.waitForElement((e) => e.is("iq") && e.attrs.id === "block1" && e.attrs.type === "result", 10_000);
    // The invalidation reaches node b asynchronously: grace tries until her message is refused
    // there. Meanwhile node a's output filter already holds (XEP-0191 §3.4): nothing reaches frank.
    const outcomes: string[] = [];
    await until(async () => {
      const id = `after-block-${outcomes.length}`;
      grace.send(`<message to='frank@localhost' type='chat' id='${id}'><body>hi</body></message>`);
      const outcome = await Promise.race([
        grace.waitForElement(errorReply(id, "service-unavailable"), 2000).then(() => "refused"),
        frank.waitForElement(message(id), 2000).then(() => "delivered"),
      ]).catch(() => "dropped");
      outcomes.push(outcome);
      return outcome === "refused";
    }, "grace's messages refused on node b after frank blocked her on node a", 20, 0);
    assert.equal(outcomes.includes("delivered"), false);
    console.log(`# cluster: blocklist invalidation: ${outcomes.join(", ")}`);
  });

  it("nothing is added to the inbox of a node once it was reaped: the message stays in storage", async () => {
    const alice = await login(a, "alice", "reaped");
    const target = await login(b, "carol", "reaped");
    await known("carol@localhost/reaped");
    const redis = new Redis(REDIS_URL);
    try {
      // What a reaper does first; node a still has carol's session in its replica.
      await redis.set(`${keyPrefix}:reaped:b`, "test");
      alice.send("<message to='carol@localhost/reaped' type='chat' id='to-reaped'><body>not into a reaped inbox</body></message>");
      await until(async () => (await a.storage.offline.list("carol@localhost", 10)).some((r) => r.stanza.includes("to-reaped")), "the message kept in storage");
      assert.equal(a.sessions.get("carol@localhost/reaped"), undefined, "node a takes node b for dead");
      assert.equal(await redis.xlen(`${keyPrefix}:inbox:b`), 0);
    } finally {
      await redis.del(`${keyPrefix}:reaped:b`);
      redis.disconnect();
    }
    // Node b writes again (a new session there): node a counts it alive again.
    await login(b, "carol", "back");
    await known("carol@localhost/back");
    assert.equal(target.anyElement(message("to-reaped")), false);
  });

  it("kill -9 of a node: its directory entries expire, its users' contacts see them go, and messages to them go to offline storage", async () => {
    const child: ChildProcess = spawn(process.execPath, ["--import", "tsx", "test/helpers/cluster-node.ts", JSON.stringify({ storage, cluster: cluster("c") })], { stdio: ["ignore", "pipe", "inherit"] });
    try {
      const ports = await new Promise<{ c2sDirectTls: number }>((resolve, reject) => {
        createInterface({ input: child.stdout! }).once("line", (line) => resolve(JSON.parse(line) as { c2sDirectTls: number }));
        child.once("exit", (code) => reject(new Error(`node c exited (${code})`)));
      });
      // alice is subscribed to erin's presence (RFC 6121 §3): she learns when erin's node dies.
      await a.storage.roster.put("alice@localhost", { jid: "erin@localhost", groups: [], subscription: "to", ask: false, approved: false });
      await a.storage.roster.put("erin@localhost", { jid: "alice@localhost", groups: [], subscription: "from", ask: false, approved: false });
      const alice = await login(a, "alice", "kill");
      alice.send("<presence/>");
      const erin = await rawSession(ports.c2sDirectTls, "erin", "pw", "phone");
      clients.push(erin);
      await known("erin@localhost/phone");
      await until(() => a.sessions.get("alice@localhost/kill")?.presence !== undefined, "node a has alice's presence");
      erin.send("<presence/>");
      await alice.waitForElement((e) => e.is("presence") && e.attrs.from === "erin@localhost/phone" && e.attrs.type === undefined, 10_000);
      await enableSm(erin);
      const aliceSince = await enableSm(alice);

      const killedAt = Date.now();
      child.kill("SIGKILL");
      await erin.closed;
      // Before node a has noticed: the message is for a session it still believes in.
      alice.send("<message to='erin@localhost/phone' type='chat' id='k1'><body>in flight</body></message>");
      alice.send(`<r xmlns='${NS_SM}'/>`);
      await alice.waitForElement((e) => e.is("a", NS_SM) && Number(e.attrs.h) >= 1, 10_000, aliceSince);
      const acked = 1;
      await until(() => a.sessions.get("erin@localhost/phone") === undefined && b.sessions.get("erin@localhost/phone") === undefined, "erin's entry gone from both nodes", 1000);
      const expiredAfterMs = Date.now() - killedAt;
      const redis = new Redis(REDIS_URL);
      try {
        await until(async () => (await redis.hexists(`${keyPrefix}:sess:erin@localhost`, "erin@localhost/phone")) === 0, "erin's entry gone from Redis", 1000);
      } finally {
        redis.disconnect();
      }
      const removedAfterMs = Date.now() - killedAt;
      // RFC 6121 §4.5.3: the session ended without an unavailable presence; the server sends one.
      await alice.waitForElement((e) => e.is("presence") && e.attrs.from === "erin@localhost/phone" && e.attrs.type === "unavailable", 10_000, aliceSince);
      console.log(`# cluster: node killed; its sessions unroutable after ${expiredAfterMs} ms, its Redis entries removed after ${removedAfterMs} ms (heartbeat ${HEARTBEAT_SECONDS * 1000} ms, node timeout ${NODE_TIMEOUT_SECONDS * 1000} ms; bound ${(NODE_TIMEOUT_SECONDS + HEARTBEAT_SECONDS) * 1000} ms + one tick)`);

      alice.send("<message to='erin@localhost' type='chat' id='k2'><body>after the death</body></message>");
      alice.send(`<r xmlns='${NS_SM}'/>`);
      await alice.waitForElement((e) => e.is("a", NS_SM) && Number(e.attrs.h) >= 2, 10_000, aliceSince);
      await until(async () => (await a.storage.offline.count("erin@localhost")) === 2, "both messages in erin's offline storage");
      const back = await login(b, "erin", "phone");
      back.send("<presence/>");
      const delivered = await Promise.all(["k1", "k2"].map((id) => back.waitForElement(message(id), 10_000)));
      assert.deepEqual(delivered.map((m) => m.getChildText("body")), ["in flight", "after the death"]);
      assert.equal(alice.anyElement((e) => e.is("message") && e.attrs.type === "error"), false);
      console.log(`# cluster kill -9: sent 2, acked ${acked + 1}, delivered ${delivered.length}, duplicates ${back.elements.filter((e) => e.is("message") && ["k1", "k2"].includes(e.attrs.id)).length - 2}, lost ${2 - delivered.length}`);
    } finally {
      child.kill("SIGKILL");
    }
  });
});
