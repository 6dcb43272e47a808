/**
 * Bad input over WebSocket (RFC 7395, HARDENING §4): each gets its answer — an HTTP refusal of the
 * handshake, a stream error, or the WebSocket close code RFC 6455 names — and the server keeps
 * serving everyone else. Also the limits WebSocket shares with TCP (connections per address, bans,
 * negotiation timeout, send buffer), X-Forwarded-* only from trusted proxies, the Origin policy,
 * <close see-other-uri/>, and ping/pong keepalive.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { connect as tcpConnect } from "node:net";
import type { Element } from "@xmpp/xml";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { rawSession, type RawClient } from "../helpers/raw.js";
import { NS_FRAMING, WsClient, open, type Refused } from "../helpers/websocket.js";

const SM = "urn:xmpp:sm:3";
const SASL = "urn:ietf:params:xml:ns:xmpp-sasl";
const plainAuth = (user: string, password = "pw") => `<auth xmlns='${SASL}' mechanism='PLAIN'>${Buffer.from(`\0${user}\0${password}`).toString("base64")}</auth>`;
const mechanismsOf = (features: Element) => features.getChild("mechanisms", SASL)!.getChildren("mechanism").map((m) => m.text());
const isRefused = (r: WsClient | Refused): r is Refused => !(r instanceof WsClient);

async function until(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function refusal(url: string, options: Parameters<typeof WsClient.attempt>[1] = {}): Promise<number> {
  const r = await WsClient.attempt(url, options);
  if (!isRefused(r)) { r.close(); return 101; }
  return r.status;
}

describe("WebSocket: bad input, limits, proxies, origins", () => {
  let server: TestServer;
  let wss: string;
  let ws: string;
  /** A user on TCP who must keep being served through all of this. */
  let watcher: RawClient;
  let marks = 0;
  const stillServing = async () => {
    const id = `mark${++marks}`;
    const c = await WsClient.connect(wss);
    await c.session("watched", "pw", `probe${marks}`);
    c.send(`<message to='watcher@localhost/w' type='chat' id='${id}' xmlns='jabber:client'><body>still here</body></message>`);
    await watcher.waitForElement((e) => e.is("message") && e.attrs.id === id);
    c.close();
  };

  before(async () => {
    server = await startTestServer({
      listen: { address: "127.0.0.1", c2s: 0, c2sDirectTls: 0, https: 0, http: 0, httpAddress: "127.0.0.1" },
      limits: { maxSendBufferBytes: 1024 * 1024 },
      auth: { scramIterations: 4096, banAfterFailures: 2 },
      streamManagement: { resumeTimeoutSeconds: 30 },
    });
    for (const u of ["watcher", "watched", "mallory", "alice", "bob", "stalled"]) await server.accounts.create(`${u}@localhost`, "pw");
    wss = `wss://127.0.0.1:${server.ports.https}/xmpp-websocket`;
    ws = `ws://127.0.0.1:${server.ports.http}/xmpp-websocket`;
    watcher = await rawSession(server.ports.c2sDirectTls!, "watcher", "pw", "w");
  });
  after(async () => {
    watcher.close();
    await server.cleanup();
  });

  it("refuses a handshake without the 'xmpp' subprotocol (RFC 7395 §3.1) and picks 'xmpp' among several", async () => {
    assert.equal(await refusal(wss, { protocols: [] }), 400);
    assert.equal(await refusal(wss, { protocols: ["chat"] }), 400);
    const c = await WsClient.connect(wss, { protocols: ["chat", "xmpp"] });
    assert.equal(c.ws.protocol, "xmpp");
    c.close();
    assert.equal(await refusal(`wss://127.0.0.1:${server.ports.https}/xmpp-websocket-other`), 404);
    await stillServing();
  });

  it("admits the server's own origin and clients without one; refuses a foreign origin with 403 (RFC 6455 §10.2)", async () => {
    assert.equal(await refusal(wss, { origin: "https://evil.example" }), 403);
    assert.equal(await refusal(wss, { origin: "null" }), 403);
    assert.equal(await refusal(wss, { origin: `https://localhost:${server.ports.https}` }), 101);
    assert.equal(await refusal(wss), 101);
    await stillServing();
  });

  it("a binary message: unsupported-encoding, then close code 1003; the session ends instead of waiting to be resumed", async () => {
    const c = await WsClient.connect(wss);
    await c.session("mallory", "pw", "binary");
    const from = c.elements.length;
    c.send(`<enable xmlns='${SM}' resume='true'/>`);
    await c.waitForElement((e) => e.is("enabled", SM), 5000, from);
    c.send(Buffer.from("<presence/>"), true);
    assert.equal(await c.streamError(), "unsupported-encoding");
    await c.waitForElement((e) => e.is("close", NS_FRAMING), 5000, from);
    assert.equal((await c.closed).code, 1003);
    await until(() => server.sessions.get("mallory@localhost/binary") === undefined, "the session ended");
    await stillServing();
  });

  it("two stanzas in one message: not-well-formed, and neither is routed", async () => {
    const c = await WsClient.connect(wss);
    await c.session("mallory", "pw", "two");
    c.send("<message to='watcher@localhost/w' type='chat' id='two1' xmlns='jabber:client'><body>1</body></message>"
      + "<message to='watcher@localhost/w' type='chat' id='two2' xmlns='jabber:client'><body>2</body></message>");
    assert.equal(await c.streamError(), "not-well-formed");
    await c.closed;
    await stillServing();
    assert.equal(watcher.elements.filter((e) => e.attrs.id === "two1" || e.attrs.id === "two2").length, 0);
    // Before authentication too: two <open/> in one message.
    const d = await WsClient.connect(wss);
    d.send(open() + open());
    assert.equal(await d.streamError(), "not-well-formed");
  });

  it("a partial stanza, a half tag, or a stanza followed by the start of another: not-well-formed", async () => {
    for (const partial of ["<message to='watcher@localhost/w' xmlns='jabber:client'><body>half", "<message to='watcher@localhost", "<iq type='get' id='a' xmlns='jabber:client'/><iq"]) {
      const c = await WsClient.connect(wss);
      await c.session("mallory", "pw", "partial");
      c.send(partial);
      assert.equal(await c.streamError(), "not-well-formed", partial);
      await c.closed;
    }
    await stillServing();
  });

  it("text outside an element, before or after it: invalid-xml", async () => {
    for (const text of ["hello", "hello<iq type='get' id='t' xmlns='jabber:client'/>", "<iq type='get' id='t' xmlns='jabber:client'/>world>"]) {
      const c = await WsClient.connect(wss);
      await c.session("mallory", "pw", "text");
      c.send(text);
      assert.equal(await c.streamError(), "invalid-xml", text);
      await c.closed;
      assert.equal(c.elements.filter((e) => e.is("iq") && e.attrs.id === "t").length, 0, "the stanza was not handled");
    }
    await stillServing();
  });

  it("oversized: before authentication the pre-auth limit; after it the stanza limit, and past ws's maximum close code 1009 and the session ends", async () => {
    const pre = await WsClient.connect(wss);
    pre.send(`<open xmlns='${NS_FRAMING}' to='localhost' version='1.0' pad='${"x".repeat(9000)}'/>`);
    assert.equal(await pre.streamError(), "policy-violation");
    assert.ok(pre.elements.find((e) => e.name === "stream:error")!.getChild("stanza-too-big", "urn:xmpp:errors"));

    const big = (n: number) => `<message to='watcher@localhost/w' type='chat' xmlns='jabber:client'><body>${"y".repeat(n)}</body></message>`;
    const over = await WsClient.connect(wss);
    await over.session("mallory", "pw", "big");
    over.send(big(262144));
    assert.equal(await over.streamError(), "policy-violation");
    assert.ok(over.elements.find((e) => e.name === "stream:error")!.getChild("stanza-too-big", "urn:xmpp:errors"));

    const huge = await WsClient.connect(wss);
    await huge.session("mallory", "pw", "huge");
    const from = huge.elements.length;
    huge.send(`<enable xmlns='${SM}' resume='true'/>`);
    await huge.waitForElement((e) => e.is("enabled", SM), 5000, from);
    huge.send(big(400_000));
    assert.equal((await huge.closed).code, 1009);
    await until(() => server.sessions.get("mallory@localhost/huge") === undefined, "the session ended, not hibernated");
    await stillServing();
  });

  it("invalid UTF-8 in a text message: close code 1007", async () => {
    const c = await WsClient.connect(wss);
    await c.openStream();
    c.ws.send(Buffer.from([0x3c, 0x61, 0xff, 0xfe, 0x2f, 0x3e]), { binary: false });
    assert.equal((await c.closed).code, 1007);
    await stillServing();
  });

  it("the stream header checks apply to <open/>: another first element, no version, an unknown host", async () => {
    const cases: Array<[string, string]> = [
      ["<message xmlns='jabber:client' to='localhost'/>", "invalid-namespace"],
      [`<open xmlns='${NS_FRAMING}' to='localhost'/>`, "unsupported-version"],
      [`<open xmlns='${NS_FRAMING}' to='elsewhere.example' version='1.0'/>`, "host-unknown"],
      // The TCP stream header is not a complete element.
      ["<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>", "not-well-formed"],
    ];
    for (const [first, condition] of cases) {
      const c = await WsClient.connect(wss);
      c.send(first);
      assert.equal(await c.streamError(), condition, first);
      // RFC 7395 §3.6: our <open/> first, then the error, then <close/>.
      assert.deepEqual(c.elements.map((e) => e.name), ["open", "stream:error", "close"]);
    }
    await stillServing();
  });

  it("restricted XML in a message (RFC 6120 §11.1): comments, processing instructions, DTDs and entities go no further", async () => {
    const cases: Array<[string, string]> = [
      [`<!-- hi --><open xmlns='${NS_FRAMING}' to='localhost' version='1.0'/>`, "restricted-xml"],
      [`<?pi x?><open xmlns='${NS_FRAMING}' to='localhost' version='1.0'/>`, "restricted-xml"],
      [`<!DOCTYPE open [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><open xmlns='${NS_FRAMING}' to='&b;' version='1.0'/>`, "not-well-formed"],
      [`<open xmlns='${NS_FRAMING}' to='&lol;' version='1.0'/>`, "not-well-formed"],
    ];
    for (const [message, condition] of cases) {
      const c = await WsClient.connect(wss);
      c.send(message);
      assert.equal(await c.streamError(), condition, message);
    }
    await stillServing();
  });

  it("connections per forwarded address are limited: over the limit the handshake gets 429", async () => {
    // From one forwarded address (the trusted proxy at 127.0.0.1 says who): 50 are allowed.
    const headers = { "X-Forwarded-For": "198.51.100.20" };
    const held: WsClient[] = [];
    for (let i = 0; i < 50; i++) held.push(await WsClient.connect(ws, { headers }));
    assert.equal(await refusal(ws, { headers }), 429);
    // Another address is not affected.
    assert.equal(await refusal(ws, { headers: { "X-Forwarded-For": "198.51.100.21" } }), 101);
    // A slot is given back when a connection closes (once the server has seen it go).
    const leaving = held.pop()!;
    leaving.close();
    await leaving.closed;
    let back = await WsClient.attempt(ws, { headers });
    for (let tries = 0; isRefused(back) && tries < 100; tries++) {
      await new Promise((r) => setTimeout(r, 50));
      back = await WsClient.attempt(ws, { headers });
    }
    assert.ok(!isRefused(back), "the freed slot is available");
    back.close();
    for (const c of held) c.close();
    await stillServing();
  });

  it("an address banned for failed logins (over any transport) is refused the handshake with 403", async () => {
    const headers = { "X-Forwarded-For": "198.51.100.30", "X-Forwarded-Proto": "https" };
    for (let i = 0; i < 2; i++) {
      const c = await WsClient.connect(ws, { headers });
      await c.openStream();
      const from = c.elements.length;
      c.send(plainAuth("mallory", "wrong"));
      const failure = await c.waitForElement((e) => e.is("failure", SASL), 10_000, from);
      assert.ok(failure.getChild("not-authorized"));
      c.close();
    }
    assert.equal(await refusal(ws, { headers }), 403);
    // TCP from the same client address would be refused too; the proxy's own address is not banned.
    assert.equal(await refusal(ws, { headers: { "X-Forwarded-For": "198.51.100.31" } }), 101);
    await stillServing();
  });

  it("plain HTTP without a trusted proxy vouching for HTTPS: no PLAIN (encryption-required), no -PLUS; SCRAM works", async () => {
    const c = await WsClient.connect(ws);
    const features = await c.openStream();
    assert.deepEqual(mechanismsOf(features), ["SCRAM-SHA-256", "SCRAM-SHA-1"]);
    assert.equal(features.getChild("sasl-channel-binding"), undefined);
    const from = c.elements.length;
    c.send(plainAuth("alice"));
    const failure = await c.waitForElement((e) => e.is("failure", SASL), 5000, from);
    assert.ok(failure.getChild("encryption-required"), failure.toString());
    c.close();
    // A client on loopback cannot claim HTTPS by itself: the header counts only with a forwarded address.
    const d = await WsClient.connect(ws, { headers: { "X-Forwarded-Proto": "https" } });
    assert.ok(!mechanismsOf(await d.openStream()).includes("PLAIN"));
    d.close();
  });

  it("behind a trusted proxy: the forwarded address is the session's, X-Forwarded-Proto https makes the channel secure (PLAIN, no -PLUS)", async () => {
    const c = await WsClient.connect(ws, { headers: { "X-Forwarded-For": "203.0.113.9, 198.51.100.1", "X-Forwarded-Proto": "http, https" } });
    const features = await c.openStream();
    assert.deepEqual(mechanismsOf(features), ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]);
    // The proxy's TLS session is not the client's: nothing to bind to.
    assert.equal(features.getChild("sasl-channel-binding"), undefined);
    await c.auth(plainAuth("alice"));
    await c.bind("proxied");
    // 198.51.100.1 (the last hop) is not a trusted proxy, so it is the client.
    assert.equal(server.sessions.get("alice@localhost/proxied")?.remoteAddress, "198.51.100.1");
    c.close();
  });

  it("a client that stops reading is disconnected over the send-buffer cap (transport.buffered is the WebSocket's), others keep being served", async () => {
    const c = await WsClient.connect(wss);
    await c.session("stalled", "pw", "stalled");
    c.send("<presence xmlns='jabber:client'/>");
    await c.waitForElement((e) => e.is("presence"));
    c.tlsSocket.pause();
    const sender = await rawSession(server.ports.c2sDirectTls!, "bob", "pw", "flood");
    const body = "z".repeat(200 * 1024);
    for (let i = 0; i < 40 && server.sessions.get("stalled@localhost/stalled"); i++) {
      sender.send(`<message to='stalled@localhost/stalled' type='chat' id='f${i}'><body>${body}</body></message>`);
      await new Promise((r) => setTimeout(r, 20));
    }
    await until(() => server.sessions.get("stalled@localhost/stalled") === undefined, "the stalled session was closed");
    sender.close();
    c.close();
    await stillServing();
  });

  it("a graceful shutdown sends system-shutdown over WebSocket too", async () => {
    const c = await WsClient.connect(wss);
    await c.session("alice", "pw", "shutdown");
    const stopping = server.stop();
    assert.equal(await c.streamError(), "system-shutdown");
    await c.waitForElement((e) => e.is("close", NS_FRAMING));
    await stopping;
  });
});

