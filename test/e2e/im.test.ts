/** Roster, subscriptions, presence, chat, offline delivery, last activity, vCard and private XML — with xmpp.js over TLS. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";

const ROSTER = "jabber:iq:roster";
const isPresence = (from: string, type?: string) => (s: { is(n: string): boolean; attrs: Record<string, string> }) =>
  s.is("presence") && s.attrs.from === from && s.attrs.type === type;

describe("instant messaging (e2e over TLS with xmpp.js)", () => {
  let server: TestServer;
  const open: Connected[] = [];
  const login = async (user: string, resource?: string) => {
    const c = await connect({ port: server.ports.c2s!, username: user, password: `${user}-pw`, resource });
    open.push(c);
    return c;
  };
  before(async () => {
    server = await startTestServer();
    for (const u of ["alice", "bob", "carol", "dave", "erin"]) await server.accounts.create(`${u}@localhost`, `${u}-pw`);
  });
  after(async () => {
    for (const c of open) await c.stop();
    await server.cleanup();
  });

  it("roster set, get with versioning, push, remove", async () => {
    const a = await login("carol", "r");
    const empty = await a.iq(xml("iq", { type: "get" }, xml("query", { xmlns: ROSTER })));
    const ver0 = empty.getChild("query")!.attrs.ver;
    await a.iq(xml("iq", { type: "set" }, xml("query", { xmlns: ROSTER }, xml("item", { jid: "dave@localhost", name: "Dave" }, xml("group", {}, "Friends")))));
    const push = await a.waitFor((s) => s.is("iq") && s.attrs.type === "set" && s.getChild("query", ROSTER) !== undefined);
    assert.equal(push.getChild("query")!.getChild("item")!.attrs.name, "Dave");
    const full = await a.iq(xml("iq", { type: "get" }, xml("query", { xmlns: ROSTER, ver: ver0 })));
    const items = full.getChild("query")!.getChildren("item");
    assert.equal(items.length, 1);
    assert.deepEqual(items[0]!.attrs, { jid: "dave@localhost", name: "Dave", subscription: "none" });
    assert.equal(items[0]!.getChildText("group"), "Friends");
    const ver1 = full.getChild("query")!.attrs.ver;
    assert.notEqual(ver1, ver0);
    // Unchanged roster: empty result (RFC 6121 §2.6.3).
    const same = await a.iq(xml("iq", { type: "get" }, xml("query", { xmlns: ROSTER, ver: ver1 })));
    assert.equal(same.getChild("query"), undefined);
    await a.iq(xml("iq", { type: "set" }, xml("query", { xmlns: ROSTER }, xml("item", { jid: "dave@localhost", subscription: "remove" }))));
    const after = await a.iq(xml("iq", { type: "get" }, xml("query", { xmlns: ROSTER })));
    assert.equal(after.getChild("query")!.getChildren("item").length, 0);
    await assert.rejects(a.iq(xml("iq", { type: "set" }, xml("query", { xmlns: ROSTER }, xml("item", { jid: "x@localhost" }), xml("item", { jid: "y@localhost" })))), /bad-request/);
  });

  it("subscription handshake, presence exchange, chat, unavailable on disconnect", async () => {
    const a = await login("alice", "phone");
    const b = await login("bob", "desk");
    await a.iq(xml("iq", { type: "get" }, xml("query", { xmlns: ROSTER })));
    await b.iq(xml("iq", { type: "get" }, xml("query", { xmlns: ROSTER })));
    await a.xmpp.send(xml("presence"));
    await b.xmpp.send(xml("presence"));

    await a.xmpp.send(xml("presence", { to: "bob@localhost", type: "subscribe" }));
    const req = await b.waitFor(isPresence("alice@localhost", "subscribe"));
    assert.equal(req.attrs.from, "alice@localhost");
    await b.xmpp.send(xml("presence", { to: "alice@localhost", type: "subscribed" }));
    await a.waitFor(isPresence("bob@localhost", "subscribed"));
    // Bob approved: Alice gets Bob's presence; her roster says subscription 'to'.
    await a.waitFor(isPresence("bob@localhost/desk"));
    const ra = await a.iq(xml("iq", { type: "get" }, xml("query", { xmlns: ROSTER })));
    assert.equal(ra.getChild("query")!.getChild("item")!.attrs.subscription, "to");
    const rb = await b.iq(xml("iq", { type: "get" }, xml("query", { xmlns: ROSTER })));
    assert.equal(rb.getChild("query")!.getChild("item")!.attrs.subscription, "from");

    // Alice's presence reaches Bob only after Bob subscribes back (subscribers only).
    const before = b.inbox.filter(isPresence("alice@localhost/phone")).length;
    assert.equal(before, 0);
    await b.xmpp.send(xml("presence", { to: "alice@localhost", type: "subscribe" }));
    await a.waitFor(isPresence("bob@localhost", "subscribe"));
    await a.xmpp.send(xml("presence", { to: "bob@localhost", type: "subscribed" }));
    await b.waitFor(isPresence("alice@localhost/phone"));

    await a.xmpp.send(xml("message", { to: "bob@localhost", type: "chat", id: "m1", from: "mallory@evil" }, xml("body", {}, "hi bob")));
    const m = await b.waitFor((s) => s.is("message") && s.attrs.id === "m1");
    assert.equal(m.attrs.from, "alice@localhost/phone", "the server stamps 'from', ignoring the client's");
    assert.equal(m.getChildText("body"), "hi bob");

    // Last activity: Bob (subscribed to Alice) may ask; online means 0 seconds.
    const last = await b.iq(xml("iq", { type: "get", to: "alice@localhost" }, xml("query", { xmlns: "jabber:iq:last" })));
    assert.equal(last.getChild("query")!.attrs.seconds, "0");

    await a.stop();
    await b.waitFor(isPresence("alice@localhost/phone", "unavailable"));
    const lastOff = await b.iq(xml("iq", { type: "get", to: "alice@localhost" }, xml("query", { xmlns: "jabber:iq:last" })));
    assert.ok(Number(lastOff.getChild("query")!.attrs.seconds) >= 0);
  });

  it("last activity is forbidden to non-contacts", async () => {
    const e = await login("erin");
    await assert.rejects(e.iq(xml("iq", { type: "get", to: "alice@localhost" }, xml("query", { xmlns: "jabber:iq:last" }))), /forbidden/);
  });

  it("offline messages are stored with a delay stamp and delivered on the next available presence, once", async () => {
    const sender = await login("erin", "sender");
    await sender.xmpp.send(xml("message", { to: "dave@localhost", type: "chat", id: "off1" }, xml("body", {}, "while you were out")));
    await sender.xmpp.send(xml("message", { to: "dave@localhost", type: "chat", id: "cs" }, xml("composing", { xmlns: "http://jabber.org/protocol/chatstates" })));
    await waitUntil(async () => (await server.storage.offline.count("dave@localhost")) === 1);
    const d = await login("dave", "x");
    await d.xmpp.send(xml("presence"));
    const m = await d.waitFor((s) => s.is("message") && s.attrs.id === "off1");
    assert.equal(m.getChildText("body"), "while you were out");
    const delay = m.getChild("delay", "urn:xmpp:delay")!;
    assert.equal(delay.attrs.from, "localhost");
    assert.ok(!Number.isNaN(Date.parse(delay.attrs.stamp)));
    // xmpp.js answers the server's ping, which proves receipt: the row is deleted.
    await waitUntil(async () => (await server.storage.offline.count("dave@localhost")) === 0);
    assert.equal(d.inbox.filter((s) => s.attrs.id === "cs").length, 0, "a chat-state-only message is not stored");
  });

  it("a message to a user that does not exist gets service-unavailable", async () => {
    const e = await login("erin", "e2");
    await e.xmpp.send(xml("message", { to: "nobody@localhost", type: "chat", id: "nx" }, xml("body", {}, "?")));
    const err = await e.waitFor((s) => s.attrs.id === "nx" && s.attrs.type === "error");
    assert.ok(err.getChild("error")!.getChild("service-unavailable"));
  });

  it("vCard: set own, anyone reads it; setting someone else's is forbidden", async () => {
    const a = await login("carol", "v");
    await a.iq(xml("iq", { type: "set" }, xml("vCard", { xmlns: "vcard-temp" }, xml("FN", {}, "Carol C."), xml("NICKNAME", {}, "cc"))));
    const own = await a.iq(xml("iq", { type: "get" }, xml("vCard", { xmlns: "vcard-temp" })));
    assert.equal(own.getChild("vCard")!.getChildText("FN"), "Carol C.");
    const e = await login("erin", "v");
    const theirs = await e.iq(xml("iq", { type: "get", to: "carol@localhost" }, xml("vCard", { xmlns: "vcard-temp" })));
    assert.equal(theirs.getChild("vCard")!.getChildText("NICKNAME"), "cc");
    await assert.rejects(e.iq(xml("iq", { type: "set", to: "carol@localhost" }, xml("vCard", { xmlns: "vcard-temp" }))), /forbidden/);
  });

  it("private XML storage round-trip, reserved namespaces refused", async () => {
    const a = await login("carol", "p");
    await a.iq(xml("iq", { type: "set" }, xml("query", { xmlns: "jabber:iq:private" }, xml("storage", { xmlns: "storage:bookmarks" }, xml("conference", { jid: "room@conference.localhost" })))));
    const got = await a.iq(xml("iq", { type: "get" }, xml("query", { xmlns: "jabber:iq:private" }, xml("storage", { xmlns: "storage:bookmarks" }))));
    assert.equal(got.getChild("query")!.getChild("storage")!.getChild("conference")!.attrs.jid, "room@conference.localhost");
    await assert.rejects(a.iq(xml("iq", { type: "get" }, xml("query", { xmlns: "jabber:iq:private" }, xml("x", { xmlns: "jabber:x:data" })))), /not-acceptable/);
  });

  it("disco#info on the server lists exactly the loaded modules' features; ping, version, time answer", async () => {
    const a = await login("erin", "d");
    const info = await a.iq(xml("iq", { type: "get", to: "localhost" }, xml("query", { xmlns: "http://jabber.org/protocol/disco#info" })));
    const features = info.getChild("query")!.getChildren("feature").map((f: { attrs: Record<string, string> }) => f.attrs.var).sort();
    assert.deepEqual(features, ["http://jabber.org/protocol/commands", "http://jabber.org/protocol/disco#info", "http://jabber.org/protocol/disco#items", "jabber:iq:last", "jabber:iq:register",
      "jabber:iq:version", "msgoffline", "urn:xmpp:blocking", "urn:xmpp:carbons:2", "urn:xmpp:extdisco:2", "urn:xmpp:mam:2", "urn:xmpp:mam:2#extended", "urn:xmpp:ping", "urn:xmpp:time", "vcard-temp"].sort());
    assert.ok(await a.iq(xml("iq", { type: "get", to: "localhost" }, xml("ping", { xmlns: "urn:xmpp:ping" }))));
    const v = await a.iq(xml("iq", { type: "get", to: "localhost" }, xml("query", { xmlns: "jabber:iq:version" })));
    assert.equal(v.getChild("query")!.getChildText("name"), "Parley");
    const t = await a.iq(xml("iq", { type: "get", to: "localhost" }, xml("time", { xmlns: "urn:xmpp:time" })));
    assert.match(t.getChild("time")!.getChildText("utc")!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    await assert.rejects(a.iq(xml("iq", { type: "get", to: "localhost" }, xml("query", { xmlns: "urn:unknown" }))), /service-unavailable/);
  });
  it("a message to an account deleted after it received offline messages bounces (service-unavailable)", async () => {
    await server.accounts.create("gone@localhost", "gone-pw");
    const a = await login("erin", "deleted-check");
    await a.xmpp.send(xml("message", { to: "gone@localhost", type: "chat", id: "before" }, xml("body", {}, "stored")));
    await a.iq(xml("iq", { type: "get", to: "localhost", id: "sync1" }, xml("ping", { xmlns: "urn:xmpp:ping" })));
    await server.accounts.remove("gone@localhost");
    await a.xmpp.send(xml("message", { to: "gone@localhost", type: "chat", id: "after" }, xml("body", {}, "bounced")));
    const error = await a.waitFor((s) => s.is("message") && s.attrs.id === "after" && s.attrs.type === "error");
    assert.ok(error.getChild("error")!.getChild("service-unavailable", "urn:ietf:params:xml:ns:xmpp-stanzas"));
  });
});

async function waitUntil(cond: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}
