/** XEP-0114 external components over a raw TCP socket: handshake, routing both ways, the exact stream errors. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import type { Element } from "@xmpp/xml";
import { rawSession, descendants, streamError } from "../helpers/raw.js";
import { Component, handshakeAccepted } from "../helpers/component.js";

const withId = (id: string) => (e: Element) => e.attrs.id === id;

describe("external components (XEP-0114)", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ listen: { address: "127.0.0.1", c2s: 0, c2sDirectTls: 0, component: 0, https: null, http: null }, components: { "bot.localhost": { secret: "component-secret" } } });
    await server.accounts.create("alice@localhost", "pw");
  });
  after(() => server.cleanup());

  it("authenticates with the handshake and exchanges stanzas with users both ways", async () => {
    const bot = await Component.open(server.ports.component!, "bot.localhost");
    await bot.handshake("component-secret");
    await bot.waitForElement(handshakeAccepted);
    const alice = await rawSession(server.ports.c2sDirectTls!, "alice", "pw", "a");
    alice.send("<message to='echo@bot.localhost' type='chat' id='to-bot'><body>ping</body></message>");
    const got = await bot.waitForElement((e) => e.is("message") && e.attrs.id === "to-bot");
    assert.equal(got.getNS(), "jabber:component:accept");
    assert.equal(got.attrs.from, "alice@localhost/a");
    bot.socket.write("<message from='echo@bot.localhost' to='alice@localhost/a' type='chat' id='from-bot'><body>pong</body></message>");
    const back = await alice.waitForElement((e) => e.is("message") && e.attrs.id === "from-bot");
    assert.equal(back.attrs.from, "echo@bot.localhost");
    assert.equal(back.getNS(), "jabber:client");
    assert.deepEqual(descendants(back).filter((e) => Object.values(e.attrs).includes("jabber:component:accept")).map(String), []);
    // Disco to the component domain goes to the component, not to the server.
    alice.send("<iq type='get' to='bot.localhost' id='disco'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    await bot.waitForElement((e) => e.is("iq") && e.attrs.id === "disco");

    // A second connection for the same domain: conflict.
    const twin = await Component.open(server.ports.component!, "bot.localhost");
    await twin.handshake("component-secret");
    await twin.waitForElement(streamError("conflict"));
    // Forged 'from': invalid-from, and the component is gone.
    bot.socket.write("<message from='alice@localhost' to='alice@localhost/a'><body>forged</body></message>");
    await bot.waitForElement(streamError("invalid-from"));
    await bot.closed;
    alice.send("<message to='echo@bot.localhost' type='chat' id='gone'><body>?</body></message>");
    await alice.waitForElement((e) => e.is("message") && withId("gone")(e) && e.attrs.type === "error");
    alice.close();
  });

  it("refuses a wrong secret, an unknown domain and stanzas before the handshake", async () => {
    const wrong = await Component.open(server.ports.component!, "bot.localhost");
    await wrong.handshake("not-the-secret");
    await wrong.waitForElement(streamError("not-authorized"));
    const unknown = await Component.open(server.ports.component!, "nobody.localhost");
    await unknown.waitForElement(streamError("host-unknown"));
    const early = await Component.open(server.ports.component!, "bot.localhost");
    await early.waitForHeader();
    early.socket.write("<message from='x@bot.localhost' to='alice@localhost'/>");
    await early.waitForElement(streamError("not-authorized"));
  });
});
