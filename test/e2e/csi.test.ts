/** XEP-0352 Client State Indication end to end, with xmpp.js as the client. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";
import { rawSession } from "../helpers/raw.js";

const CSI = "urn:xmpp:csi:0";
const settle = () => new Promise((r) => setTimeout(r, 250));

describe("client state indication (XEP-0352)", () => {
  let server: TestServer;
  const clients: Connected[] = [];
  before(async () => {
    server = await startTestServer();
    for (const u of ["alice", "bob"]) await server.accounts.create(`${u}@localhost`, "pw");
    // Mutual subscription, so presence flows.
    for (const [a, b] of [["alice", "bob"], ["bob", "alice"]]) {
      await server.storage.roster.put(`${a}@localhost`, { jid: `${b}@localhost`, groups: [], subscription: "both", ask: false, approved: false });
    }
  });
  after(async () => {
    for (const c of clients) await c.stop();
    await server.cleanup();
  });

  it("is offered as a stream feature after authentication", async () => {
    const raw = await rawSession(server.ports.c2sDirectTls!, "alice", "pw", "features");
    const features = raw.elements.filter((e) => e.is("features", "http://etherx.jabber.org/streams")).at(-1);
    assert.ok(features?.getChild("csi", "urn:xmpp:csi:0"), features?.toString());
    raw.close();
  });

  it("holds presence and chat states while inactive, collapses them, and keeps order with what matters", async () => {
    const alice = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "alice", password: "pw", resource: "phone" });
    const bob = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "bob", password: "pw", resource: "pc" });
    clients.push(alice, bob);
    await alice.xmpp.send(xml("presence"));
    await bob.xmpp.send(xml("presence"));
    await alice.waitFor((s) => s.name === "presence" && s.attrs.from === "bob@localhost/pc");
    await alice.xmpp.send(xml("inactive", { xmlns: CSI }));
    await settle();
    const mark = alice.inbox.length;
    for (const show of ["away", "xa", "dnd"]) await bob.xmpp.send(xml("presence", {}, xml("show", {}, show)));
    await bob.xmpp.send(xml("message", { to: "alice@localhost/phone", type: "chat" }, xml("composing", { xmlns: "http://jabber.org/protocol/chatstates" })));
    await bob.xmpp.send(xml("message", { to: "alice@localhost/phone", type: "chat" }, xml("paused", { xmlns: "http://jabber.org/protocol/chatstates" })));
    await settle();
    assert.deepEqual(alice.inbox.slice(mark).map((s) => s.name), [], "nothing unimportant is sent while inactive");

    // A ping (an IQ) matters: it goes out at once, after what was held.
    const pong = await alice.iq(xml("iq", { type: "get", to: "localhost" }, xml("ping", { xmlns: "urn:xmpp:ping" })));
    assert.equal(pong.attrs.type, "result");

    await bob.xmpp.send(xml("message", { to: "alice@localhost/phone", type: "chat", id: "hello" }, xml("body", {}, "hello"), xml("active", { xmlns: "http://jabber.org/protocol/chatstates" })));
    await alice.waitFor((s) => s.attrs.id === "hello");
    const got = alice.inbox.slice(mark);
    const presences = got.filter((s) => s.name === "presence" && s.attrs.from === "bob@localhost/pc");
    assert.deepEqual(presences.map((p) => p.getChildText("show")), ["dnd"], "only the newest presence");
    const states = got.filter((s) => s.name === "message" && !s.getChild("body"));
    assert.equal(states.length, 1, "only the newest chat state");
    assert.ok(states[0]!.getChild("paused"));
    assert.ok(got.indexOf(presences[0]!) < got.findIndex((s) => s.attrs.id === "hello"), "held stanzas go out before the message");

    // Still inactive: state is held again, and <active/> releases it.
    const mark2 = alice.inbox.length;
    await bob.xmpp.send(xml("presence", {}, xml("show", {}, "chat")));
    await settle();
    assert.equal(alice.inbox.length, mark2);
    await alice.xmpp.send(xml("active", { xmlns: CSI }));
    const released = await alice.waitFor((s) => s.name === "presence" && s.getChildText("show") === "chat");
    assert.ok(released);
    const mark3 = alice.inbox.length;
    await bob.xmpp.send(xml("presence", {}, xml("show", {}, "away")));
    await alice.waitFor((s) => s.name === "presence" && s.getChildText("show") === "away" && alice.inbox.indexOf(s) >= mark3);
  });
});
