/** XEP-0198 stream management and the delivery guarantee (HARDENING §1.3 P1–P5), end to end. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { isDeepStrictEqual } from "node:util";
import type { Element } from "@xmpp/xml";
import { RawClient, header, openStream, rawSession, descendants, iqResult, streamError, tree, NS_STANZAS, NS_STREAMS } from "../helpers/raw.js";
import { connect, xml } from "../helpers/xmpp-client.js";
import { parseElement } from "../../src/xmpp/xml-parse.js";

const SM = "urn:xmpp:sm:3";
const message = (id: string) => (e: Element) => e.is("message") && e.attrs.id === id;
const presenceFrom = (from: string) => (e: Element) => e.is("presence") && e.attrs.from === from;
/** An SM <failed/> with exactly this stanza error condition in it. */
const failedWith = (condition: string) => (e: Element) =>
  e.is("failed", SM) && isDeepStrictEqual(tree(e).children, [tree(xml(condition, { xmlns: NS_STANZAS }))]);

/** Authenticated, not yet bound: ready for <resume/> or bind. */
async function authenticated(port: number, user: string): Promise<RawClient> {
  const c = await openStream(port);
  const mark = c.elements.length;
  c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\0${user}\0pw`).toString("base64")}</auth>`);
  await c.waitForElement((e) => e.is("success", "urn:ietf:params:xml:ns:xmpp-sasl"), 5000, mark);
  c.restartParser();
  c.send(header());
  const features = await c.waitForElement((e) => e.is("features", NS_STREAMS), 5000, mark);
  assert.equal(features.getChild("sm", SM)?.children.length, 0, features.toString());
  return c;
}

async function enable(c: RawClient, resume = true): Promise<string> {
  const mark = c.elements.length;
  c.send(`<enable xmlns='${SM}'${resume ? " resume='true'" : ""}/>`);
  const enabled = await c.waitForElement((e) => e.is("enabled", SM), 5000, mark);
  assert.equal(enabled.children.length, 0);
  const { id, max, ...rest } = enabled.attrs as Record<string, string>;
  if (resume) {
    assert.ok(id, "a resumption id");
    assert.match(max ?? "", /^\d+$/, "the longest resumption wait, in seconds");
    assert.deepEqual(rest, { xmlns: SM, resume: "true" });
  } else {
    assert.deepEqual(enabled.attrs, { xmlns: SM }, "no resumption offered when none was asked for");
  }
  return id ?? "";
}