describe("WebSocket: keepalive, negotiation timeout, any origin", () => {
  let server: TestServer;
  let wss: string;
  before(async () => {
    server = await startTestServer({
      websocket: { pingIntervalSeconds: 1, requireOrigin: true },
      http: { origins: ["*"] },
      limits: { negotiationTimeoutSeconds: 3 },
      streamManagement: { resumeTimeoutSeconds: 30 },
    });
    for (const u of ["alive", "dead"]) await server.accounts.create(`${u}@localhost`, "pw");
    wss = `wss://127.0.0.1:${server.ports.https}/xmpp-websocket`;
  });
  after(() => server.cleanup());

  it("origins: ['*'] admits any page; requireOrigin refuses clients without one", async () => {
    assert.equal(await refusal(wss, { origin: "https://anywhere.example" }), 101);
    assert.equal(await refusal(wss), 403);
  });

  it("pings a silent client; one that answers stays, one that does not is dropped and its session hibernates", async () => {
    const origin = "https://app.example";
    const alive = await WsClient.connect(wss, { origin });
    await alive.session("alive", "pw", "a");
    let pings = 0;
    alive.ws.on("ping", () => { pings++; });
    await until(() => pings >= 3, "three pings answered");
    assert.equal(alive.ws.readyState, alive.ws.OPEN);
    assert.equal(server.sessions.get("alive@localhost/a")?.hibernating, false);

    const dead = await WsClient.connect(wss, { origin, autoPong: false });
    await dead.session("dead", "pw", "d");
    const from = dead.elements.length;
    dead.send(`<enable xmlns='${SM}' resume='true'/>`);
    await dead.waitForElement((e) => e.is("enabled", SM), 5000, from);
    const closed = await dead.closed;
    assert.equal(closed.code, 1006, "dropped without a closing handshake");
    await until(() => server.sessions.get("dead@localhost/d")?.hibernating === true, "the session hibernates, as after a dropped TCP connection");
    alive.close();
  });

  it("the negotiation timeout applies: connection-timeout", async () => {
    const c = await WsClient.connect(wss, { origin: "https://app.example" });
    await c.openStream();
    assert.equal(await c.streamError(10_000), "connection-timeout");
  });
});

