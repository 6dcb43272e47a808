/**
 * XEP-0198 §5 resumption on another cluster node (docs/CLUSTER.md, "Resumption on another node"),
 * on real Redis and Postgres: nodes A and B in this process, node C a child process (so it can be
 * killed with SIGKILL). A session hibernated on A is resumed through B with <resume/> and inline in
 * SASL2; its unacknowledged stanzas are replayed once, their durable copies go once acknowledged;
 * another account cannot take it; a killed node's session cannot be resumed and its messages wait
 * in offline storage.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { isDeepStrictEqual } from "node:util";
import type { Element } from "@xmpp/xml";
import { Redis } from "ioredis";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { RawClient, authenticatedStream, openStream, rawSession, streamError, tree, NS_STANZAS } from "../helpers/raw.js";
import { PG_URL, postgresUnavailable } from "../helpers/postgres.js";
import { REDIS_URL, dropKeyPrefix, dropSchema, freshKeyPrefix, redisUnavailable, until } from "../helpers/cluster.js";
import { xml } from "../helpers/xmpp-client.js";
import { parseElement } from "../../src/xmpp/xml-parse.js";
import { WsClient } from "../helpers/websocket.js";
import { ClusterSessionTable, RemoteSession } from "../../src/cluster/sessions.js";

const SM = "urn:xmpp:sm:3";
const SASL2 = "urn:xmpp:sasl:2";
const BIND2 = "urn:xmpp:bind:0";
const missing = (await postgresUnavailable()) ?? (await redisUnavailable());
if (missing) console.log(`# SKIPPED cluster resumption e2e: ${missing}`);

const message = (id: string) => (e: Element) => e.is("message") && e.attrs.id === id;
const failedWith = (condition: string) => (e: Element) =>
  e.is("failed", SM) && isDeepStrictEqual(tree(e).children, [tree(xml(condition, { xmlns: NS_STANZAS }))]);
/** Stanzas counted for XEP-0198 'h': what the client received from index `since` on. */
const stanzasSince = (c: RawClient, since: number) => c.elements.slice(since).filter((e) => ["message", "presence", "iq"].includes(e.name));

async function enableResumption(c: RawClient): Promise<{ id: string; since: number }> {
  const mark = c.elements.length;
  c.send(`<enable xmlns='${SM}' resume='true'/>`);
  const enabled = await c.waitForElement((e) => e.is("enabled", SM), 10_000, mark);
  return { id: enabled.attrs.id as string, since: c.elements.length };
}

/** The ids of the messages a client got, in order, and the counts the report prints. */
function tally(sent: readonly string[], received: readonly string[]): { delivered: number; duplicates: number; lost: number } {
  const unique = new Set(received.filter((id) => sent.includes(id)));
  return { delivered: unique.size, duplicates: received.filter((id) => sent.includes(id)).length - unique.size, lost: sent.length - unique.size };
}

