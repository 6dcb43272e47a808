/**
 * XMPP over BOSH (XEP-0124 1.11.2, XEP-0206 1.4) at /http-bind, end to end over real sockets:
 * Strophe.js (the BOSH client of Converse.js) against xmpp.js over TCP, XEP-0198 resumption over
 * BOSH and across transports, and raw HTTP for the exact-byte cases of XEP-0124 §11–§17.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { connect as tlsConnect } from "node:tls";
import { setTimeout as sleep } from "node:timers/promises";
import type { Element } from "@xmpp/xml";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { NS_HTTPBIND, NS_XBOSH, RawBosh, bodyOf, payloads, post } from "../helpers/bosh.js";
import { stropheConnect, childText } from "../helpers/strophe.js";
import { closeXhrConnections } from "../helpers/xhr.js";
import { connect, xml } from "../helpers/xmpp-client.js";
import { openStream, header } from "../helpers/raw.js";
import { $build, $msg } from "strophe.js";

const SM = "urn:xmpp:sm:3";
const STREAMS = "http://etherx.jabber.org/streams";
const STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams";
const plainAuth = (user: string, pw = "pw") => `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from(`\0${user}\0${pw}`).toString("base64")}</auth>`;
const ping = (id: string) => `<iq type='get' id='${id}' to='localhost' xmlns='jabber:client'><ping xmlns='urn:xmpp:ping'/></iq>`;

/** The <stream:error/> inside a remote-stream-error terminate (XEP-0206 §6), and its condition. */
function streamErrorOf(body: Element | undefined): string | undefined {
  assert.equal(body?.attrs.type, "terminate");
  assert.equal(body?.attrs.condition, "remote-stream-error");
  const error = payloads(body).find((e) => e.name === "stream:error");
  assert.ok(error, "the stream error travels inside the terminate body");
  assert.equal(error.getNS(), STREAMS);
  return error.children.find((c): c is Element => typeof c !== "string" && c.attrs.xmlns === STREAM_ERRORS)?.name;
}

async function until(check: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(50);
  }
}