describe("WebSocket: connections per address, shared with TCP", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ limits: { maxConnectionsPerAddress: 2 } });
  });
  after(() => server.cleanup());

  it("one TCP and one WebSocket connection fill a limit of two: the next handshake gets 429, the next TCP connection is dropped", async () => {
    const wss = `wss://127.0.0.1:${server.ports.https}/xmpp-websocket`;
    const tcp = tcpConnect({ port: server.ports.c2s!, host: "127.0.0.1" });
    await new Promise<void>((resolve) => tcp.once("connect", () => resolve()));
    const first = await WsClient.connect(wss);
    assert.equal(await refusal(wss), 429);
    const extra = tcpConnect({ port: server.ports.c2s!, host: "127.0.0.1" });
    await new Promise<void>((resolve) => extra.once("close", () => resolve()));
    // The TCP connection leaves: its slot serves a WebSocket.
    tcp.destroy();
    let back = await WsClient.attempt(wss);
    for (let tries = 0; isRefused(back) && tries < 100; tries++) {
      await new Promise((r) => setTimeout(r, 50));
      back = await WsClient.attempt(wss);
    }
    assert.ok(!isRefused(back), "the freed slot is available");
    back.close();
    first.close();
  });
});

describe("WebSocket: <close see-other-uri/> (RFC 7395 §3.6.1)", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ websocket: { seeOtherUri: "wss://xmpp.example.org/xmpp-websocket" } });
  });
  after(() => server.cleanup());

  it("answers <open/> with <close see-other-uri=…/> and closes; TCP is unaffected", async () => {
    const c = await WsClient.connect(`wss://127.0.0.1:${server.ports.https}/xmpp-websocket`);
    c.send(open());
    const close = await c.waitForElement((e) => e.is("close", NS_FRAMING));
    assert.equal(close.attrs["see-other-uri"], "wss://xmpp.example.org/xmpp-websocket");
    assert.deepEqual(c.elements.map((e) => e.name), ["close"]);
    assert.equal((await c.closed).code, 1000);
    const tcp = tcpConnect({ port: server.ports.c2s!, host: "127.0.0.1" });
    await new Promise<void>((resolve) => tcp.once("connect", () => resolve()));
    tcp.destroy();
  });
});