describe("stream management (XEP-0198) and the delivery guarantee", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ streamManagement: { resumeTimeoutSeconds: 1, maxResumeTimeoutSeconds: 2, maxUnackedStanzas: 10 } });
    for (const u of ["alice", "bob", "carol", "dave", "erin"]) await server.accounts.create(`${u}@localhost`, "pw");
  });
  after(() => server.cleanup());

  it("advertises sm; enable before bind and enable twice are unexpected requests", async () => {
    const c = await authenticated(server.ports.c2sDirectTls!, "alice");
    c.send(`<enable xmlns='${SM}'/>`);
    await c.waitForElement(failedWith("unexpected-request"));
    c.close();
    const b = await rawSession(server.ports.c2sDirectTls!, "alice", "pw", "twice");
    await enable(b, false);
    const mark = b.elements.length;
    b.send(`<enable xmlns='${SM}'/>`);
    await b.waitForElement(failedWith("unexpected-request"), 5000, mark);
    b.close();
  });

  it("counts inbound stanzas for <r/>, requests acks for outbound ones, and <a/> clears them", async () => {
    const bob = await rawSession(server.ports.c2sDirectTls!, "bob", "pw", "sm");
    await enable(bob, false);
    bob.send("<presence/><iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq><r xmlns='urn:xmpp:sm:3'/>");
    await bob.waitForElement((e) => e.is("a", SM) && e.attrs.h === "2");
    // The server asks for an ack of what it sent (presence reflection + ping result).
    await bob.waitForElement((e) => e.is("r", SM));
    const session = server.sessions.get("bob@localhost/sm") as unknown as { out: { unacknowledged: number } };
    assert.equal(session.out.unacknowledged, 2);
    bob.send("<a xmlns='urn:xmpp:sm:3' h='2'/>");
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(session.out.unacknowledged, 0);
    bob.close();
  });

  it("an ack for more than was sent → undefined-condition with <handled-count-too-high/>", async () => {
    const c = await rawSession(server.ports.c2sDirectTls!, "carol", "pw", "high");
    await enable(c, false);
    c.send("<a xmlns='urn:xmpp:sm:3' h='5'/>");
    const error = await c.waitForElement(streamError("undefined-condition"));
    assert.deepEqual(tree(error.getChild("handled-count-too-high", SM)!), tree(xml("handled-count-too-high", { xmlns: SM, h: "5", "send-count": "0" })));
    await c.closed;
    const d = await rawSession(server.ports.c2sDirectTls!, "carol", "pw", "bad-h");
    await enable(d, false);
    d.send("<a xmlns='urn:xmpp:sm:3' h='-1'/>");
    await d.waitForElement(streamError("undefined-condition"));
    await d.closed;
  });

  it("resumption after a dropped connection resends exactly the unacknowledged stanzas, in order", async () => {
    const dave = await rawSession(server.ports.c2sDirectTls!, "dave", "pw", "phone");
    const id = await enable(dave);
    dave.send("<presence/>");
    await dave.waitForElement(presenceFrom("dave@localhost/phone"));
    dave.send("<a xmlns='urn:xmpp:sm:3' h='1'/>");
    dave.socket.destroy(); // no </stream:stream>: the network dropped
    await new Promise((r) => setTimeout(r, 100));
    const erin = await rawSession(server.ports.c2sDirectTls!, "erin", "pw", "e");
    for (const n of [1, 2, 3]) erin.send(`<message to='dave@localhost/phone' type='chat' id='r${n}'><body>${n}</body></message>`);
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(server.sessions.get("dave@localhost/phone"), "the session waits, hibernated");

    const back = await authenticated(server.ports.c2sDirectTls!, "dave");
    const mark = back.elements.length;
    back.send(`<resume xmlns='${SM}' previd='${id}' h='1'/>`);
    const resumed = await back.waitForElement((e) => e.is("resumed", SM), 5000, mark);
    assert.deepEqual(tree(resumed), tree(xml("resumed", { xmlns: SM, h: "1", previd: id })));
    await back.waitForElement(message("r3"), 5000, mark);
    const resent = () => back.elements.slice(mark).filter((e) => e.is("message")).map((e) => e.attrs.id);
    assert.deepEqual(resent(), ["r1", "r2", "r3"]);
    // The session is the same one: its presence is still there.
    assert.ok(server.sessions.get("dave@localhost/phone")?.presence);
    back.send("<a xmlns='urn:xmpp:sm:3' h='4'/>");
    back.send("<iq type='get' id='alive' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    await back.waitForElement(iqResult("alive"), 5000, mark);
    assert.equal(back.elements.slice(mark).flatMap(descendants).filter((e) => e.attrs.id === "r2").length, 1, "no duplicates from the server's side");
    assert.deepEqual(resent(), ["r1", "r2", "r3"]);
    // A second resume of the same id while it is live → still resumable only by its owner.
    const intruder = await authenticated(server.ports.c2sDirectTls!, "erin");
    intruder.send(`<resume xmlns='${SM}' previd='${id}' h='0'/>`);
    await intruder.waitForElement(failedWith("item-not-found"));
    intruder.close();
    back.close();
    erin.close();
  });

  it("resumption while the old socket is still half-open: the new connection takes over, the old one is closed", async () => {
    const old = await rawSession(server.ports.c2sDirectTls!, "alice", "pw", "halfopen");
    const id = await enable(old);
    const back = await authenticated(server.ports.c2sDirectTls!, "alice");
    back.send(`<resume xmlns='${SM}' previd='${id}' h='0'/>`);
    await back.waitForElement((e) => e.is("resumed", SM) && e.attrs.h === "0" && e.attrs.previd === id);
    await old.closed;
    const mark = back.elements.length;
    back.send("<iq type='get' id='still-me' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    await back.waitForElement(iqResult("still-me"), 5000, mark);
    back.close();
  });

  it("P5: a session replaced by a new bind of the same resource: its unacknowledged messages reach the new one", async () => {
    const first = await rawSession(server.ports.c2sDirectTls!, "erin", "pw", "same");
    await enable(first);
    first.send("<presence/>");
    const alice = await rawSession(server.ports.c2sDirectTls!, "alice", "pw", "rp");
    alice.send("<message to='erin@localhost/same' type='chat' id='repl1'><body>x</body></message>");
    await first.waitForElement(message("repl1"));
    const second = await rawSession(server.ports.c2sDirectTls!, "erin", "pw", "same");
    await first.waitForElement(streamError("conflict"));
    second.send("<presence/>");
    await second.waitForElement(message("repl1"));
    second.close();
    alice.close();
  });

  it("an unknown or expired resumption → <failed><item-not-found/></failed>, and the client can bind instead", async () => {
    const c = await authenticated(server.ports.c2sDirectTls!, "alice");
    c.send(`<resume xmlns='${SM}' previd='nope' h='0'/>`);
    await c.waitForElement(failedWith("item-not-found"));
    c.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
    const bound = await c.waitForElement(iqResult("b"));
    assert.match(bound.getChild("bind", "urn:ietf:params:xml:ns:xmpp-bind")?.getChildText("jid") ?? "", /^alice@localhost\//);
    c.close();
  });

  it("P3: when resumption times out, unacknowledged messages go to offline storage with their original delay stamp", async () => {
    const bob = await rawSession(server.ports.c2sDirectTls!, "bob", "pw", "flaky");
    await enable(bob);
    bob.send("<presence/>");
    await bob.waitForElement(presenceFrom("bob@localhost/flaky"));
    const carol = await rawSession(server.ports.c2sDirectTls!, "carol", "pw", "c");
    carol.send("<message to='bob@localhost' type='chat' id='lost1'><body>do not lose me</body></message>");
    await bob.waitForElement(message("lost1")); // written to the socket, but bob never acks it
    bob.socket.destroy();
    // resumeTimeoutSeconds is 1 here.
    for (let i = 0; i < 100 && server.sessions.get("bob@localhost/flaky"); i++) await new Promise((r) => setTimeout(r, 50));
    assert.equal(server.sessions.get("bob@localhost/flaky"), undefined);
    await new Promise((r) => setTimeout(r, 100));
    const rows = await server.storage.offline.list("bob@localhost");
    assert.equal(rows.length, 1, "exactly one stored copy");
    const stored = parseElement(rows[0]!.stanza);
    assert.equal(stored.attrs.id, "lost1");
    assert.equal(stored.getChildText("body"), "do not lose me");
    const again = await rawSession(server.ports.c2sDirectTls!, "bob", "pw", "new");
    again.send("<presence/>");
    // The queued record keeps the stanza as routed; its XEP-0203 stamp, the time it was first
    // stored, is added on the way out.
    const delivered = await again.waitForElement(message("lost1"));
    const delays = delivered.getChildren("delay", "urn:xmpp:delay");
    assert.equal(delays.length, 1, delivered.toString());
    assert.equal(delays[0]!.attrs.from, "localhost");
    assert.equal(Date.parse(delays[0]!.attrs.stamp!), rows[0]!.storedAt, "the original time");
    again.close();
    carol.close();
  });

  it("P3: a session with SM but without resumption re-routes unacked messages to another resource at once", async () => {
    const laptop = await rawSession(server.ports.c2sDirectTls!, "erin", "pw", "laptop");
    laptop.send("<presence><priority>1</priority></presence>");
    const phone = await rawSession(server.ports.c2sDirectTls!, "erin", "pw", "phone");
    await enable(phone, false);
    phone.send("<presence><priority>1</priority></presence>");
    await new Promise((r) => setTimeout(r, 100));
    const alice = await rawSession(server.ports.c2sDirectTls!, "alice", "pw", "x");
    alice.send("<message to='erin@localhost/phone' type='chat' id='move1'><body>x</body></message>");
    await phone.waitForElement(message("move1"));
    phone.socket.destroy();
    await laptop.waitForElement((e) => message("move1")(e) && !!e.getChild("delay", "urn:xmpp:delay"));
    laptop.close();
    alice.close();
  });

  it("an IQ request the client never acknowledged gets service-unavailable when its session ends; presence and results it held are dropped", async () => {
    const phone = await rawSession(server.ports.c2sDirectTls!, "dave", "pw", "phone");
    await enable(phone, false);
    phone.send("<presence/>");
    const alice = await rawSession(server.ports.c2sDirectTls!, "alice", "pw", "held");
    alice.send("<iq to='dave@localhost/phone' type='get' id='held-get'><query xmlns='jabber:iq:version'/></iq>");
    alice.send("<iq to='dave@localhost/phone' type='result' id='held-result'/>");
    alice.send("<presence to='dave@localhost/phone'/>");
    await phone.waitForElement((e) => e.is("presence") && e.attrs.from === "alice@localhost/held");
    const mark = alice.elements.length;
    phone.socket.destroy();
    const bounced = await alice.waitForElement((e) => e.is("iq") && e.attrs.id === "held-get", 5000, mark);
    assert.equal(bounced.attrs.type, "error");
    assert.equal(bounced.attrs.from, "dave@localhost/phone");
    assert.ok(bounced.getChild("error")?.getChild("service-unavailable", NS_STANZAS), bounced.toString());
    // Only the request comes back: a ping round trip later, nothing else about the held stanzas has arrived.
    alice.send("<iq type='get' id='after-bounce'><ping xmlns='urn:xmpp:ping'/></iq>");
    await alice.waitForElement(iqResult("after-bounce"), 5000, mark);
    const back = alice.elements.slice(mark).filter((e) => ["held-get", "held-result"].includes(String(e.attrs.id)) || e.is("presence"));
    assert.deepEqual(back.map((e) => `${e.name} ${e.attrs.id}`), ["iq held-get"]);
    alice.close();
  });

  it("queue overflow closes the stream with resource-constraint and nothing is lost", async () => {
    const slow = await rawSession(server.ports.c2sDirectTls!, "dave", "pw", "slow");
    await enable(slow, false);
    const erin = await rawSession(server.ports.c2sDirectTls!, "erin", "pw", "flood");
    for (let n = 0; n < 12; n++) erin.send(`<message to='dave@localhost/slow' type='chat' id='f${n}'><body>${n}</body></message>`);
    await slow.waitForElement(streamError("resource-constraint"));
    // Every message is in custody: delivered-and-queued ones went to offline storage, none vanished.
    for (let i = 0; i < 100 && (await server.storage.offline.count("dave@localhost")) < 11; i++) await new Promise((r) => setTimeout(r, 50));
    const rows = await server.storage.offline.list("dave@localhost");
    const stored = rows.map((r) => parseElement(r.stanza).attrs.id ?? r.stanza);
    assert.deepEqual(stored.slice(0, 11), Array.from({ length: 11 }, (_, n) => `f${n}`));
    erin.close();
  });

  it("P2: offline rows are deleted only when the client's <a/> covers them", async () => {
    const alice = await rawSession(server.ports.c2sDirectTls!, "alice", "pw", "o");
    alice.send("<message to='carol@localhost' type='chat' id='off-sm'><body>ack me</body></message>");
    for (let i = 0; i < 100 && (await server.storage.offline.count("carol@localhost")) === 0; i++) await new Promise((r) => setTimeout(r, 20));
    // First login: the message arrives, the client dies without acknowledging it.
    const first = await rawSession(server.ports.c2sDirectTls!, "carol", "pw", "o1");
    await enable(first, false);
    first.send("<presence/>");
    await first.waitForElement(message("off-sm"));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(await server.storage.offline.count("carol@localhost"), 1, "not acknowledged: still stored");
    first.socket.destroy();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(await server.storage.offline.count("carol@localhost"), 1, "the session ended: the row is kept, not duplicated");
    // Second login: delivered again, acknowledged, deleted.
    const second = await rawSession(server.ports.c2sDirectTls!, "carol", "pw", "o2");
    await enable(second, false);
    second.send("<presence/>");
    await second.waitForElement(message("off-sm"));
    second.send("<a xmlns='urn:xmpp:sm:3' h='2'/>");
    for (let i = 0; i < 100 && (await server.storage.offline.count("carol@localhost")) > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await server.storage.offline.count("carol@localhost"), 0);
    second.close();
    alice.close();
  });

  it("xmpp.js (which enables SM with resumption) logs in, chats and gets its acks", async () => {
    const x = await connect({ port: server.ports.c2s!, username: "alice", password: "pw", resource: "js" });
    await x.xmpp.send(xml("presence"));
    const pong = await x.iq(xml("iq", { type: "get", to: "localhost" }, xml("ping", { xmlns: "urn:xmpp:ping" })));
    assert.equal(pong.attrs.type, "result");
    const s = server.sessions.get("alice@localhost/js") as unknown as { sm?: { resumable: boolean } };
    assert.equal(s.sm?.resumable, true);
    await x.stop();
  });

  it("a message whose offline write is still committing does not hold up the sender's next stanzas; its 'h' waits for the commit", async () => {
    for (const u of ["frank", "gina", "hank"]) await server.accounts.create(`${u}@localhost`, "pw");
    const hank = await rawSession(server.ports.c2sDirectTls!, "hank", "pw", "live");
    hank.send("<presence/>");
    await hank.waitForElement(presenceFrom("hank@localhost/live"));
    const frank = await rawSession(server.ports.c2sDirectTls!, "frank", "pw", "sender");
    await enable(frank, false);
    // A slow disk: message records wait until the test lets them through.
    const messages = server.storage.messages;
    const write = messages.write.bind(messages);
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    messages.write = async (record) => { await gate; return write(record); };
    try {
      const mark = frank.elements.length;
      frank.send("<message to='gina@localhost' type='chat' id='to-offline'><body>stored</body></message>"
        + "<message to='hank@localhost' type='chat' id='to-live'><body>live</body></message><r xmlns='urn:xmpp:sm:3'/>");
      // The second message is routed while the first one's write waits: hank has it.
      await hank.waitForElement(message("to-live"));
      await new Promise((r) => setTimeout(r, 200));
      assert.ok(!frank.anyElement((e) => e.is("a", SM), mark), "no 'h' covers a message before its write committed");
      release();
      const a = await frank.waitForElement((e) => e.is("a", SM), 5000, mark);
      assert.equal(a.attrs.h, "2");
    } finally {
      release();
      messages.write = write;
    }
    const gina = await rawSession(server.ports.c2sDirectTls!, "gina", "pw", "back");
    gina.send("<presence/>");
    const stored = await gina.waitForElement(message("to-offline"));
    assert.equal(stored.getChildText("body"), "stored");
    for (const c of [hank, frank, gina]) c.close();
  });
});

describe("graceful shutdown (P5)", () => {
  it("unacknowledged messages are stored offline before the server exits", async () => {
    const server = await startTestServer();
    await server.accounts.create("alice@localhost", "pw");
    await server.accounts.create("bob@localhost", "pw");
    const bob = await rawSession(server.ports.c2sDirectTls!, "bob", "pw", "b");
    await enable(bob);
    bob.send("<presence/>");
    await bob.waitForElement(presenceFrom("bob@localhost/b"));
    const alice = await rawSession(server.ports.c2sDirectTls!, "alice", "pw", "a");
    alice.send("<message to='bob@localhost/b' type='chat' id='sd1'><body>before shutdown</body></message>");
    await bob.waitForElement(message("sd1"));
    const storage = server.storage;
    const rows: string[] = [];
    const close = storage.close.bind(storage);
    storage.close = async () => {
      rows.push(...(await storage.offline.list("bob@localhost")).map((r) => r.stanza));
      await close();
    };
    await server.cleanup();
    await bob.waitForElement(streamError("system-shutdown"));
    assert.equal(rows.length, 1);
    assert.equal(parseElement(rows[0]!).attrs.id, "sd1");
  });
});
