/**
 * Per-session state and caches across cluster nodes, on real Redis and Postgres (docs/CLUSTER.md,
 * "Per-session state" and "Caches with one writer"): two nodes in this process, one fresh schema
 * and one Redis key prefix. PEP +notify (XEP-0163 §4 via XEP-0115) and roster interest (RFC 6121
 * §2.2) of a session on node B are seen on node A; an IQ the server sends from node A to a session
 * on node B gets its answer; an account deleted on node A is gone for node B's message routing;
 * push registrations written on node A are read fresh on node B.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { z } from "zod";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { rawSession, errorReply, iqResult, type RawClient } from "../helpers/raw.js";
import { PG_URL, postgresUnavailable } from "../helpers/postgres.js";
import { REDIS_URL, dropKeyPrefix, dropSchema, freshKeyPrefix, redisUnavailable, until } from "../helpers/cluster.js";
import { AppServer, Component, handshakeAccepted } from "../helpers/component.js";
import { capsVerification } from "../../src/xmpp/caps.js";
import { defaultModules } from "../../src/modules/index.js";
import { defineModule, type ModuleContext } from "../../src/module.js";
import { el } from "../../src/xmpp/xml.js";
import { StanzaError } from "../../src/errors.js";
import type { Element } from "@xmpp/xml";

const missing = (await postgresUnavailable()) ?? (await redisUnavailable());
if (missing) console.log(`# SKIPPED cluster state e2e: ${missing}`);

const TUNE = "http://jabber.org/protocol/tune";
const EVENT = "http://jabber.org/protocol/pubsub#event";
const DISCO_INFO = "http://jabber.org/protocol/disco#info";
const message = (id: string) => (e: Element) => e.is("message") && e.attrs.id === id;
const tuneEvent = (from: string) => (e: Element) => e.is("message") && e.attrs.from === from && e.getChild("event", EVENT)?.getChild("items")?.attrs.node === TUNE;
const rosterPush = (jid: string) => (e: Element) => e.is("iq") && e.attrs.type === "set" && e.getChild("query", "jabber:iq:roster")?.getChild("item")?.attrs.jid === jid;

/** Shows XEP-0115 caps with `features` in available presence and answers the server's disco#info on node#ver. */
async function announceCaps(c: RawClient, features: readonly string[]): Promise<void> {
  const identity = { category: "client", type: "pc", name: "cluster test" };
  const all = ["http://jabber.org/protocol/caps", DISCO_INFO, ...features];
  const ver = capsVerification([identity], all);
  const mark = c.elements.length;
  c.send(`<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://test.example' ver='${ver}'/></presence>`);
  const query = await c.waitForElement((e) => e.is("iq") && e.attrs.type === "get" && e.getChild("query", DISCO_INFO) !== undefined, 10_000, mark);
  c.send(el("iq", { type: "result", id: query.attrs.id!, to: query.attrs.from! },
    el("query", { xmlns: DISCO_INFO, node: query.getChild("query")!.attrs.node! },
      el("identity", identity), ...all.map((f) => el("feature", { var: f })))).toString());
}

/** Hands the test each node's module context, to send IQs as the server does (Router.request). */
function probe(contexts: ModuleContext<Record<string, never>>[]) {
  return defineModule({
    name: "probe",
    implements: [{ spec: "XEP-0199", version: "2.0.1", note: "test probe: the server pings clients through Router.request" }],
    options: z.strictObject({}),
    start(ctx) {
      contexts.push(ctx);
    },
  });
}

