/**
 * XMPP over WebSocket (RFC 7395) end to end: xmpp.js's WebSocket transport logs in and chats with
 * a TCP user, SCRAM-PLUS binds to the WebSocket's TLS session, every message stands alone, and
 * XEP-0198 resumption works over WebSocket and across transports (WebSocket → TCP, TCP → WebSocket).
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import type { Element } from "@xmpp/xml";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { header, openStream as openTcpStream, rawSession, type RawClient } from "../helpers/raw.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";
import { installGlobalWebSocket, NS_FRAMING, WsClient, wsScramLogin } from "../helpers/websocket.js";

const SM = "urn:xmpp:sm:3";
const SASL = "urn:ietf:params:xml:ns:xmpp-sasl";
installGlobalWebSocket();

/** Which transport a session is on now (C2SSession.transport). */
const transportOf = (server: TestServer, jid: string) => (server.sessions.get(jid) as unknown as { transport?: string } | undefined)?.transport;

const chat = (from: string, id: string) => (s: Element) => s.is("message") && s.attrs.id === id && (s.attrs.from as string).startsWith(from);

/** A raw TCP client authenticated with PLAIN, not bound: ready for <resume/>. */
async function tcpAuthenticated(port: number, user: string): Promise<RawClient> {
  const c = await openTcpStream(port);
  let from = c.elements.length;
  c.send(`<auth xmlns='${SASL}' mechanism='PLAIN'>${Buffer.from(`\0${user}\0pw`).toString("base64")}</auth>`);
  await c.waitForElement((e) => e.is("success", SASL), 5000, from);
  c.restartParser();
  from = c.elements.length;
  c.send(header());
  await c.waitForElement((e) => e.is("features", "http://etherx.jabber.org/streams") || e.name === "stream:features", 5000, from);
  return c;
}

