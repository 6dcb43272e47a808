/** XEP-0114 external components over a raw TCP socket: handshake, routing both ways, the exact stream errors. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { rawSession } from "../helpers/raw.js";
import { Component } from "../helpers/component.js";

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
    await bot.waitFor(/<handshake\/>/);
    const alice = await rawSession(server.ports.c2sDirectTls!, "alice", "pw", "a");
    alice.send("<message to='echo@bot.localhost' type='chat' id='to-bot'><body>ping</body></message>");
    const got = await bot.waitFor(/<message[^>]*id="to-bot"[^>]*>.*?<\/message>/);
    assert.match(got[0], /xmlns="jabber:component:accept"/);
    assert.match(got[0], /from="alice@localhost\/a"/);
    bot.socket.write("<message from='echo@bot.localhost' to='alice@localhost/a' type='chat' id='from-bot'><body>pong</body></message>");
    const back = await alice.waitFor(/<message[^>]*id="from-bot"[^>]*>.*?<\/message>/);
    assert.match(back[0], /from="echo@bot.localhost"/);
    assert.doesNotMatch(back[0], /jabber:component:accept/);
    // Disco to the component domain goes to the component, not to the server.
    alice.send("<iq type='get' to='bot.localhost' id='disco'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>");
    await bot.waitFor(/<iq[^>]*id="disco"/);

    // A second connection for the same domain: conflict.
    const twin = await Component.open(server.ports.component!, "bot.localhost");
    await twin.handshake("component-secret");
    await twin.waitFor(/<conflict xmlns="urn:ietf:params:xml:ns:xmpp-streams"\/>/);
    // Forged 'from': invalid-from, and the component is gone.
    bot.socket.write("<message from='alice@localhost' to='alice@localhost/a'><body>forged</body></message>");
    await bot.waitFor(/<invalid-from xmlns="urn:ietf:params:xml:ns:xmpp-streams"\/>/);
    await bot.closed;
    alice.send("<message to='echo@bot.localhost' type='chat' id='gone'><body>?</body></message>");
    await alice.waitFor(/<message[^>]*id="gone"[^>]*type="error"|<message[^>]*type="error"[^>]*id="gone"/);
    alice.close();
  });

  it("refuses a wrong secret, an unknown domain and stanzas before the handshake", async () => {
    const wrong = await Component.open(server.ports.component!, "bot.localhost");
    await wrong.handshake("not-the-secret");
    await wrong.waitFor(/<not-authorized xmlns="urn:ietf:params:xml:ns:xmpp-streams"\/>/);
    const unknown = await Component.open(server.ports.component!, "nobody.localhost");
    await unknown.waitFor(/<host-unknown xmlns="urn:ietf:params:xml:ns:xmpp-streams"\/>/);
    const early = await Component.open(server.ports.component!, "bot.localhost");
    await early.waitFor(/<stream:stream/);
    early.socket.write("<message from='x@bot.localhost' to='alice@localhost'/>");
    await early.waitFor(/<not-authorized xmlns="urn:ietf:params:xml:ns:xmpp-streams"\/>/);
  });
});