describe("cluster per-session state and caches (e2e, Redis + Postgres)", { skip: missing ? `services unreachable: ${missing}` : false }, () => {
  const schema = `parley_cluster_state_${randomBytes(6).toString("hex")}`;
  const keyPrefix = freshKeyPrefix();
  const storage = { driver: "postgres", url: PG_URL, schema, poolSize: 4 };
  // Generous: nobody dies here, and on a loaded machine an event loop that stalls past a short
  // timeout would get a live node taken for dead.
  const cluster = (nodeId: string) => ({ nodeId, redisUrl: REDIS_URL, keyPrefix, heartbeatSeconds: 1, nodeTimeoutSeconds: 10 });
  const listen = { address: "127.0.0.1", c2s: 0, c2sDirectTls: 0, https: null, http: null, component: 0 };
  const components = { "push.example.net": { secret: "app-server-secret" } };
  let a: TestServer;
  let b: TestServer;
  const contexts: ModuleContext<Record<string, never>>[] = [];
  const clients: RawClient[] = [];
  const sockets: Component[] = [];
  const login = async (server: TestServer, user: string, resource: string) => {
    const c = await rawSession(server.ports.c2sDirectTls!, user, "pw", resource);
    clients.push(c);
    return c;
  };
  const known = (full: string) => until(() => a.sessions.get(full) !== undefined && b.sessions.get(full) !== undefined, `${full} known on both nodes`);
  const appServer = async (server: TestServer) => {
    const component = await Component.open(server.ports.component!, "push.example.net");
    sockets.push(component);
    await component.handshake("app-server-secret");
    await component.waitForElement(handshakeAccepted);
    return new AppServer(component);
  };

  before(async () => {
    const modules = [...defaultModules, probe(contexts)];
    a = await startTestServer({ storage, listen, components, cluster: cluster("a"), modules: { push: { coalesceSeconds: 0 } } }, { modules });
    b = await startTestServer({ storage, listen, components, cluster: cluster("b"), modules: { push: { coalesceSeconds: 0 } } }, { modules });
    for (const user of ["alice", "bob", "carol", "dave", "erin", "frank"]) await a.accounts.create(`${user}@localhost`, "pw");
    for (const [x, y] of [["alice", "bob"], ["bob", "alice"], ["alice", "carol"], ["carol", "alice"]]) {
      await a.storage.roster.put(`${x}@localhost`, { jid: `${y}@localhost`, groups: [], subscription: "both", ask: false, approved: false });
    }
  });

  after(async () => {
    for (const c of clients) c.close();
    for (const s of sockets) s.socket.destroy();
    await a?.cleanup();
    await b?.cleanup();
    await dropSchema(schema);
    await dropKeyPrefix(keyPrefix);
  });

  it("a contact's resource on another node whose caps show +notify gets the publish (XEP-0163 §4); one without does not", async () => {
    const alice = await login(a, "alice", "pub");
    const bob = await login(b, "bob", "notify");
    const carol = await login(b, "carol", "plain");
    await announceCaps(bob, [`${TUNE}+notify`]);
    await announceCaps(carol, ["urn:xmpp:receipts"]);
    alice.send("<presence/>");
    await until(() => a.sessions.get("bob@localhost/notify")?.flags.has(`${TUNE}+notify`) === true, "node a sees bob's +notify");
    await until(() => a.sessions.get("carol@localhost/plain")?.presence !== undefined, "node a sees carol available");
    alice.send(`<iq type='set' id='pub1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='${TUNE}'><item id='current'><tune xmlns='${TUNE}'><title>Cross node</title></tune></item></publish></pubsub></iq>`);
    await alice.waitForElement(iqResult("pub1"), 10_000);
    const event = await bob.waitForElement(tuneEvent("alice@localhost"), 10_000);
    assert.equal(event.getChild("event", EVENT)!.getChild("items")!.getChild("item")!.getChild("tune", TUNE)!.getChildText("title"), "Cross node");
    // A marker after the publish, on the same path from node a to node b: once it is there, the event would be too.
    alice.send("<message to='carol@localhost/plain' type='chat' id='pep-marker'><body>m</body></message>");
    await carol.waitForElement(message("pep-marker"), 10_000);
    assert.equal(carol.anyElement(tuneEvent("alice@localhost")), false, "no +notify, no notification");
    for (const c of [alice, bob, carol]) c.close();
  });

  it("roster pushes reach the user's resources on another node that requested the roster, and only those (RFC 6121 §2.2)", async () => {
    const desk = await login(a, "dave", "desk");
    const phone = await login(b, "dave", "phone");
    const tv = await login(b, "dave", "tv");
    phone.send("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>");
    await phone.waitForElement(iqResult("r1"), 10_000);
    await known("dave@localhost/tv");
    await until(() => a.sessions.get("dave@localhost/phone")?.interested === true, "node a sees dave/phone interested");
    assert.equal(a.sessions.get("dave@localhost/tv")?.interested, false);
    desk.send("<iq type='set' id='r2'><query xmlns='jabber:iq:roster'><item jid='erin@localhost' name='Erin'/></query></iq>");
    await desk.waitForElement(iqResult("r2"), 10_000);
    const push = await phone.waitForElement(rosterPush("erin@localhost"), 10_000);
    assert.equal(push.getChild("query")!.getChild("item")!.attrs.name, "Erin");
    desk.send("<message to='dave@localhost/tv' type='chat' id='roster-marker'><body>m</body></message>");
    await tv.waitForElement(message("roster-marker"), 10_000);
    assert.equal(tv.anyElement(rosterPush("erin@localhost")), false, "a resource that never asked for the roster gets no push");
    for (const c of [desk, phone, tv]) c.close();
  });

  it("an IQ the server sends from one node to a session on another gets its answer (XEP-0199 ping)", async () => {
    const [onA] = contexts;
    const bob = await login(b, "bob", "pinged");
    await known("bob@localhost/pinged");
    const answered = onA!.router.request(el("iq", { type: "get", from: "localhost", to: "bob@localhost/pinged" }, el("ping", { xmlns: "urn:xmpp:ping" })), 10_000);
    const ping = await bob.waitForElement((e) => e.is("iq") && e.attrs.type === "get" && e.getChild("ping", "urn:xmpp:ping") !== undefined, 10_000);
    bob.send(`<iq type='result' id='${ping.attrs.id}' to='localhost'/>`);
    const reply = await answered;
    assert.equal(reply.attrs.type, "result");
    assert.equal(reply.attrs.from, "bob@localhost/pinged");
    // An error answer settles the request too, as a rejection.
    const refused = onA!.router.request(el("iq", { type: "get", from: "localhost", to: "bob@localhost/pinged" }, el("ping", { xmlns: "urn:xmpp:ping" })), 10_000);
    const second = await bob.waitForElement((e) => e.is("iq") && e.attrs.type === "get" && e.attrs.id !== ping.attrs.id, 10_000);
    bob.send(`<iq type='error' id='${second.attrs.id}' to='localhost'><ping xmlns='urn:xmpp:ping'/><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`);
    await assert.rejects(refused, (err: unknown) => err instanceof StanzaError && err.condition === "undefined-condition");
    bob.close();
  });

  it("an account deleted on one node is gone for the others: messages to it bounce there instead of being stored", async () => {
    const sender = await login(b, "frank", "sender");
    // Node b learns that erin exists (a message to her while she is offline is stored).
    sender.send("<message to='erin@localhost' type='chat' id='before-delete'><body>x</body></message>");
    await until(async () => (await b.storage.offline.list("erin@localhost", 10)).some((r) => r.stanza.includes("before-delete")), "stored for erin");
    await a.accounts.remove("erin@localhost");
    // The invalidation reaches node b asynchronously: frank tries until his message bounces there.
    const outcomes: string[] = [];
    await until(async () => {
      const id = `after-delete-${outcomes.length}`;
      sender.send(`<message to='erin@localhost' type='chat' id='${id}'><body>x</body></message>`);
      const outcome = await sender.waitForElement(errorReply(id, "service-unavailable"), 2000).then(() => "bounced", () => "not bounced");
      outcomes.push(outcome);
      return outcome === "bounced";
    }, "messages to the deleted erin bounce on node b", 20, 0);
    console.log(`# cluster: account deletion: ${outcomes.join(", ")}`);
    sender.close();
  });

  it("push registrations enabled through one node are used by another that had the user's (empty) list cached (XEP-0357)", async () => {
    const checker = await appServer(a); // answers node a's disco#info check of the app server
    const app = await appServer(b); // gets node b's pushes
    const sender = await login(b, "bob", "pusher");
    // Node b caches carol's registrations, none yet: a message to her while she is offline.
    sender.send("<message to='carol@localhost' type='chat' id='no-push-yet'><body>x</body></message>");
    await until(async () => (await b.storage.offline.list("carol@localhost", 10)).some((r) => r.stanza.includes("no-push-yet")), "stored for carol");
    assert.equal(app.pushes.length, 0);
    const phone = await login(a, "carol", "phone");
    phone.send("<iq type='set' id='push1'><enable xmlns='urn:xmpp:push:0' jid='push.example.net' node='carol-node'/></iq>");
    await phone.waitForElement(iqResult("push1"), 10_000);
    phone.close();
    await until(() => b.sessions.get("carol@localhost/phone") === undefined, "carol's phone gone on node b");
    // Node b may read its stale cache until the invalidation arrives: bob tries until a push goes out.
    let tries = 0;
    await until(async () => {
      sender.send(`<message to='carol@localhost' type='chat' id='push-try-${tries++}'><body>x</body></message>`);
      return app.nextPush(0, 2000).then(() => true, () => false);
    }, "a push for carol from node b", 20, 0);
    assert.equal(app.pushes[0]!.getChild("pubsub")?.getChild("publish")?.attrs.node, "carol-node");
    console.log(`# cluster: push registration invalidation: first push after ${tries} message(s)`);
    assert.ok(checker.pushes.length === 0, "node a sent no push: carol had no registration before");
  });
});