describe("XMPP over WebSocket (RFC 7395)", () => {
  let server: TestServer;
  let url: string;
  const open: Connected[] = [];
  before(async () => {
    server = await startTestServer({ streamManagement: { resumeTimeoutSeconds: 30 } });
    for (const u of ["alice", "bob", "carol", "dave", "erin", "frank"]) await server.accounts.create(`${u}@localhost`, "pw");
    url = `wss://127.0.0.1:${server.ports.https}/xmpp-websocket`;
  });
  after(async () => {
    for (const c of open) await c.stop();
    await server.cleanup();
  });

  it("xmpp.js over WebSocket logs in with SCRAM and chats both ways with a user on TCP", async () => {
    const ws = await connect({ port: 0, service: url, username: "alice", password: "pw", resource: "web", mechanism: "SCRAM-SHA-1" });
    const tcp = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "bob", password: "pw", resource: "phone" });
    open.push(ws, tcp);
    assert.equal(ws.jid, "alice@localhost/web");
    assert.equal(transportOf(server, "alice@localhost/web"), "websocket");
    assert.equal(transportOf(server, "bob@localhost/phone"), "tcp");
    await ws.xmpp.send(xml("message", { to: "bob@localhost/phone", type: "chat", id: "w1" }, xml("body", {}, "from the browser")));
    const got = await tcp.waitFor(chat("alice@localhost/web", "w1"));
    assert.equal(got.getChildText("body"), "from the browser");
    await tcp.xmpp.send(xml("message", { to: "alice@localhost/web", type: "chat", id: "t1" }, xml("body", {}, "from the phone")));
    const back = await ws.waitFor(chat("bob@localhost/phone", "t1"));
    assert.equal(back.getChildText("body"), "from the phone");
    // An IQ round trip over the WebSocket (XEP-0199 ping to the server).
    const pong = await ws.iq(xml("iq", { type: "get", to: "localhost" }, xml("ping", { xmlns: "urn:xmpp:ping" })));
    assert.equal(pong.attrs.type, "result");
  });

  it("xmpp.js logs in with PLAIN over wss (an encrypted channel)", async () => {
    const ws = await connect({ port: 0, service: url, username: "carol", password: "pw", resource: "plain", mechanism: "PLAIN" });
    open.push(ws);
    assert.equal(ws.jid, "carol@localhost/plain");
  });

  it("offers SCRAM-PLUS bound to the WebSocket's TLS session (tls-exporter and tls-server-end-point)", async () => {
    for (const cb of ["tls-exporter", "tls-server-end-point"] as const) {
      const c = await WsClient.connect(url);
      const features = await c.openStream();
      const mechanisms = features.getChild("mechanisms", SASL)!.getChildren("mechanism").map((m) => m.text());
      assert.ok(mechanisms.includes("SCRAM-SHA-256-PLUS"), mechanisms.join());
      const types = features.getChild("sasl-channel-binding", "urn:xmpp:sasl-cb:0")!.getChildren("channel-binding").map((t) => t.attrs.type);
      assert.deepEqual(types.sort(), ["tls-exporter", "tls-server-end-point"]);
      assert.equal(await wsScramLogin(c, "SCRAM-SHA-256-PLUS", "dave", "pw", cb), "success");
      assert.match(await c.bind(`plus-${cb}`), /^dave@localhost\/plus-/);
      c.close();
    }
  });

  it("every message is one element that parses alone: <open/>, features with their stream prefix, stanzas with their namespace", async () => {
    const c = await WsClient.connect(url);
    await c.session("erin", "pw", "alone");
    const tcp = await rawSession(server.ports.c2sDirectTls!, "frank", "pw", "tcp");
    tcp.send("<message to='erin@localhost/alone' type='chat' id='n1'><body>hi</body></message>");
    await c.waitForElement((e) => e.is("message") && e.attrs.id === "n1");
    c.send("<iq type='get' id='p1' to='localhost' xmlns='jabber:client'><ping xmlns='urn:xmpp:ping'/></iq>");
    await c.waitForElement((e) => e.is("iq") && e.attrs.id === "p1");
    assert.equal(c.perMessage.length, c.messages.length);
    c.perMessage.forEach((elements, i) => assert.equal(elements.length, 1, `message ${i} is one element: ${c.messages[i]}`));
    const opens = c.elements.filter((e) => e.name === "open");
    assert.ok(opens.length >= 2, "one <open/> per stream (before and after SASL)");
    for (const o of opens) {
      assert.equal(o.attrs.xmlns, NS_FRAMING);
      assert.equal(o.attrs.version, "1.0");
      assert.equal(o.attrs.from, "localhost");
    }
    for (const f of c.elements.filter((e) => e.name === "stream:features")) assert.equal(f.attrs["xmlns:stream"], "http://etherx.jabber.org/streams");
    const stanzas = c.elements.filter((e) => ["message", "iq", "presence"].includes(e.name));
    assert.ok(stanzas.length >= 3);
    for (const s of stanzas) assert.equal(s.attrs.xmlns, "jabber:client", s.toString());
    // A stanza whose message leaves the namespace out is read as jabber:client (the stream's), as Prosody and ejabberd do.
    c.send("<iq type='get' id='p2' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    const result = await c.waitForElement((e) => e.is("iq") && e.attrs.id === "p2");
    assert.equal(result.attrs.type, "result");
    // The client closes: <close/> answered by <close/>, then a clean WebSocket close.
    const from = c.elements.length;
    c.send(`<close xmlns='${NS_FRAMING}'/>`);
    await c.waitForElement((e) => e.is("close", NS_FRAMING), 5000, from);
    assert.equal((await c.closed).code, 1000);
    tcp.close();
  });

  it("xmpp.js over WebSocket resumes its session (XEP-0198) after the connection drops", async () => {
    const ws = await connect({ port: 0, service: url, username: "alice", password: "pw", resource: "resumer" });
    open.push(ws);
    const tcp = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "bob", password: "pw", resource: "sender" });
    open.push(tcp);
    const sm = (ws.xmpp as unknown as { streamManagement: { id: string; enabled: boolean; on(e: string, f: () => void): void } }).streamManagement;
    const deadline = Date.now() + 5000;
    while (!sm.enabled && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.ok(sm.id, "stream management enabled with resumption");
    const id = sm.id;
    const resumed = new Promise<void>((resolve) => sm.on("resumed", resolve));
    const session = server.sessions.get("alice@localhost/resumer")!;
    // The network drops under the client: it never sent <close/>.
    (ws.xmpp.reconnect as unknown as { start(): void }).start();
    (ws.xmpp as unknown as { socket: { socket: { _socket: { destroy(): void } } } }).socket.socket._socket.destroy();
    await tcp.xmpp.send(xml("message", { to: "alice@localhost/resumer", type: "chat", id: "gap1" }, xml("body", {}, "while you were away")));
    await resumed;
    const got = await ws.waitFor(chat("bob@localhost/sender", "gap1"));
    assert.equal(got.getChildText("body"), "while you were away");
    assert.equal(sm.id, id);
    assert.equal(server.sessions.get("alice@localhost/resumer"), session, "the same session, resumed");
    ws.xmpp.reconnect.stop();
  });

  it("a session started over WebSocket is resumed over TCP, with what was sent meanwhile", async () => {
    const c = await WsClient.connect(url);
    await c.session("carol", "pw", "roaming");
    let from = c.elements.length;
    c.send(`<enable xmlns='${SM}' resume='true'/>`);
    const enabled = await c.waitForElement((e) => e.is("enabled", SM), 5000, from);
    const previd = enabled.attrs.id as string;
    c.send("<presence xmlns='jabber:client'/>");
    await c.waitForElement((e) => e.is("presence") && e.attrs.from === "carol@localhost/roaming");
    c.send(`<a xmlns='${SM}' h='1'/>`);
    c.close(); // the WebSocket drops without <close/>
    await c.closed;
    const sender = await rawSession(server.ports.c2sDirectTls!, "dave", "pw", "sender");
    for (const n of [1, 2]) sender.send(`<message to='carol@localhost/roaming' type='chat' id='x${n}'><body>${n}</body></message>`);
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(server.sessions.get("carol@localhost/roaming")?.hibernating, "the session waits, hibernated");

    const back = await tcpAuthenticated(server.ports.c2sDirectTls!, "carol");
    from = back.elements.length;
    back.send(`<resume xmlns='${SM}' previd='${previd}' h='1'/>`);
    const resumed = await back.waitForElement((e) => e.is("resumed", SM), 5000, from);
    assert.equal(resumed.attrs.previd, previd);
    for (const id of ["x1", "x2"]) {
      const m = await back.waitForElement((e) => e.is("message") && e.attrs.id === id, 5000, from);
      assert.equal(m.attrs.from, "dave@localhost/sender");
    }
    assert.equal(transportOf(server, "carol@localhost/roaming"), "tcp");
    back.close();
    sender.close();
  });

  it("a session started over TCP is resumed over WebSocket", async () => {
    const tcp = await rawSession(server.ports.c2sDirectTls!, "erin", "pw", "desk");
    let from = tcp.elements.length;
    tcp.send(`<enable xmlns='${SM}' resume='true'/>`);
    const previd = (await tcp.waitForElement((e) => e.is("enabled", SM), 5000, from)).attrs.id as string;
    tcp.socket.destroy();
    await tcp.closed;
    const sender = await rawSession(server.ports.c2sDirectTls!, "frank", "pw", "s2");
    sender.send("<message to='erin@localhost/desk' type='chat' id='y1'><body>hello web</body></message>");
    await new Promise((r) => setTimeout(r, 200));

    const c = await WsClient.connect(url);
    await c.openStream();
    await c.auth(`<auth xmlns='${SASL}' mechanism='PLAIN'>${Buffer.from("\0erin\0pw").toString("base64")}</auth>`);
    await c.openStream();
    from = c.elements.length;
    c.send(`<resume xmlns='${SM}' previd='${previd}' h='0'/>`);
    await c.waitForElement((e) => e.is("resumed", SM), 5000, from);
    const m = await c.waitForElement((e) => e.is("message") && e.attrs.id === "y1", 5000, from);
    assert.equal(m.getChildText("body"), "hello web");
    assert.equal(m.attrs.xmlns, "jabber:client");
    assert.equal(transportOf(server, "erin@localhost/desk"), "websocket");
    c.close();
    sender.close();
  });
});