describe("BOSH (XEP-0124, XEP-0206)", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({
      listen: { address: "127.0.0.1", c2s: 0, c2sDirectTls: 0, https: 0, http: 0 },
      http: { origins: ["https://web.example"], trustedProxies: ["127.0.0.1"] },
      bosh: { bodyTimeoutSeconds: 1, pollingSeconds: 30 },
    });
    for (const u of ["alice", "bob", "carol", "dave", "erin", "frank"]) await server.accounts.create(`${u}@localhost`, "pw");
  });
  after(async () => {
    closeXhrConnections();
    await server.cleanup();
  });

  it("Strophe.js logs in over BOSH and chats both ways with an xmpp.js client over TCP", async () => {
    const alice = await stropheConnect({ url: `https://127.0.0.1:${server.ports.https}/http-bind`, jid: "alice@localhost/web", password: "pw" });
    assert.equal(alice.conn.jid, "alice@localhost/web");
    const bob = await connect({ port: server.ports.c2sDirectTls!, username: "bob", password: "pw", directTls: true, resource: "tcp" });
    alice.conn.send($msg({ to: "bob@localhost/tcp", type: "chat", id: "to-bob" }).c("body").t("hello over BOSH").tree());
    const atBob = await bob.waitFor((m) => m.attrs.id === "to-bob");
    assert.equal(atBob.getChildText("body"), "hello over BOSH");
    assert.equal(atBob.attrs.from, "alice@localhost/web");
    await bob.xmpp.send(xml("message", { to: "alice@localhost/web", type: "chat", id: "to-alice" }, xml("body", {}, "hello over TCP")));
    const atAlice = await alice.waitFor((e) => e.getAttribute("id") === "to-alice");
    assert.equal(childText(atAlice, "body"), "hello over TCP");
    assert.equal(atAlice.getAttribute("from"), "bob@localhost/tcp");
    await alice.disconnect();
    await until(() => !server.sessions.get("alice@localhost/web"), "the BOSH session ends on terminate");
    await bob.stop();
  });

  it("session creation response: XEP-0124 §7.2 and XEP-0206 §4 attributes, with the stream features in it", async () => {
    const b = new RawBosh(server.ports.https!);
    const created = await b.create({ wait: 500, ver: "1.6" });
    assert.equal(created.status, 200);
    assert.equal(created.headers["content-type"], "text/xml; charset=utf-8");
    const body = created.body!;
    assert.equal(body.name, "body");
    assert.equal(body.attrs.xmlns, NS_HTTPBIND);
    assert.ok(body.attrs.sid && body.attrs.sid.length >= 16, "an unpredictable sid");
    assert.equal(body.attrs.wait, "60", "the client's wait is lowered to the server's maximum");
    assert.equal(body.attrs.hold, "1");
    assert.equal(body.attrs.requests, "2", "one more than hold");
    assert.equal(body.attrs.inactivity, "60");
    assert.equal(body.attrs.polling, "30");
    assert.equal(body.attrs.maxpause, "120");
    assert.equal(body.attrs.ver, "1.6", "the lower of the client's version and ours");
    assert.equal(body.attrs.from, "localhost");
    assert.ok(body.attrs.authid, "authid: the XMPP stream id");
    assert.equal(body.attrs["xmlns:xmpp"], NS_XBOSH);
    assert.equal(body.attrs["xmpp:version"], "1.0");
    assert.equal(body.attrs["xmpp:restartlogic"], "true");
    const features = payloads(body)[0]!;
    assert.equal(features.name, "stream:features");
    assert.equal(features.getNS(), STREAMS);
    const mechanisms = features.getChild("mechanisms", "urn:ietf:params:xml:ns:xmpp-sasl");
    assert.ok(mechanisms?.getChildren("mechanism").some((m) => m.text() === "PLAIN"));
    await b.send("", { type: "terminate" });
  });

  it("SASL, the XEP-0206 §5 restart and binding; stanzas without a namespace are jabber:client, ours carry it", async () => {
    const b = new RawBosh(server.ports.https!);
    await b.create();
    const success = await b.send(plainAuth("carol"));
    assert.equal(payloads(success.body)[0]?.name, "success");
    const restarted = await b.restart();
    const features = payloads(restarted.body)[0]!;
    assert.equal(features.name, "stream:features");
    assert.ok(features.getChild("bind", "urn:ietf:params:xml:ns:xmpp-bind"));
    assert.ok(features.getChild("sm", SM), "stream management is offered over BOSH");
    assert.equal(await b.bind("raw"), "carol@localhost/raw");
    // XEP-0206 §2 note: many clients leave stanzas in the httpbind namespace of <body/>.
    const pong = await b.send("<iq type='get' id='bare' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    const result = payloads(pong.body).find((e) => e.attrs.id === "bare");
    assert.equal(result?.attrs.type, "result");
    assert.equal(result?.attrs.xmlns, "jabber:client");
    await b.send("", { type: "terminate" });
  });

  it("hold=1: a held request is answered when the next one arrives; an idle one gets an empty body after 'wait'", async () => {
    const b = new RawBosh(server.ports.https!);
    await b.login("dave", "pw");
    const idle = b.send(); // held: nothing to say yet
    await until(() => server.bosh!.openRequests(b.sid) === 1, "the first request is held");
    const active = b.send(ping("p1"));
    const [first, second] = await Promise.all([idle, active]);
    assert.equal(first.body?.attrs.type, undefined);
    const all = [...payloads(first.body), ...payloads(second.body)];
    assert.ok(all.some((e) => e.attrs.id === "p1" && e.attrs.type === "result"), "the answer comes on one of the two requests");
    // A short 'wait': the empty answer comes back by itself.
    const short = new RawBosh(server.ports.https!);
    const created = await short.create({ wait: 1 });
    assert.equal(created.body?.attrs.wait, "1");
    const empty = await short.send();
    assert.equal(empty.status, 200);
    assert.equal(payloads(empty.body).length, 0);
    assert.equal(empty.body?.attrs.type, undefined);
    await short.send("", { type: "terminate" });
    await b.send("", { type: "terminate" });
  });

  it("a repeated rid gets the same response (§14.3); a rid beyond the window ends the session with item-not-found (§14.2)", async () => {
    const b = new RawBosh(server.ports.https!);
    await b.login("erin", "pw");
    const rid = b.rid;
    const first = await b.send(ping("again"));
    const replay = await b.sendRid(rid, ping("again"));
    assert.equal(replay.status, 200);
    // Bytes on purpose: §14.3 asks for the buffered copy of the response, not an equivalent one.
    assert.equal(replay.text, first.text, "the buffered copy of the original response");
    const far = await b.sendRid(b.rid + 5);
    assert.equal(far.body?.attrs.type, "terminate");
    assert.equal(far.body?.attrs.condition, "item-not-found");
    const gone = await b.send(ping("late"));
    assert.equal(gone.body?.attrs.condition, "item-not-found", "the session is over");
    // A rid before the replay buffer: the same answer as one too large.
    const c = new RawBosh(server.ports.https!);
    await c.login("erin", "pw", "second");
    const old = await c.sendRid(c.rid - 4);
    assert.equal(old.body?.attrs.condition, "item-not-found");
  });

  it("bad requests: unknown sid, missing rid, not a BOSH body, legacy clients get the HTTP codes of §17.1", async () => {
    const unknown = await post(server.ports.https!, bodyOf({ rid: 5, sid: "nope" }));
    assert.equal(unknown.status, 200);
    assert.equal(unknown.body?.attrs.type, "terminate");
    assert.equal(unknown.body?.attrs.condition, "item-not-found");
    const noRid = await post(server.ports.https!, bodyOf({ to: "localhost", wait: 5, hold: 1, ver: "1.11" }));
    assert.equal(noRid.body?.attrs.condition, "bad-request");
    const notBosh = await post(server.ports.https!, "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>");
    assert.equal(notBosh.status, 400);
    assert.equal(notBosh.body?.attrs.condition, "bad-request");
    const notXml = await post(server.ports.https!, "rid=1&sid=2");
    assert.equal(notXml.status, 400);
    // A DOCTYPE or a PI never reaches anything: the body is refused before any session is looked at.
    const doctype = await post(server.ports.https!, `<?xml version='1.0'?><!DOCTYPE body [<!ENTITY x 'y'>]>${bodyOf({ rid: 1, to: "localhost", ver: "1.11" })}`);
    assert.equal(doctype.status, 400);
    // No 'ver' in the session request: a legacy client, which reads HTTP errors (§17.1).
    const legacy = new RawBosh(server.ports.https!);
    const made = await legacy.post(bodyOf({ rid: legacy.rid++, to: "localhost", wait: 5, hold: 1, "xmpp:version": "1.0", "xmlns:xmpp": NS_XBOSH }));
    legacy.sid = made.body!.attrs.sid!;
    const bad = await legacy.sendRid(legacy.rid + 10);
    assert.equal(bad.status, 404);
  });

  it("session creation: no 'to' → improper-addressing, a domain we do not serve → host-unknown", async () => {
    const noTo = await post(server.ports.https!, bodyOf({ rid: 10, wait: 5, hold: 1, ver: "1.11" }));
    assert.equal(noTo.body?.attrs.type, "terminate");
    assert.equal(noTo.body?.attrs.condition, "improper-addressing");
    const elsewhere = await post(server.ports.https!, bodyOf({ rid: 10, to: "example.org", wait: 5, hold: 1, ver: "1.11" }));
    assert.equal(elsewhere.body?.attrs.condition, "host-unknown");
  });

  it("too many simultaneous requests → policy-violation (§11); the other open requests learn of it", async () => {
    const b = new RawBosh(server.ports.https!);
    await b.login("frank", "pw");
    const held = b.send(); // rid n: held
    b.rid++; // rid n+1 never sent: a gap
    await until(() => server.bosh!.openRequests(b.sid) === 1, "rid n is held");
    const early = b.send(ping("early")); // n+2: waits for n+1
    await until(() => server.bosh!.openRequests(b.sid) === 2, "rid n+2 waits");
    const over = await b.send(ping("over")); // n+3: a fourth open request with requests='2'
    assert.equal(over.body?.attrs.type, "terminate");
    assert.equal(over.body?.attrs.condition, "policy-violation");
    const [h, e] = await Promise.all([held, early]);
    assert.equal(h.body?.attrs.condition, "other-request");
    assert.equal(e.body?.attrs.condition, "other-request");
  });

  it("polling too frequently → policy-violation (§12), in a polling session and while a request is held", async () => {
    const polling = new RawBosh(server.ports.https!);
    const created = await polling.create({ hold: 0 });
    assert.equal(created.body?.attrs.hold, "0");
    const firstPoll = await polling.send();
    assert.equal(firstPoll.body?.attrs.type, undefined, "answered at once, empty");
    const tooSoon = await polling.send();
    assert.equal(tooSoon.body?.attrs.condition, "policy-violation");

    const b = new RawBosh(server.ports.https!);
    await b.create();
    const held = b.send();
    await until(() => server.bosh!.openRequests(b.sid) === 1, "the first request is held");
    const extra = await b.send(); // empty, while one is already held, within 'polling'
    assert.equal(extra.body?.attrs.condition, "policy-violation");
    assert.equal((await held).body?.attrs.condition, "other-request");
  });

  it("pause (§10): every held request is answered at once, the pause response without payloads", async () => {
    const b = new RawBosh(server.ports.https!);
    await b.create();
    const held = b.send();
    await until(() => server.bosh!.openRequests(b.sid) === 1, "the first request is held");
    const paused = await b.send("", { pause: 60 });
    assert.equal(paused.status, 200);
    assert.equal(payloads(paused.body).length, 0);
    assert.equal((await held).body?.attrs.type, undefined);
    // The next request ends the pause; the session is alive.
    const resumed = await b.send(plainAuth("alice"));
    assert.equal(payloads(resumed.body)[0]?.name, "success");
    await b.send("", { type: "terminate" });
  });

  it("payloads get the same answers as over TCP: a PI, a stanza over the pre-auth limit, a stanza before auth → remote-stream-error", async () => {
    const pi = new RawBosh(server.ports.https!);
    await pi.create();
    assert.equal(streamErrorOf((await pi.send("<?evil?>")).body), "restricted-xml");
    const big = new RawBosh(server.ports.https!);
    await big.create();
    const huge = `<message to='bob@localhost' xmlns='jabber:client'><body>${"x".repeat(9000)}</body></message>`;
    const tooBig = (await big.send(huge)).body;
    assert.equal(streamErrorOf(tooBig), "policy-violation");
    const early = new RawBosh(server.ports.https!);
    await early.create();
    assert.equal(streamErrorOf((await early.send("<message to='bob@localhost' xmlns='jabber:client'><body>hi</body></message>")).body), "not-authorized");
    assert.equal((await early.send()).body?.attrs.condition, "item-not-found", "the session is gone");
  });

  it("HTTP limits: a huge body → 413, a slow body → 408, both without harm to other sessions", async () => {
    const b = new RawBosh(server.ports.https!);
    await b.login("bob", "pw", "limits");
    const declared = await post(server.ports.https!, Buffer.alloc(300 * 1024, "a"));
    assert.equal(declared.status, 413);
    const chunked = await post(server.ports.https!, Buffer.alloc(300 * 1024, "a"), { chunked: true });
    assert.equal(chunked.status, 413, "a chunked body over the limit is refused too");
    // Headers, then a few bytes of a body that never ends.
    const slow = tlsConnect({ port: server.ports.https!, host: "127.0.0.1", rejectUnauthorized: false });
    await new Promise<void>((resolve) => slow.once("secureConnect", () => resolve()));
    let answer = "";
    slow.setEncoding("utf8");
    slow.on("data", (d: string) => { answer += d; });
    const closed = new Promise<void>((resolve) => slow.once("close", () => resolve()));
    slow.write(`POST /http-bind HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\nContent-Length: 1000\r\n\r\n<body rid='1'`);
    await closed;
    assert.match(answer.split("\r\n")[0]!, /^HTTP\/1\.1 408 /);
    const still = await b.send(ping("after-limits"));
    assert.ok(payloads(still.body).some((e) => e.attrs.id === "after-limits"), "the other session still works");
    await b.send("", { type: "terminate" });
  });

  it("CORS: an allowed origin gets its preflight and its headers; a foreign one is refused; the server's own origin is allowed", async () => {
    const preflight = await post(server.ports.https!, "", { method: "OPTIONS", headers: { Origin: "https://web.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type" } });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers["access-control-allow-origin"], "https://web.example");
    assert.match(String(preflight.headers["access-control-allow-methods"]), /POST/);
    assert.match(String(preflight.headers["access-control-allow-headers"]), /Content-Type/i);
    const allowed = await post(server.ports.https!, bodyOf({ rid: 77, to: "localhost", wait: 5, hold: 1, ver: "1.11" }), { headers: { Origin: "https://web.example" } });
    assert.equal(allowed.headers["access-control-allow-origin"], "https://web.example");
    assert.ok(allowed.body?.attrs.sid);
    await post(server.ports.https!, bodyOf({ rid: 78, sid: allowed.body!.attrs.sid!, type: "terminate" }));
    const foreign = await post(server.ports.https!, bodyOf({ rid: 79, to: "localhost", wait: 5, hold: 1, ver: "1.11" }), { headers: { Origin: "https://evil.example" } });
    assert.equal(foreign.status, 403);
    assert.equal(foreign.headers["access-control-allow-origin"], undefined);
    const own = await post(server.ports.https!, bodyOf({ rid: 80, to: "localhost", wait: 5, hold: 1, ver: "1.11" }), { headers: { Origin: `https://localhost:${server.ports.https}` } });
    assert.equal(own.status, 200);
    // DNS rebinding: a hostile name pointed at us; its page's origin matches the Host it sends.
    const rebound = await post(server.ports.https!, bodyOf({ rid: 82, to: "localhost", wait: 5, hold: 1, ver: "1.11" }), { headers: { Origin: "https://rebound.example", Host: "rebound.example" } });
    assert.equal(rebound.status, 403);
    await post(server.ports.https!, bodyOf({ rid: 81, sid: own.body!.attrs.sid!, type: "terminate" }));
  });

  it("X-Forwarded-For is believed from a trusted proxy only (plain HTTP listener behind a proxy)", async () => {
    const viaProxy = new RawBosh(server.ports.http!, false);
    const post_ = viaProxy.post.bind(viaProxy);
    viaProxy.post = (body, headers = {}) => post_(body, { "X-Forwarded-For": "198.51.100.7, 127.0.0.1", "X-Forwarded-Proto": "https", ...headers });
    await viaProxy.login("alice", "pw", "proxied");
    assert.equal(server.sessions.get("alice@localhost/proxied")?.remoteAddress, "198.51.100.7");
    await viaProxy.send("", { type: "terminate" });

    // From 127.0.0.2, which is no trusted proxy, both headers are ignored: the request came over
    // plain HTTP, so the stream is not secure and PLAIN is refused (RFC 6120 §6.4.7 encryption-required).
    const claims = { "X-Forwarded-For": "198.51.100.8", "X-Forwarded-Proto": "https" };
    const direct = await post(server.ports.http!, bodyOf({ rid: 90, to: "localhost", wait: 5, hold: 1, ver: "1.11", "xmpp:version": "1.0", "xmlns:xmpp": NS_XBOSH }), { tls: false, localAddress: "127.0.0.2", headers: claims });
    const sid = direct.body!.attrs.sid!;
    const mechanisms = payloads(direct.body).find((e) => e.name === "stream:features")?.getChild("mechanisms")?.getChildren("mechanism").map((m) => m.text()) ?? [];
    assert.ok(mechanisms.length > 0 && !mechanisms.includes("PLAIN"), `mechanisms offered: ${mechanisms.join(" ")}`);
    const auth = await post(server.ports.http!, bodyOf({ rid: 91, sid }, plainAuth("alice")), { tls: false, localAddress: "127.0.0.2", headers: claims });
    const failure = payloads(auth.body)[0];
    assert.equal(failure?.name, "failure");
    assert.ok(failure.getChild("encryption-required"), failure.toString());
    await post(server.ports.http!, bodyOf({ rid: 92, sid, type: "terminate" }), { tls: false, localAddress: "127.0.0.2" });
  });

  it("a session begun over HTTPS is not continued over plain HTTP (XEP-0124 §16): the connection is closed, the session lives on", async () => {
    const b = new RawBosh(server.ports.https!);
    await b.create();
    const insecure = await post(server.ports.http!, bodyOf({ rid: b.rid, sid: b.sid }, plainAuth("alice")), { tls: false, localAddress: "127.0.0.2" }).catch((e: Error) => e);
    assert.ok(insecure instanceof Error, "no answer over the plain connection");
    const auth = await b.send(plainAuth("alice"));
    assert.equal(payloads(auth.body)[0]?.name, "success");
    await b.send("", { type: "terminate" });
  });
});

