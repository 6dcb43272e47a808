/**
 * Modern login (issue 18): XEP-0388 SASL2, XEP-0386 Bind 2, XEP-0198 inline resumption and
 * XEP-0484 FAST — with xmpp.js as the independent client, and raw sockets for exact errors.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac, randomUUID } from "node:crypto";
import type { TLSSocket } from "node:tls";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { RawClient, header, openStream } from "../helpers/raw.js";
import { connect, xml } from "../helpers/xmpp-client.js";
import type { Element } from "@xmpp/xml";

const SASL2 = "urn:xmpp:sasl:2";
const BIND2 = "urn:xmpp:bind:0";
const FAST = "urn:xmpp:fast:0";
const SM = "urn:xmpp:sm:3";
const SASL = "urn:ietf:params:xml:ns:xmpp-sasl";
const STREAMS = "http://etherx.jabber.org/streams";

const b64 = (s: string | Buffer) => Buffer.from(s).toString("base64");
const conditionOf = (failure: Element) => failure.children.find((c): c is Element => typeof c !== "string" && c.getNS() === SASL)?.name;

interface Login {
  user: string;
  password?: string;
  agent?: string;
  /** Extra children of <authenticate/>. */
  extra?: string;
  mechanism?: string;
  initial?: Buffer;
}

/** One SASL2 <authenticate/> on a fresh direct-TLS stream; returns the stream and the server's answer. */
async function authenticate(server: TestServer, login: Login): Promise<{ c: RawClient; answer: Element }> {
  const c = await openStream(server.ports.c2sDirectTls!);
  const from = c.elements.length;
  const mechanism = login.mechanism ?? "PLAIN";
  const initial = login.initial ?? Buffer.from(`\0${login.user}\0${login.password}`);
  const agent = login.agent === undefined ? "" : `<user-agent id='${login.agent}'><software>test</software><device>box</device></user-agent>`;
  c.send(`<authenticate xmlns='${SASL2}' mechanism='${mechanism}'><initial-response>${b64(initial)}</initial-response>${agent}${login.extra ?? ""}</authenticate>`);
  const answer = await c.waitForElement((e) => e.getNS() === SASL2 && ["success", "failure", "challenge", "continue"].includes(e.name), 5000, from);
  return { c, answer };
}

/** The HT-SHA-256 initial response (draft-schmaus-kitten-sasl-ht §3) for a token and channel-binding data. */
function htInitial(user: string, token: string, cb: Buffer = Buffer.alloc(0)): Buffer {
  const proof = createHmac("sha256", Buffer.from(token)).update(Buffer.concat([Buffer.from("Initiator"), cb])).digest();
  return Buffer.concat([Buffer.from(user), Buffer.from([0]), proof]);
}

/** Logs in with a password and asks for a FAST token; returns the token. */
async function tokenFor(server: TestServer, user: string, agent: string, mechanism = "HT-SHA-256-NONE"): Promise<string> {
  const { c, answer } = await authenticate(server, { user, password: "pw", agent, extra: `<request-token xmlns='${FAST}' mechanism='${mechanism}'/>` });
  assert.equal(answer.name, "success");
  const token = answer.getChild("token", FAST);
  assert.ok(token, "a token was issued");
  c.close();
  return token.attrs.token as string;
}