describe("resumption on another cluster node (e2e, Redis + Postgres)", { skip: missing ? `services unreachable: ${missing}` : false }, () => {
  const schema = `parley_resume_${randomBytes(6).toString("hex")}`;
  const keyPrefix = freshKeyPrefix();
  const storage = { driver: "postgres", url: PG_URL, schema, poolSize: 4 };
  // A node timeout of 2 s: a loaded machine must not take a slow child node for dead.
  const cluster = (nodeId: string) => ({ nodeId, redisUrl: REDIS_URL, keyPrefix, heartbeatSeconds: 0.5, nodeTimeoutSeconds: 2 });
  let a: TestServer;
  let b: TestServer;
  const clients: RawClient[] = [];
  const track = <T extends RawClient>(c: T) => { clients.push(c); return c; };
  const login = async (server: TestServer, user: string, resource: string) => track(await rawSession(server.ports.c2sDirectTls!, user, "pw", resource));
  const offlineIds = async (user: string) => (await a.storage.offline.list(user, 100)).map((r) => parseElement(r.stanza).attrs.id as string);
  /** Node `server` sees the session as one of another node's. */
  const remoteOn = (server: TestServer, full: string, node: string) =>
    until(() => { const s = server.sessions.get(full); return s instanceof RemoteSession && s.node === node; }, `${full} known on node ${node} by the other node`);

  before(async () => {
    a = await startTestServer({ storage, cluster: cluster("a") });
    b = await startTestServer({ storage, cluster: cluster("b") });
    for (const user of ["alice", "bob", "carol", "dave", "erin", "frank"]) await a.accounts.create(`${user}@localhost`, "pw");
    // alice is subscribed to bob's presence (RFC 6121 §3): she would learn if his session ended.
    await a.storage.roster.put("alice@localhost", { jid: "bob@localhost", groups: [], subscription: "to", ask: false, approved: false });
    await a.storage.roster.put("bob@localhost", { jid: "alice@localhost", groups: [], subscription: "from", ask: false, approved: false });
  });

  after(async () => {
    for (const c of clients) c.close();
    await a?.cleanup();
    await b?.cleanup();
    await dropSchema(schema);
    await dropKeyPrefix(keyPrefix);
  });

  it("a session hibernated on node A is resumed on node B: unacknowledged stanzas replayed once, durable copies removed on ack, contacts see no change", async () => {
    const alice = await login(b, "alice", "desk");
    alice.send("<presence/>");
    const bob = await login(a, "bob", "phone");
    const { id: previd, since } = await enableResumption(bob);
    bob.send("<presence/>");
    // Its initial presence flushes bob's offline storage on node a (XEP-0160); waited for, so that
    // the flush cannot meet the durable copies of the messages below (see the report: a flush on
    // one node does not know the copies another node is still delivering live).
    await bob.waitForElement((e) => e.is("presence") && e.attrs.from === "bob@localhost/phone", 10_000, since);
    await remoteOn(b, "bob@localhost/phone", "a");
    await until(() => b.sessions.get("bob@localhost/phone")?.resumeId === previd, "node b's replica knows bob's resumption id");
    const aliceMark = alice.elements.length;
    const sent = ["r1", "r2", "r3", "r4", "r5"];
    for (const id of sent.slice(0, 3)) alice.send(`<message to='bob@localhost/phone' type='chat' id='${id}'><body>${id}</body></message>`);
    await bob.waitForElement(message("r3"), 10_000, since);
    // bob acknowledges up to r1 only, then his network drops.
    const upToR1 = stanzasSince(bob, since);
    const acked = upToR1.findIndex((e) => e.attrs.id === "r1") + 1;
    bob.send(`<a xmlns='${SM}' h='${acked}'/>`);
    const firstConnection = stanzasSince(bob, since).filter((e) => e.is("message")).map((e) => e.attrs.id as string);
    bob.socket.destroy();
    await until(() => a.sessions.get("bob@localhost/phone")?.hibernating === true, "bob's session hibernates on node a");
    alice.send(`<message to='bob@localhost/phone' type='chat' id='r4'><body>r4</body></message>`);
    // The durable copies of what bob has not acknowledged (XEP-0160 storage before the sender's ack).
    await until(async () => { const ids = await offlineIds("bob@localhost"); return ["r2", "r3", "r4"].every((id) => ids.includes(id)); }, "r2–r4 stored until acknowledged");
    await until(async () => !(await offlineIds("bob@localhost")).includes("r1"), "r1's copy goes with bob's ack");

    const back = track(await authenticatedStream(b.ports.c2sDirectTls!, "bob", "pw"));
    const mark = back.elements.length;
    const askedAt = process.hrtime.bigint();
    back.send(`<resume xmlns='${SM}' previd='${previd}' h='${acked}'/>`);
    const resumed = await back.waitForElement((e) => e.is("resumed", SM), 10_000, mark);
    const handoverMs = Number(process.hrtime.bigint() - askedAt) / 1e6;
    // Node a pointed its replica at node b as it sent the state, before b could read it: what a
    // routes for bob from now on follows the session, whether or not b's own entry arrived yet.
    const forwarded = a.sessions.get("bob@localhost/phone");
    assert.ok(forwarded instanceof RemoteSession && forwarded.node === "b", "node a forwards to node b as soon as it handed the session over");
    // XEP-0198 §5: h is what the server handled of bob's stanzas: his presence.
    assert.deepEqual(tree(resumed), tree(xml("resumed", { xmlns: SM, h: "1", previd })));
    await back.waitForElement(message("r4"), 10_000, mark);
    const replayed = () => back.elements.slice(mark).filter((e) => e.is("message")).map((e) => e.attrs.id as string);
    assert.deepEqual(replayed(), ["r2", "r3", "r4"]);
    const local = b.sessions.get("bob@localhost/phone");
    assert.ok(local && !(local instanceof RemoteSession), "the session now lives on node b");
    assert.ok(local.presence, "with the presence it had");
    assert.equal(local.resumeId, previd, "resumable with the same id");
    await remoteOn(a, "bob@localhost/phone", "b");
    assert.equal((a.sessions as ClusterSessionTable).local("bob@localhost/phone"), undefined, "node a's copy is gone");

    // After the handover: a message from node a's side and one from node b's side reach the session on b.
    const carol = await login(a, "carol", "x");
    carol.send(`<message to='bob@localhost/phone' type='chat' id='r5'><body>r5</body></message>`);
    await back.waitForElement(message("r5"), 10_000, mark);
    const all = stanzasSince(back, mark).length;
    back.send(`<a xmlns='${SM}' h='${acked + all}'/>`);
    await until(async () => !(await offlineIds("bob@localhost")).some((id) => ["r2", "r3", "r4", "r5"].includes(id)), "durable copies removed after bob's ack on node b");
    alice.send(`<message to='bob@localhost/phone' type='chat' id='marker'><body>m</body></message>`);
    await back.waitForElement(message("marker"), 10_000, mark);
    assert.equal(alice.anyElement((e) => e.is("presence") && e.attrs.from === "bob@localhost/phone" && e.attrs.type === "unavailable", aliceMark), false,
      "RFC 6121 §4.5: the session never ended, so no unavailable presence");
    const received = [...firstConnection, ...replayed()];
    const counts = tally(sent, received);
    // r2 and r3 were written to the first connection and not acknowledged: XEP-0198 sends them again.
    assert.deepEqual(counts, { delivered: 5, duplicates: 2, lost: 0 });
    console.log(`# cluster resume (<resume/>, node a → b): sent ${sent.length}, acked ${sent.length}, delivered ${counts.delivered}, duplicates ${counts.duplicates} (r2, r3: written, not acknowledged, resent as XEP-0198 §5 says), lost ${counts.lost}; <resume/> to <resumed/> ${handoverMs.toFixed(1)} ms`);
  });

  it("another account cannot take the session; its owner resumes it inline in SASL2 on the other node while the old connection is still open", async () => {
    const agent = randomUUID();
    const first = track(await openStream(a.ports.c2sDirectTls!));
    first.send(`<authenticate xmlns='${SASL2}' mechanism='PLAIN'><initial-response>${Buffer.from("\0dave\0pw").toString("base64")}</initial-response>`
      + `<user-agent id='${agent}'><software>test</software></user-agent><bind xmlns='${BIND2}'><tag>phone</tag><enable xmlns='${SM}' resume='true'/></bind></authenticate>`);
    const success = await first.waitForElement((e) => e.is("success", SASL2), 10_000);
    const enabled = success.getChild("bound", BIND2)?.getChild("enabled", SM);
    assert.ok(enabled, "resumption enabled inline (XEP-0386)");
    const previd = enabled.attrs.id as string;
    const full = success.getChildText("authorization-identifier")!;
    const since = first.elements.length;
    await remoteOn(b, full, "a");
    await until(() => b.sessions.get(full)?.resumeId === previd, "node b knows dave's resumption id");
    const erin = await login(b, "erin", "e");
    erin.send(`<message to='${full}' type='chat' id='d1'><body>d1</body></message>`);
    await first.waitForElement(message("d1"), 10_000, since);

    // XEP-0198 §5: only the account that enabled it may resume it.
    const intruder = track(await authenticatedStream(b.ports.c2sDirectTls!, "erin", "pw"));
    intruder.send(`<resume xmlns='${SM}' previd='${previd}' h='0'/>`);
    await intruder.waitForElement(failedWith("item-not-found"), 10_000);
    // Node b never asks on erin's behalf (the id is not among her entries); node a checks too: a
    // handover asked for erin on the bus directly is answered without a session.
    const redis = new Redis(REDIS_URL);
    try {
      await redis.xadd(`${keyPrefix}:inbox:a`, "*", "k", "handover", "u", "erin@localhost", "sm", previd, "r", "probe", "id", "probe:h:0");
      let answer: string[] | undefined;
      await until(async () => { answer = (await redis.xrange(`${keyPrefix}:inbox:probe`, "-", "+"))[0]?.[1]; return answer !== undefined; }, "node a answers the forged handover");
      assert.deepEqual(answer, ["k", "handed", "id", "probe:h:0"], "no state in the answer");
    } finally {
      await redis.del(`${keyPrefix}:inbox:probe`);
      redis.disconnect();
    }
    assert.ok((a.sessions as ClusterSessionTable).local(full), "the session stays on node a");

    // dave's phone moves to another network; the old TCP connection is still open on node a.
    const moved = track(await openStream(b.ports.c2sDirectTls!));
    moved.send(`<authenticate xmlns='${SASL2}' mechanism='PLAIN'><initial-response>${Buffer.from("\0dave\0pw").toString("base64")}</initial-response>`
      + `<user-agent id='${agent}'><software>test</software></user-agent><resume xmlns='${SM}' previd='${previd}' h='0'/></authenticate>`);
    const answer = await moved.waitForElement((e) => e.is("success", SASL2), 10_000);
    assert.equal(answer.getChildText("authorization-identifier"), full, "the resumed session's full JID");
    assert.deepEqual(tree(answer.getChild("resumed", SM)!), tree(xml("resumed", { xmlns: SM, h: "0", previd })));
    const replay = await moved.waitForElement(message("d1"), 10_000);
    assert.equal(replay.getChildText("body"), "d1");
    await first.waitForElement(streamError("conflict"), 10_000, since);
    erin.send(`<message to='${full}' type='chat' id='d2'><body>d2</body></message>`);
    await moved.waitForElement(message("d2"), 10_000);
    assert.equal(first.anyElement(message("d2"), since), false);
  });

  /** erin on a WebSocket to node a with resumption enabled, known on node b; then the WebSocket drops without <close/>. */
  const droppedWebSession = async (resource: string): Promise<{ previd: string; full: string }> => {
    const web = await WsClient.connect(`wss://127.0.0.1:${a.ports.https}/xmpp-websocket`);
    await web.session("erin", "pw", resource);
    const from = web.elements.length;
    web.send(`<enable xmlns='${SM}' resume='true'/>`);
    const previd = (await web.waitForElement((e) => e.is("enabled", SM), 10_000, from)).attrs.id as string;
    const full = `erin@localhost/${resource}`;
    await until(() => b.sessions.get(full)?.resumeId === previd && b.sessions.get(full)?.transport === "websocket", "node b knows erin's WebSocket session and its resumption id");
    web.close();
    await web.closed;
    await until(() => a.sessions.get(full)?.hibernating === true, "erin's session hibernates on node a");
    return { previd, full };
  };

  it("a session started over WebSocket on node A is resumed over TCP on node B, with what was sent meanwhile", async () => {
    const { previd, full } = await droppedWebSession("roaming");
    const sender = await login(b, "carol", "ws-sender");
    sender.send(`<message to='${full}' type='chat' id='w1'><body>while away</body></message>`);
    await until(async () => (await offlineIds("erin@localhost")).includes("w1"), "w1 held on node a, its copy stored");
    const back = track(await authenticatedStream(b.ports.c2sDirectTls!, "erin", "pw"));
    const from = back.elements.length;
    back.send(`<resume xmlns='${SM}' previd='${previd}' h='0'/>`);
    await back.waitForElement((e) => e.is("resumed", SM) && e.attrs.previd === previd, 10_000, from);
    assert.equal((await back.waitForElement(message("w1"), 10_000, from)).attrs.from, "carol@localhost/ws-sender");
    await until(() => a.sessions.get(full)?.transport === "tcp", "node a sees the session on TCP now");
    assert.equal(b.sessions.get(full)?.transport, "tcp");
  });

  it("a resumption on the same node over another transport is recorded in the directory", async () => {
    const { previd, full } = await droppedWebSession("same-node");
    const back = track(await authenticatedStream(a.ports.c2sDirectTls!, "erin", "pw"));
    const mark = back.elements.length;
    back.send(`<resume xmlns='${SM}' previd='${previd}' h='0'/>`);
    await back.waitForElement((e) => e.is("resumed", SM), 10_000, mark);
    await until(() => b.sessions.get(full)?.transport === "tcp", "node b sees the session on TCP now");
  });

  it("the session of a killed node cannot be resumed (item-not-found); its unacknowledged messages wait in offline storage", async () => {
    const child: ChildProcess = spawn(process.execPath, ["--import", "tsx", "test/helpers/cluster-node.ts", JSON.stringify({ storage, cluster: cluster("c") })], { stdio: ["ignore", "pipe", "inherit"] });
    try {
      const ports = await new Promise<{ c2sDirectTls: number }>((resolve, reject) => {
        createInterface({ input: child.stdout! }).once("line", (line) => resolve(JSON.parse(line) as { c2sDirectTls: number }));
        child.once("exit", (code) => reject(new Error(`node c exited (${code})`)));
      });
      const frank = track(await rawSession(ports.c2sDirectTls, "frank", "pw", "phone"));
      const { id: previd, since } = await enableResumption(frank);
      await remoteOn(a, "frank@localhost/phone", "c");
      await until(() => b.sessions.get("frank@localhost/phone")?.resumeId === previd, "node b knows frank's resumption id");
      const alice = await login(a, "alice", "kill");
      const sent = ["k1", "k2"];
      for (const id of sent) alice.send(`<message to='frank@localhost/phone' type='chat' id='${id}'><body>${id}</body></message>`);
      // Their durable copies are committed before alice's 'h' covers them; whether node c wrote
      // them to frank before the kill does not matter: he never acknowledged them.
      await until(async () => { const ids = await offlineIds("frank@localhost"); return sent.every((id) => ids.includes(id)); }, "k1 and k2 stored until acknowledged");
      const firstConnection = stanzasSince(frank, since).filter((e) => e.is("message")).map((e) => e.attrs.id as string);
      frank.socket.destroy();
      child.kill("SIGKILL");

      const back = track(await authenticatedStream(b.ports.c2sDirectTls!, "frank", "pw"));
      back.send(`<resume xmlns='${SM}' previd='${previd}' h='0'/>`);
      await back.waitForElement(failedWith("item-not-found"), 10_000);
      assert.deepEqual((await offlineIds("frank@localhost")).sort(), ["k1", "k2"]);
      const mark = back.elements.length;
      back.send("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>phone</resource></bind></iq>");
      await back.waitForElement((e) => e.is("iq") && e.attrs.id === "bind" && e.attrs.type === "result", 10_000, mark);
      back.send("<presence/>");
      await Promise.all(sent.map((id) => back.waitForElement(message(id), 10_000, mark)));
      const received = [...firstConnection, ...back.elements.slice(mark).filter((e) => e.is("message")).map((e) => e.attrs.id as string)];
      const counts = tally(sent, received);
      assert.equal(counts.lost, 0);
      console.log(`# cluster resume after kill -9 of the holder: sent ${sent.length}, acked 0, delivered ${counts.delivered}, duplicates ${counts.duplicates} (written before the kill, never acknowledged), lost ${counts.lost}`);
    } finally {
      child.kill("SIGKILL");
    }
  });
});
