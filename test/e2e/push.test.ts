/**
 * XEP-0357 push, the user's server side, end to end: xmpp.js clients enable push with an app
 * server that is a real XEP-0114 component on this server, and the component sees what arrives.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";
import type { Element } from "@xmpp/xml";
import { AppServer, Component, handshakeAccepted, pushField as field, pushPublish as publish } from "../helpers/component.js";
import { rawSession, iqResult } from "../helpers/raw.js";
import { parseElement } from "../../src/xmpp/xml-parse.js";

const PUSH = "urn:xmpp:push:0";
const settle = (ms = 300) => new Promise((r) => setTimeout(r, ms));

describe("push notifications (XEP-0357)", () => {
  let server: TestServer;
  let app: AppServer;
  const clients: Connected[] = [];
  before(async () => {
    server = await startTestServer({
      listen: { address: "127.0.0.1", c2s: 0, c2sDirectTls: 0, https: null, http: null, component: 0 },
      components: { "push.example.net": { secret: "app-server-secret" } },
      modules: { push: { coalesceSeconds: 1 } },
    });
    for (const u of ["alice", "bob", "carol"]) await server.accounts.create(`${u}@localhost`, "pw");
    const component = await Component.open(server.ports.component!, "push.example.net");
    await component.handshake("app-server-secret");
    await component.waitForElement(handshakeAccepted);
    app = new AppServer(component);
  });
  after(async () => {
    for (const c of clients) await c.stop();
    await server.cleanup();
  });
  const login = async (user: string, resource: string) => {
    const c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: user, password: "pw", resource });
    clients.push(c);
    return c;
  };
  const enable = (c: Connected, node: string, secret = "s3cr3t") => c.iq(xml("iq", { type: "set" },
    xml("enable", { xmlns: PUSH, jid: "push.example.net", node },
      xml("x", { xmlns: "jabber:x:data", type: "submit" },
        xml("field", { var: "FORM_TYPE" }, xml("value", {}, "http://jabber.org/protocol/pubsub#publish-options")),
        xml("field", { var: "secret" }, xml("value", {}, secret))))));

  it("is advertised; a phone that enabled push and went away gets exactly one push per message, with the summary and its secret", async () => {
    const phone = await login("alice", "phone");
    const info = await phone.iq(xml("iq", { type: "get", to: "alice@localhost" }, xml("query", { xmlns: "http://jabber.org/protocol/disco#info" })));
    assert.ok(info.getChild("query")!.getChildren("feature").some((f) => f.attrs.var === PUSH));
    await enable(phone, "node-alice");
    await phone.stop();
    await settle();
    const bob = await login("bob", "b");
    const before = app.pushes.length;
    await bob.xmpp.send(xml("message", { to: "alice@localhost", type: "chat", id: "m1" }, xml("body", {}, "are you there?")));
    await settle(500);
    const got = app.pushes.slice(before);
    assert.equal(got.length, 1, "exactly one push");
    const push = got[0]!;
    assert.equal(push.attrs.from, "alice@localhost");
    assert.equal(publish(push)?.attrs.node, "node-alice");
    assert.ok(publish(push)!.getChild("item")?.getChild("notification", PUSH), push.toString());
    assert.equal(field(push, "FORM_TYPE"), "urn:xmpp:push:summary");
    assert.equal(field(push, "message-count"), "1");
    assert.equal(field(push, "last-message-sender"), "bob@localhost/b");
    assert.equal(field(push, "last-message-body"), undefined, "no body unless the operator allows it");
    assert.equal(field(push, "secret", "publish-options"), "s3cr3t");

    // No push for presence or chat states.
    const n = app.pushes.length;
    await bob.xmpp.send(xml("message", { to: "alice@localhost", type: "chat" }, xml("composing", { xmlns: "http://jabber.org/protocol/chatstates" })));
    await bob.xmpp.send(xml("presence", { to: "alice@localhost" }));
    await bob.xmpp.send(xml("message", { to: "alice@localhost", type: "chat" }, xml("received", { xmlns: "urn:xmpp:receipts", id: "x" })));
    await settle(1500);
    assert.equal(app.pushes.length, n);

    // The phone comes back and gets the message from offline storage.
    const back = await login("alice", "phone");
    await back.xmpp.send(xml("presence"));
    await back.waitFor((s) => s.attrs.id === "m1");
  });

  it("coalesces a burst into at most one push per window, counting the messages", async () => {
    const carol = await login("carol", "c");
    await enable(carol, "node-carol");
    await carol.stop();
    await settle();
    const bob = await login("bob", "burst");
    const before = app.pushes.length;
    for (let i = 0; i < 10; i++) await bob.xmpp.send(xml("message", { to: "carol@localhost", type: "chat", id: `b${i}` }, xml("body", {}, `msg ${i}`)));
    await settle(2500);
    const got = app.pushes.slice(before);
    assert.ok(got.length >= 1 && got.length <= 2, `${got.length} pushes for a burst of 10`);
    assert.equal(field(got[got.length - 1]!, "message-count"), "10");
  });

  it("pushes for a session hibernated under stream management and for an inactive (CSI) one", async () => {
    const raw = await rawSession(server.ports.c2sDirectTls!, "alice", "pw", "sm");
    raw.send("<presence/>");
    raw.send(`<iq type='set' id='en'><enable xmlns='${PUSH}' jid='push.example.net' node='node-sm'/></iq>`);
    await raw.waitForElement(iqResult("en"));
    raw.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>");
    await raw.waitForElement((e) => e.is("enabled", "urn:xmpp:sm:3"));
    raw.send("<inactive xmlns='urn:xmpp:csi:0'/>");
    await settle(100);
    const bob = await login("bob", "sm");
    let before = app.pushes.length;
    await bob.xmpp.send(xml("message", { to: "alice@localhost/sm", type: "chat", id: "inactive" }, xml("body", {}, "while inactive")));
    await settle(1500);
    assert.ok(app.pushes.slice(before).some((p) => publish(p)?.attrs.node === "node-sm"), "pushed while inactive");
    raw.socket.destroy(); // no </stream>: the session hibernates
    await settle(300);
    before = app.pushes.length;
    await bob.xmpp.send(xml("message", { to: "alice@localhost/sm", type: "chat", id: "hibernated" }, xml("body", {}, "while asleep")));
    await settle(1500);
    assert.ok(app.pushes.slice(before).some((p) => publish(p)?.attrs.node === "node-sm"), "pushed while hibernated");
  });

  it("an app server that keeps failing loses the registration; disable stops pushes", async () => {
    const carol = await login("carol", "fail");
    await enable(carol, "node-carol-2");
    await carol.iq(xml("iq", { type: "set" }, xml("disable", { xmlns: PUSH, jid: "push.example.net", node: "node-carol" })));
    await carol.stop();
    await settle();
    app.failing = true;
    const bob = await login("bob", "fail");
    for (let i = 0; i < 3; i++) {
      await bob.xmpp.send(xml("message", { to: "carol@localhost", type: "chat" }, xml("body", {}, `f${i}`)));
      await settle(1300);
    }
    app.failing = false;
    const stored = await server.storage.documents.get("carol@localhost", "push:registrations");
    assert.equal(stored, undefined, "the failing registration is gone, and node-carol was disabled");
    const n = app.pushes.length;
    await bob.xmpp.send(xml("message", { to: "carol@localhost", type: "chat" }, xml("body", {}, "after")));
    await settle(800);
    assert.equal(app.pushes.length, n);
  });

  it("only the owner enables push, and the JID must be valid", async () => {
    const bob = await login("bob", "perm");
    await assert.rejects(bob.iq(xml("iq", { type: "set", to: "alice@localhost" }, xml("enable", { xmlns: PUSH, jid: "push.example.net", node: "x" }))),
      (err: { condition?: string }) => err.condition === "forbidden");
    await assert.rejects(bob.iq(xml("iq", { type: "set" }, xml("enable", { xmlns: PUSH, node: "x" }))), (err: { condition?: string }) => err.condition === "bad-request");
  });

  it("enable is refused, with the reason, for an app server that is not there or is no app server; push.<host> is not announced without credentials", async () => {
    const carol = await login("carol", "enable-check");
    const items = await carol.iq(xml("iq", { type: "get", to: "localhost" }, xml("query", { xmlns: "http://jabber.org/protocol/disco#items" })));
    assert.ok(!items.getChild("query")!.getChildren("item").some((i) => i.attrs.jid === "push.localhost"), "no app server announced");
    const refusal = async (jid: string) => {
      try {
        await carol.iq(xml("iq", { type: "set" }, xml("enable", { xmlns: PUSH, jid, node: "n1" })));
      } catch (err) {
        return err as { condition?: string; text?: string };
      }
      throw new Error(`enable with ${jid} was accepted`);
    };
    const unreachable = await refusal("push.localhost");
    assert.equal(unreachable.condition, "remote-server-not-found");
    assert.match(unreachable.text ?? "", /push\.localhost/);
    assert.equal((await refusal("localhost")).condition, "not-acceptable", "the server itself is no app server");
    const stored = await server.storage.documents.get("carol@localhost", "push:registrations");
    const nodes = stored ? parseElement(stored).getChildren("registration").map((r) => r.attrs.node) : [];
    assert.ok(!nodes.includes("n1"), "nothing was registered");
  });

  it("a member who is not in a room gets a push for its messages", async () => {
    const owner = await login("bob", "roomowner");
    await owner.xmpp.send(xml("presence"));
    await owner.xmpp.send(xml("presence", { to: "club@conference.localhost/bob" }, xml("x", { xmlns: "http://jabber.org/protocol/muc" })));
    await owner.waitFor((s) => s.name === "presence" && s.getChild("x", "http://jabber.org/protocol/muc#user")?.getChildren("status").some((c) => c.attrs.code === "201") === true);
    await owner.iq(xml("iq", { type: "set", to: "club@conference.localhost" }, xml("query", { xmlns: "http://jabber.org/protocol/muc#owner" },
      xml("x", { xmlns: "jabber:x:data", type: "submit" }, xml("field", { var: "muc#roomconfig_membersonly" }, xml("value", {}, "1"))))));
    await owner.iq(xml("iq", { type: "set", to: "club@conference.localhost" }, xml("query", { xmlns: "http://jabber.org/protocol/muc#admin" },
      xml("item", { jid: "alice@localhost", affiliation: "member" }))));
    const alice = await login("alice", "roommember");
    await enable(alice, "node-room");
    await alice.stop();
    await settle();
    const before = app.pushes.length;
    await owner.xmpp.send(xml("message", { to: "club@conference.localhost", type: "groupchat" }, xml("body", {}, "meeting at 5")));
    await settle(800);
    const got = app.pushes.slice(before).filter((p) => publish(p)?.attrs.node === "node-room");
    assert.equal(got.length, 1);
    assert.equal(field(got[0]!, "last-message-sender"), "club@conference.localhost/bob");
  });
});