describe("BOSH sessions, stream management and the shared admission", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({
      listen: { address: "127.0.0.1", c2s: 0, c2sDirectTls: 0, https: 0, http: null },
      bosh: { inactivitySeconds: 2 },
      limits: { maxConnectionsPerAddress: 4 },
      streamManagement: { resumeTimeoutSeconds: 60 },
    });
    for (const u of ["alice", "bob", "carol"]) await server.accounts.create(`${u}@localhost`, "pw");
  });
  after(async () => {
    closeXhrConnections();
    await server.cleanup();
  });

  it("concurrent sessions per address go through the shared admission: over the limit → policy-violation", async () => {
    const open: RawBosh[] = [];
    const polls: Array<Promise<unknown>> = [];
    // The first test of this server: the four slots of this address are free. Each session keeps
    // a request held, so that 'inactivity' (2 s here) does not end it meanwhile.
    for (let i = 0; i < 4; i++) {
      const b = new RawBosh(server.ports.https!);
      const r = await b.create();
      assert.ok(r.body?.attrs.sid, `session ${i + 1} is admitted`);
      polls.push(b.send());
      open.push(b);
    }
    const fifth = await new RawBosh(server.ports.https!).create();
    assert.equal(fifth.body?.attrs.type, "terminate");
    assert.equal(fifth.body?.attrs.condition, "policy-violation");
    await open.pop()!.send("", { type: "terminate" });
    const again = await new RawBosh(server.ports.https!).create();
    assert.ok(again.body?.attrs.sid, "a slot freed by a terminated session is available again");
    for (const b of open) await b.send("", { type: "terminate" });
    await Promise.all(polls);
  });

  it("Strophe.js enables XEP-0198 over BOSH; when it stops making requests the session hibernates, and a new BOSH connection resumes it", async () => {
    const url = `https://127.0.0.1:${server.ports.https}/http-bind`;
    const alice = await stropheConnect({ url, jid: "alice@localhost/phone", password: "pw" });
    let inbound = 0;
    alice.conn.addHandler(() => { inbound++; return true; }, null as never, "message");
    // Answer the server's <r/> with the count of stanzas handled, as an SM client does.
    alice.conn.addHandler(() => { alice.conn.send($build("a", { xmlns: SM, h: String(inbound) }).tree()); return true; }, SM, "r");
    let smId = "";
    alice.conn.addHandler((e: globalThis.Element) => { smId = e.getAttribute("id") ?? ""; return false; }, SM, "enabled");
    alice.conn.send($build("enable", { xmlns: SM, resume: "true" }).tree());
    await until(() => smId !== "", "<enabled/> arrives");

    const bob = await connect({ port: server.ports.c2sDirectTls!, username: "bob", password: "pw", directTls: true, resource: "tcp" });
    await bob.xmpp.send(xml("message", { to: "alice@localhost/phone", type: "chat", id: "before" }, xml("body", {}, "one")));
    await alice.waitFor((e) => e.getAttribute("id") === "before");
    // The network goes away: Strophe makes no more requests. After 'inactivity' the transport is
    // lost, not closed, so the resumable session waits.
    alice.drop();
    await until(() => server.sessions.get("alice@localhost/phone")?.hibernating === true, "the session hibernates");
    await bob.xmpp.send(xml("message", { to: "alice@localhost/phone", type: "chat", id: "while-away" }, xml("body", {}, "two")));
    await sleep(200);

    const back = await stropheConnect({ url, jid: "alice@localhost", password: "pw", explicitResourceBinding: true });
    const ok = await back.resume(smId, inbound);
    assert.equal(ok.getAttribute("previd"), smId);
    const missed = await back.waitFor((e) => e.getAttribute("id") === "while-away");
    assert.equal(childText(missed, "body"), "two");
    assert.ok(!back.inbox.some((e) => e.getAttribute("id") === "before"), "what was acknowledged is not sent again");
    assert.equal(server.sessions.get("alice@localhost/phone")?.hibernating, false);
    await back.disconnect();
    await bob.stop();
  });

  it("across transports: a session started over BOSH is resumed over TCP with its unacknowledged stanzas", async () => {
    const b = new RawBosh(server.ports.https!);
    await b.login("carol", "pw", "web");
    const enabled = payloads((await b.send(`<enable xmlns='${SM}' resume='true'/>`)).body).find((e) => e.name === "enabled");
    assert.equal(enabled?.attrs.resume, "true");
    // A request held meanwhile keeps the session active ('inactivity' is 2 s on this server).
    const poll = b.send();
    const bob = await connect({ port: server.ports.c2sDirectTls!, username: "bob", password: "pw", directTls: true, resource: "tcp2" });
    await bob.xmpp.send(xml("message", { to: "carol@localhost/web", type: "chat", id: "x1" }, xml("body", {}, "unacked")));
    const got = await poll;
    assert.ok(payloads(got.body).some((e) => e.attrs.id === "x1"));
    // No acknowledgement, no further request: after 'inactivity' the BOSH transport is lost.
    await until(() => server.sessions.get("carol@localhost/web")?.hibernating === true, "the BOSH session hibernates");

    const tcp = await openStream(server.ports.c2sDirectTls!);
    const mark = tcp.elements.length;
    tcp.send(plainAuth("carol"));
    await tcp.waitForElement((e) => e.is("success", "urn:ietf:params:xml:ns:xmpp-sasl"), 5000, mark);
    tcp.restartParser();
    tcp.send(header());
    await tcp.waitForElement((e) => e.name === "stream:features", 5000, tcp.elements.length);
    const from = tcp.elements.length;
    tcp.send(`<resume xmlns='${SM}' previd='${enabled!.attrs.id}' h='0'/>`);
    const resumed = await tcp.waitForElement((e) => e.name === "resumed", 5000, from);
    assert.equal(resumed.attrs.previd, enabled!.attrs.id);
    const again = await tcp.waitForElement((e) => e.name === "message" && e.attrs.id === "x1", 5000, from);
    assert.equal(again.getChildText("body"), "unacked");
    assert.equal((server.sessions.get("carol@localhost/web") as unknown as { transport: string }).transport, "tcp");
    tcp.close();
    await bob.stop();
  });

  it("server shutdown: a held request gets the system-shutdown stream error", async () => {
    const b = new RawBosh(server.ports.https!);
    await b.login("bob", "pw", "last");
    const held = b.send();
    await until(() => server.bosh!.openRequests(b.sid) === 1, "the request is held");
    const stopping = server.stop();
    const answer = await held;
    assert.equal(streamErrorOf(answer.body), "system-shutdown");
    await stopping;
  });
});