describe("SASL2, Bind 2 and FAST", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
    for (const u of ["alice", "bob", "carol", "dave", "erin", "frank"]) await server.accounts.create(`${u}@localhost`, "pw");
  });
  after(() => server.cleanup());

  it("advertises SASL2 with Bind 2 (and its inline features), FAST and inline resumption after TLS", async () => {
    const c = await RawClient.open(server.ports.c2sDirectTls!, true);
    c.send(header());
    const features = await c.waitForElement((e) => e.is("features", STREAMS));
    const auth = features.getChild("authentication", SASL2);
    assert.ok(auth);
    assert.ok(auth.getChildren("mechanism").map((m) => m.text()).includes("SCRAM-SHA-256-PLUS"));
    const inline = auth.getChild("inline")!;
    const bindFeatures = inline.getChild("bind", BIND2)!.getChild("inline")!.getChildren("feature").map((f) => f.attrs.var);
    assert.deepEqual(bindFeatures.sort(), ["urn:xmpp:carbons:2", "urn:xmpp:csi:0", SM].sort());
    assert.deepEqual(inline.getChild("fast", FAST)!.getChildren("mechanism").map((m) => m.text()), ["HT-SHA-256-ENDP", "HT-SHA-256-EXPR", "HT-SHA-256-NONE"]);
    assert.ok(inline.getChild("sm", SM));
    c.close();
  });

  it("xmpp.js logs in with SASL2 + Bind 2, gets a FAST token, and its next login uses the token", async () => {
    // Over STARTTLS: on direct TLS xmpp.js 0.14 can miss our stream header when it arrives before
    // its own write callback, and with SASL2 no stream restart comes to rescue it (seen here).
    const x = await connect({ port: server.ports.c2s!, username: "alice", password: "pw", resource: "laptop", sasl2: true });
    const sent: Element[] = [];
    (x.xmpp as unknown as NodeJS.EventEmitter).on("send", (e: Element) => sent.push(e));
    assert.match(x.jid, /^alice@localhost\/laptop\/[A-Za-z0-9_-]{12}$/, "Bind 2: the tag, then a stable id");
    const session = server.sessions.get(x.jid);
    assert.ok(session, "bound in one round trip, no RFC 6120 bind");
    const fast = (x.xmpp as unknown as { fast: { fetch(): Promise<{ token: string; mechanism: string } | null> } }).fast;
    const token = await fast.fetch();
    assert.ok(token?.token && token.mechanism.startsWith("HT-SHA-256-"), "xmpp.js kept the token it was given");
    await x.xmpp.stop();
    await x.xmpp.start();
    const fastLogin = sent.find((e) => e.is("authenticate", SASL2));
    assert.equal(fastLogin?.attrs.mechanism, token.mechanism, "the second login used FAST");
    assert.ok(fastLogin?.getChild("fast", FAST));
    assert.ok(server.sessions.get(x.jid), "the same device gets the same resource again");
    const pong = await x.iq(xml("iq", { type: "get", to: "localhost" }, xml("ping", { xmlns: "urn:xmpp:ping" })));
    assert.equal(pong.attrs.type, "result");
    await x.stop();
  });

  it("Bind 2 enables stream management inline; unknown inline features are ignored", async () => {
    const agent = randomUUID();
    const { c, answer } = await authenticate(server, { user: "bob", password: "pw", agent,
      extra: `<bind xmlns='${BIND2}'><tag>phone</tag><enable xmlns='${SM}' resume='true'/><enable xmlns='urn:xmpp:carbons:2'/><frobnicate xmlns='urn:example:unknown'/></bind>` });
    assert.equal(answer.name, "success");
    const identity = answer.getChildText("authorization-identifier")!;
    assert.match(identity, /^bob@localhost\/phone\//);
    const bound = answer.getChild("bound", BIND2)!;
    assert.ok(bound.getChild("enabled", SM)?.attrs.id, "<enabled/> inside <bound/>");
    assert.equal(bound.children.length, 1, "nothing for the unknown feature");
    await c.waitForElement((e) => e.is("features", STREAMS), 5000, c.elements.indexOf(answer));
    c.send("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
    const pong = await c.waitForElement((e) => e.attrs.id === "p");
    assert.equal(pong.attrs.type, "result");
    c.close();
  });

  it("resumption inline in SASL2: one round trip, the missed stanzas follow <success/>", async () => {
    const agent = randomUUID();
    const first = await authenticate(server, { user: "carol", password: "pw", agent,
      extra: `<bind xmlns='${BIND2}'><tag>phone</tag><enable xmlns='${SM}' resume='true'/></bind>` });
    const full = first.answer.getChildText("authorization-identifier")!;
    const previd = first.answer.getChild("bound", BIND2)!.getChild("enabled", SM)!.attrs.id as string;
    first.c.socket.destroy();
    while (!server.sessions.get(full)?.hibernating) await new Promise((r) => setTimeout(r, 20));
    const sender = await connect({ port: server.ports.c2s!, username: "dave", password: "pw" });
    await sender.xmpp.send(xml("message", { to: full, type: "chat", id: "missed" }, xml("body", {}, "while away")));
    await new Promise((r) => setTimeout(r, 200));
    const { c, answer } = await authenticate(server, { user: "carol", password: "pw", agent, extra: `<resume xmlns='${SM}' previd='${previd}' h='0'/>` });
    assert.equal(answer.name, "success");
    assert.equal(answer.getChildText("authorization-identifier"), full, "the resumed session's full JID");
    assert.ok(answer.getChild("resumed", SM));
    const missed = await c.waitForElement((e) => e.is("message") && e.attrs.id === "missed", 5000, c.elements.indexOf(answer));
    assert.ok(c.elements.indexOf(missed) > c.elements.indexOf(answer));
    c.close();
    await sender.stop();
  });

  it("a failed inline resumption says so and binds a new session", async () => {
    const { c, answer } = await authenticate(server, { user: "carol", password: "pw", agent: randomUUID(),
      extra: `<resume xmlns='${SM}' previd='nosuchsession' h='0'/><bind xmlns='${BIND2}'/>` });
    assert.equal(answer.name, "success");
    assert.ok(answer.getChild("failed", SM)?.getChild("item-not-found", "urn:ietf:params:xml:ns:xmpp-stanzas"));
    assert.ok(answer.getChild("bound", BIND2));
    c.close();
  });

  it("FAST: a token works once per count, not with another mechanism, nor after invalidation", async () => {
    const agent = randomUUID();
    const token = await tokenFor(server, "erin", agent);
    const ok = await authenticate(server, { user: "erin", agent, mechanism: "HT-SHA-256-NONE", initial: htInitial("erin", token), extra: `<fast xmlns='${FAST}' count='1'/>` });
    assert.equal(ok.answer.name, "success");
    const responder = createHmac("sha256", Buffer.from(token)).update("Responder").digest();
    assert.deepEqual(Buffer.from(ok.answer.getChildText("additional-data")!, "base64"), responder, "the server proves it knows the token");
    ok.c.close();
    // The same count again is a replay.
    const replay = await authenticate(server, { user: "erin", agent, mechanism: "HT-SHA-256-NONE", initial: htInitial("erin", token), extra: `<fast xmlns='${FAST}' count='1'/>` });
    assert.equal(replay.answer.name, "failure");
    assert.equal(conditionOf(replay.answer), "not-authorized");
    replay.c.close();
    // Bound to the mechanism it was issued for (XEP-0484 §4.4).
    const other = await authenticate(server, { user: "erin", agent, mechanism: "HT-SHA-256-EXPR", initial: htInitial("erin", token, Buffer.alloc(32)), extra: `<fast xmlns='${FAST}'/>` });
    assert.equal(conditionOf(other.answer), "not-authorized");
    other.c.close();
    // Logging out with it (§4.6) ends it.
    const logout = await authenticate(server, { user: "erin", agent, mechanism: "HT-SHA-256-NONE", initial: htInitial("erin", token), extra: `<fast xmlns='${FAST}' count='2' invalidate='true'/>` });
    assert.equal(logout.answer.name, "success");
    assert.equal(logout.answer.getChild("token", FAST), undefined, "no new token on invalidation");
    logout.c.close();
    const after = await authenticate(server, { user: "erin", agent, mechanism: "HT-SHA-256-NONE", initial: htInitial("erin", token), extra: `<fast xmlns='${FAST}' count='3'/>` });
    assert.equal(conditionOf(after.answer), "not-authorized");
    after.c.close();
  });

  it("FAST with channel binding: -EXPR needs this connection's tls-exporter data", async () => {
    const agent = randomUUID();
    const token = await tokenFor(server, "frank", agent, "HT-SHA-256-EXPR");
    const c = await openStream(server.ports.c2sDirectTls!);
    const tls = c.socket as TLSSocket;
    const cb = (tls.exportKeyingMaterial as (n: number, l: string) => Buffer)(32, "EXPORTER-Channel-Binding");
    const wrong = await authenticate(server, { user: "frank", agent, mechanism: "HT-SHA-256-EXPR", initial: htInitial("frank", token, Buffer.alloc(32, 7)), extra: `<fast xmlns='${FAST}'/>` });
    assert.equal(conditionOf(wrong.answer), "not-authorized", "another connection's binding does not match");
    wrong.c.close();
    const from = c.elements.length;
    c.send(`<authenticate xmlns='${SASL2}' mechanism='HT-SHA-256-EXPR'><initial-response>${b64(htInitial("frank", token, cb))}</initial-response><user-agent id='${agent}'/><fast xmlns='${FAST}'/></authenticate>`);
    const answer = await c.waitForElement((e) => e.getNS() === SASL2 && (e.name === "success" || e.name === "failure"), 5000, from);
    assert.equal(answer.name, "success");
    c.close();
  });

  it("a password change ends every FAST token; the answer for an unknown account is the same", async () => {
    const agent = randomUUID();
    const token = await tokenFor(server, "dave", agent);
    await server.accounts.setPassword("dave@localhost", "new password");
    const stale = await authenticate(server, { user: "dave", agent, mechanism: "HT-SHA-256-NONE", initial: htInitial("dave", token), extra: `<fast xmlns='${FAST}'/>` });
    assert.equal(conditionOf(stale.answer), "not-authorized");
    stale.c.close();
    const ghost = await authenticate(server, { user: "ghost", agent, mechanism: "HT-SHA-256-NONE", initial: htInitial("ghost", token), extra: `<fast xmlns='${FAST}'/>` });
    assert.equal(ghost.answer.toString().replace(/\s/g, ""), stale.answer.toString().replace(/\s/g, ""), "nothing tells the two apart");
    ghost.c.close();
  });

  it("a user-agent id that is not a UUID, and SASL2 before TLS, get the XEP's answers", async () => {
    const { c, answer } = await authenticate(server, { user: "alice", password: "pw", agent: "my-phone" });
    assert.equal(answer.name, "failure");
    assert.equal(conditionOf(answer), "malformed-request");
    c.close();
    const plain = await RawClient.open(server.ports.c2s!, false);
    plain.send(header());
    await plain.waitForElement((e) => e.is("features", STREAMS));
    const from = plain.elements.length;
    plain.send(`<authenticate xmlns='${SASL2}' mechanism='PLAIN'><initial-response>${b64("\0alice\0pw")}</initial-response></authenticate>`);
    const refused = await plain.waitForElement((e) => e.is("failure", SASL2), 5000, from);
    assert.equal(conditionOf(refused), "encryption-required");
    plain.close();
  });

  it("the user lists the devices of the account and logs one out: its session ends and its token stops working", async () => {
    const COMMANDS = "http://jabber.org/protocol/commands";
    const NODE = "urn:parley:devices";
    const agent = randomUUID();
    const token = await tokenFor(server, "bob", agent);
    const phone = await authenticate(server, { user: "bob", agent, mechanism: "HT-SHA-256-NONE", initial: htInitial("bob", token), extra: `<fast xmlns='${FAST}'/><bind xmlns='${BIND2}'><tag>phone</tag></bind>` });
    assert.equal(phone.answer.name, "success");
    const laptop = await connect({ port: server.ports.c2s!, username: "bob", password: "pw", resource: "laptop" });
    const started = await laptop.iq(xml("iq", { type: "set", to: "localhost" }, xml("command", { xmlns: COMMANDS, node: NODE, action: "execute" })));
    const command = started.getChild("command", COMMANDS)!;
    const options = command.getChild("x", "jabber:x:data")!.getChildren("field").find((f) => f.attrs.var === "revoke")!.getChildren("option");
    const mine = options.find((o) => o.getChildText("value") === agent);
    assert.ok(mine, "the phone is listed");
    assert.match(mine.attrs.label as string, /^test on box — online, fast login until /);
    const done = await laptop.iq(xml("iq", { type: "set", to: "localhost" }, xml("command", { xmlns: COMMANDS, node: NODE, sessionid: command.attrs.sessionid, action: "complete" },
      xml("x", { xmlns: "jabber:x:data", type: "submit" }, xml("field", { var: "FORM_TYPE", type: "hidden" }, xml("value", {}, NODE)), xml("field", { var: "revoke" }, xml("value", {}, agent))))));
    assert.equal(done.getChild("command", COMMANDS)!.attrs.status, "completed");
    await phone.c.closed;
    const again = await authenticate(server, { user: "bob", agent, mechanism: "HT-SHA-256-NONE", initial: htInitial("bob", token), extra: `<fast xmlns='${FAST}'/>` });
    assert.equal(conditionOf(again.answer), "not-authorized");
    again.c.close();
    assert.deepEqual(await server.storage.devices.list("bob@localhost").then((l) => l.map((d) => d.id).filter((id) => id === agent)), []);
    await laptop.stop();
  });
});
