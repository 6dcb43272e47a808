/**
 * Federation between two Parley servers on loopback (RFC 6120 server-to-server): static routes on
 * free ports, a DNS server that answers nothing, certificates from a throwaway CA (SASL EXTERNAL)
 * or self-signed ones (XEP-0220 dialback). Hostile peers talk over raw sockets.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";
import { RawClient } from "../helpers/raw.js";
import { LossyRelay, freePort, makePki, pem, startParleyPair, type Pki } from "../helpers/s2s.js";
import { rawSession } from "../helpers/raw.js";
import { parseElement } from "../../src/xmpp/xml-parse.js";
import type { Element } from "@xmpp/xml";
import { spawn, spawnSync, execFile, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Agent, request } from "undici";
import { createServer as createTlsServer } from "node:tls";
import Database from "better-sqlite3";

const openssl = spawnSync("openssl", ["version"]).status === 0;
if (!openssl) console.log("# SKIPPED e2e/s2s SASL EXTERNAL suite: the openssl command (for the test CA) is not installed");

const NS_STREAMS = "http://etherx.jabber.org/streams";
const NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams";
const NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_ROSTER = "jabber:iq:roster";
const NS_SM = "urn:xmpp:sm:3";
const BIN = join(process.cwd(), "bin", "parley");

/** A Parley in a child process (so that it can be killed with SIGKILL), up once it logged "Parley started". */
async function startChild(config: string): Promise<ChildProcess> {
  const child = spawn(BIN, ["start", "--config", config], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { child.kill("SIGKILL"); reject(new Error(`server did not start: ${out}`)); }, 60_000);
    child.stdout!.on("data", (d) => {
      out += d;
      if (out.includes('"msg":"Parley started"')) { clearTimeout(timer); resolve(); }
    });
    child.once("exit", (code) => reject(new Error(`server exited with ${code}: ${out}`)));
  });
  return child;
}

const s2sHeader = (to: string, from?: string) =>
  `<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='${NS_STREAMS}' xmlns:db='jabber:server:dialback' to='${to}'${from ? ` from='${from}'` : ""} version='1.0'>`;

/** Polls `condition` until it holds (a state change of the server that no stanza announces). */
async function until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 15_000): Promise<void> {
  for (const end = Date.now() + timeoutMs; !(await condition());) {
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const streamErrorOf = (e: Element) => e.children.find((c): c is Element => typeof c !== "string" && c.attrs.xmlns === NS_STREAM_ERRORS && c.name !== "text")?.name;
/** The peer's stream ends with this stream error condition, and the connection closes. */
async function streamEnds(raw: RawClient, condition: string): Promise<void> {
  const error = await raw.waitForElement((e) => e.is("error", NS_STREAMS));
  assert.equal(streamErrorOf(error), condition);
  await raw.closed;
}

interface Pair { a: TestServer; b: TestServer; ports: { a: number; b: number; late: number } }

/** A raw s2s stream to `port` up to the features after STARTTLS (with the TLS options given). */
async function rawS2S(port: number, to: string, from: string, tls: Parameters<RawClient["startTls"]>[0] = {}): Promise<{ raw: RawClient; features: Element }> {
  const raw = await RawClient.open(port, false);
  raw.send(s2sHeader(to, from));
  await raw.waitForElement((e) => e.is("features", NS_STREAMS));
  await raw.startTls({ servername: to, ...tls });
  const mark = raw.elements.length;
  raw.send(s2sHeader(to, from));
  return { raw, features: await raw.waitForElement((e) => e.is("features", NS_STREAMS), 5000, mark) };
}

interface PairOptions {
  /** Both servers listen with TLS from the first byte (XEP-0368). */
  directTls?: boolean;
  /** Where a.test sends what is for b.test, when not straight to b.test's port. */
  aToB?: number;
  /** s2s.streamManagement of both (XEP-0198 between them). */
  streamManagement?: boolean;
  /** s2s.maxQueuedStanzas of both. */
  maxQueued?: number;
  /** s2s.bidi of both (XEP-0288: one connection both ways). */
  bidi?: boolean;
}

/** Two servers, a.test and b.test, routed to each other; `pki` gives them CA-signed certificates, trusted. */
async function startPair(pki: Pki | undefined, { directTls = false, aToB, streamManagement = true, maxQueued = 1000, bidi = true }: PairOptions = {}): Promise<Pair> {
  const [portA, portB, noDns, down, late] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()]);
  const start = (host: string, port: number, peer: string, peerPort: number) => startTestServer({
    hosts: [host],
    // Direct TLS (XEP-0368): the pre-allocated port speaks TLS from the first byte, and the routes say so.
    listen: { address: "127.0.0.1", c2s: 0, c2sDirectTls: null, https: 0, http: null, ...(directTls ? { s2s: 0, s2sDirectTls: port } : { s2s: port }) },
    admins: [`admin@${host}`],
    ...(pki ? { tls: { certificates: { [host]: pki.files[host]! } } } : {}),
    // Lookups for any other domain go to a port where no DNS server answers: they fail at once.
    // Without a CA of their own they trust the bundled roots, which signed neither self-signed certificate.
    s2s: { caFiles: pki ? [pki.caFile] : [], routes: { [peer]: `${directTls ? "xmpps://" : ""}127.0.0.1:${peerPort}`, [`conference.${peer}`]: `127.0.0.1:${peerPort}`, "down.test": `127.0.0.1:${down}`, "late.test": `127.0.0.1:${late}` }, dnsServer: `127.0.0.1:${noDns}`, queueTimeoutSeconds: 10,
      authTimeoutSeconds: 2, maxStanzaBytes: 20_000, blockedDomains: ["blocked.test"], maxConnectionsPerAddress: 4, maxStanzasPerSecond: 100, floodSeconds: 1, streamManagement, maxQueuedStanzas: maxQueued, bidi },
  });
  const [a, b] = await Promise.all([start("a.test", portA, "b.test", aToB ?? portB), start("b.test", portB, "a.test", portA)]);
  await a.accounts.create("alice@a.test", "pw");
  await b.accounts.create("bob@b.test", "pw");
  return { a, b, ports: { a: portA, b: portB, late } };
}

async function login(server: TestServer, user: string, domain: string): Promise<Connected> {
  const c = await connect({ port: server.ports.c2s!, domain, username: user, password: "pw", resource: "r" });
  // Roster first (RFC 6121 §2.1.6: an interested resource), then initial presence.
  await c.iq(xml("iq", { type: "get" }, xml("query", { xmlns: NS_ROSTER })));
  await c.xmpp.send(xml("presence"));
  return c;
}

async function chatBothWays(alice: Connected, bob: Connected, tag: string): Promise<void> {
  await alice.xmpp.send(xml("message", { to: "bob@b.test", type: "chat", id: `${tag}-1` }, xml("body", {}, "hello from a")));
  const got = await bob.waitFor((s) => s.is("message") && s.attrs.id === `${tag}-1`, 10_000);
  assert.equal(got.attrs.from, "alice@a.test/r");
  assert.equal(got.attrs.to, "bob@b.test");
  assert.equal(got.getChildText("body"), "hello from a");
  await bob.xmpp.send(xml("message", { to: "alice@a.test/r", type: "chat", id: `${tag}-2` }, xml("body", {}, "hello from b")));
  const back = await alice.waitFor((s) => s.is("message") && s.attrs.id === `${tag}-2`, 10_000);
  assert.equal(back.attrs.from, "bob@b.test/r");
  assert.equal(back.getChildText("body"), "hello from b");
}


/** Two Parleys started by `start`, with alice on a.test and bob on b.test, for the tests of one suite. */
function pairWithUsers(start: () => Promise<Pair>): { pair: Pair; alice: Connected; bob: Connected } {
  const f = {} as { pair: Pair; alice: Connected; bob: Connected };
  before(async () => {
    f.pair = await start();
    f.alice = await login(f.pair.a, "alice", "a.test");
    f.bob = await login(f.pair.b, "bob", "b.test");
  });
  after(async () => {
    await f.alice?.stop();
    await f.bob?.stop();
    await f.pair?.a.cleanup();
    await f.pair?.b.cleanup();
  });
  return f;
}
// Without XEP-0288: each server opens a stream of its own (the status page and the CLI list both directions).
describe("s2s between two Parleys, certificates that verify (SASL EXTERNAL)", { skip: openssl ? false : "openssl is not installed" }, () => {
  let pki!: Pki;
  const f = pairWithUsers(() => startPair(pki = makePki(["a.test", "b.test", "evil.test", "late.test"]), { bidi: false }));
  /** A raw stream from evil.test into b.test, authenticated with SASL EXTERNAL and restarted; `mark` is where its stream begins. */
  const evilAuthenticated = async () => {
    const { raw } = await rawS2S(f.pair.b.ports.s2s!, "b.test", "evil.test", { cert: pem(pki.files["evil.test"]!.cert), key: pem(pki.files["evil.test"]!.key) });
    raw.send(`<auth xmlns='${NS_SASL}' mechanism='EXTERNAL'>=</auth>`);
    await raw.waitForElement((e) => e.is("success", NS_SASL));
    raw.restartParser();
    const mark = raw.elements.length;
    raw.send(s2sHeader("b.test", "evil.test"));
    await raw.waitForElement((e) => e.is("features", NS_STREAMS), 5000, mark);
    return { raw, mark };
  };

  it("chat both ways; both streams authenticate with SASL EXTERNAL", async () => {
    await chatBothWays(f.alice, f.bob, "ext");
    assert.deepEqual(f.pair.a.s2s().outgoing.map((o) => [o.remote, o.state, o.method]), [["b.test", "ready", "sasl-external"]]);
    assert.deepEqual(f.pair.b.s2s().outgoing.map((o) => [o.remote, o.state, o.method]), [["a.test", "ready", "sasl-external"]]);
    assert.deepEqual(f.pair.b.s2s().incoming.flatMap((i) => i.domains), [{ domain: "a.test", method: "sasl-external" }]);
  });

  it("the web admin's status page lists the s2s streams and how they authenticated", async () => {
    await f.pair.a.accounts.create("admin@a.test", "admin-pw");
    const dispatcher = new Agent({ connect: { rejectUnauthorized: false } });
    const base = `https://127.0.0.1:${f.pair.a.ports.https}/admin`;
    const get = (path: string, cookie?: string) => request(`${base}${path}`, { dispatcher, headers: cookie ? { cookie } : {} });
    const form = await get("/login");
    const formBody = await form.body.text();
    const nonce = ([] as string[]).concat(form.headers["set-cookie"] ?? []).find((c) => c.startsWith("__Host-parley-login="))!.split(";")[0]!;
    const token = /name="token" value="([^"]*)"/.exec(formBody)![1]!;
    const posted = await request(`${base}/login`, {
      method: "POST", dispatcher, headers: { cookie: nonce, "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ token, jid: "admin@a.test", password: "admin-pw" }).toString(),
    });
    await posted.body.text();
    const session = ([] as string[]).concat(posted.headers["set-cookie"] ?? []).find((c) => c.startsWith("__Host-parley-admin="))!.split(";")[0]!;
    const page = await (await get("", session)).body.text();
    const federation = page.slice(page.indexOf("<h2>Federation</h2>"), page.indexOf("<h2>Storage</h2>"));
    assert.match(federation, /<td>outgoing<\/td><td>a\.test<\/td><td>b\.test<\/td><td>ready<\/td><td>sasl-external<\/td>/);
    assert.match(federation, /<td>incoming<\/td><td>a\.test<\/td><td>b\.test \(127\.0\.0\.1\)<\/td><td>ready<\/td><td>sasl-external<\/td>/);
    await dispatcher.close();
  });

  it("parley s2s lists the running server's streams (read from its metrics)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "parley-s2s-cli-"));
    const config = join(dir, "parley.yaml");
    writeFileSync(config, `hosts: [a.test]\ndataDir: ${dir}\nstorage: { driver: memory }\nlisten: { address: 127.0.0.1, https: ${f.pair.a.ports.https}, http: null }\n`);
    const { stdout } = await promisify(execFile)(process.execPath, ["--import", "tsx", "src/main.ts", "s2s", "--config", config]);
    const lines = stdout.trim().split("\n");
    assert.ok(lines.includes("outgoing\ta.test -> b.test\tready\tsasl-external\t1 stream"), stdout);
    assert.ok(lines.includes("incoming\ta.test <- b.test\tready\tsasl-external\t1 stream"), stdout);
  });

  it("a presence subscription across servers (RFC 6121 §3.1)", async () => {
    const pushed = f.alice.waitFor((s) => s.is("iq") && s.attrs.type === "set" && s.getChild("query", NS_ROSTER)?.getChild("item")?.attrs.subscription === "to", 10_000);
    await f.alice.xmpp.send(xml("presence", { to: "bob@b.test", type: "subscribe" }));
    const request = await f.bob.waitFor((s) => s.is("presence") && s.attrs.type === "subscribe", 10_000);
    assert.equal(request.attrs.from, "alice@a.test");
    await f.bob.xmpp.send(xml("presence", { to: "alice@a.test", type: "subscribed" }));
    const item = (await pushed).getChild("query", NS_ROSTER)!.getChild("item")!;
    assert.equal(item.attrs.jid, "bob@b.test");
    // RFC 6121 §3.1.5: once approved, the contact's presence follows.
    const presence = await f.alice.waitFor((s) => s.is("presence") && s.attrs.from === "bob@b.test/r" && s.attrs.type === undefined, 10_000);
    assert.equal(presence.attrs.to, "alice@a.test/r");
    const bobSide = await f.pair.b.storage.roster.getItem("bob@b.test", "alice@a.test");
    assert.equal(bobSide?.subscription, "from");
  });

  it("disco#info on the remote server and a remote user's vCard (IQs both ways)", async () => {
    const info = await f.alice.iq(xml("iq", { type: "get", to: "b.test" }, xml("query", { xmlns: "http://jabber.org/protocol/disco#info" })));
    assert.equal(info.attrs.from, "b.test");
    assert.ok(info.getChild("query")!.getChildren("identity").some((i) => i.attrs.category === "server"));
    await f.bob.iq(xml("iq", { type: "set" }, xml("vCard", { xmlns: "vcard-temp" }, xml("FN", {}, "Bob of B"))));
    const card = await f.alice.iq(xml("iq", { type: "get", to: "bob@b.test" }, xml("vCard", { xmlns: "vcard-temp" })));
    assert.equal(card.attrs.from, "bob@b.test");
    assert.equal(card.getChild("vCard", "vcard-temp")!.getChildText("FN"), "Bob of B");
  });

  it("a user of a.test joins a room on conference.b.test and talks (XEP-0045)", async () => {
    const room = "team@conference.b.test";
    const MUC = "http://jabber.org/protocol/muc";
    await f.bob.xmpp.send(xml("presence", { to: `${room}/bob` }, xml("x", { xmlns: MUC })));
    await f.bob.waitFor((s) => s.is("presence") && s.attrs.from === `${room}/bob`, 10_000);
    await f.bob.iq(xml("iq", { type: "set", to: room }, xml("query", { xmlns: `${MUC}#owner` }, xml("x", { xmlns: "jabber:x:data", type: "submit" }))));
    await f.alice.xmpp.send(xml("presence", { to: `${room}/alice` }, xml("x", { xmlns: MUC })));
    const self = await f.alice.waitFor((s) => s.is("presence") && s.attrs.from === `${room}/alice` && s.attrs.type === undefined, 10_000);
    assert.ok(self.getChild("x", `${MUC}#user`)!.getChildren("status").some((st) => st.attrs.code === "110"), "self-presence");
    await f.bob.waitFor((s) => s.is("presence") && s.attrs.from === `${room}/alice`, 10_000);
    await f.alice.xmpp.send(xml("message", { to: room, type: "groupchat", id: "gc" }, xml("body", {}, "hi room")));
    const got = await f.bob.waitFor((s) => s.is("message") && s.attrs.type === "groupchat" && s.attrs.from === `${room}/alice`, 10_000);
    assert.equal(got.getChildText("body"), "hi room");
    await f.alice.waitFor((s) => s.is("message") && s.attrs.type === "groupchat" && s.attrs.from === `${room}/alice` && s.getChildText("body") === "hi room", 10_000);
    // A user who joined from a.test and disconnects leaves the room on b.test (RFC 6121 §4.6).
    await f.pair.a.accounts.create("dave@a.test", "pw");
    const dave = await login(f.pair.a, "dave", "a.test");
    await dave.xmpp.send(xml("presence", { to: `${room}/dave` }, xml("x", { xmlns: MUC })));
    await f.bob.waitFor((s) => s.is("presence") && s.attrs.from === `${room}/dave` && s.attrs.type === undefined, 10_000);
    await dave.stop();
    await f.bob.waitFor((s) => s.is("presence") && s.attrs.from === `${room}/dave` && s.attrs.type === "unavailable", 10_000);
  });

  it("carbons of a remote conversation reach the user's other resource, and both sides archive it (XEP-0280, XEP-0313)", async () => {
    const CARBONS = "urn:xmpp:carbons:2";
    const MAM = "urn:xmpp:mam:2";
    const tablet = await connect({ port: f.pair.a.ports.c2s!, domain: "a.test", username: "alice", password: "pw", resource: "tablet" });
    try {
      await tablet.iq(xml("iq", { type: "set" }, xml("enable", { xmlns: CARBONS })));
      await tablet.xmpp.send(xml("presence"));
      await f.alice.xmpp.send(xml("message", { to: "bob@b.test", type: "chat", id: "carbon-out" }, xml("body", {}, "seen on the tablet")));
      const sent = await tablet.waitFor((s) => s.getChild("sent", CARBONS) !== undefined, 10_000);
      assert.equal(sent.getChild("sent", CARBONS)!.getChild("forwarded", "urn:xmpp:forward:0")!.getChild("message")!.attrs.id, "carbon-out");
      await f.bob.waitFor((s) => s.attrs.id === "carbon-out", 10_000);
      await f.bob.xmpp.send(xml("message", { to: "alice@a.test", type: "chat", id: "carbon-in" }, xml("body", {}, "to the bare JID")));
      // Both resources have the same priority: one gets the message, the other a received carbon or the message itself.
      await tablet.waitFor((s) => s.attrs.id === "carbon-in" || s.getChild("received", CARBONS)?.getChild("forwarded", "urn:xmpp:forward:0")?.getChild("message")?.attrs.id === "carbon-in", 10_000);
      const archived = async (client: Connected, withJid: string, id: string) => {
        const queryid = `q-${id}`;
        const results: string[] = [];
        const listener = (s: Element) => {
          const r = s.getChild("result", MAM);
          if (r?.attrs.queryid === queryid) results.push(r.getChild("forwarded", "urn:xmpp:forward:0")!.getChild("message")!.attrs.id);
        };
        (client.xmpp as unknown as NodeJS.EventEmitter).on("stanza", listener);
        await client.iq(xml("iq", { type: "set" }, xml("query", { xmlns: MAM, queryid },
          xml("x", { xmlns: "jabber:x:data", type: "submit" }, xml("field", { var: "FORM_TYPE", type: "hidden" }, xml("value", {}, MAM)), xml("field", { var: "with" }, xml("value", {}, withJid))))));
        (client.xmpp as unknown as NodeJS.EventEmitter).off("stanza", listener);
        assert.ok(results.includes(id), `${id} in ${results.join(",")}`);
      };
      await archived(f.alice, "bob@b.test", "carbon-out");
      await archived(f.alice, "bob@b.test", "carbon-in");
      await archived(f.bob, "alice@a.test", "carbon-out");
    } finally {
      await tablet.stop();
    }
  });

  it("a domain that cannot be resolved bounces with remote-server-not-found, a server that is down with remote-server-timeout", async () => {
    await f.alice.xmpp.send(xml("message", { to: "x@nowhere.test", id: "nf" }, xml("body", {}, "?")));
    const notFound = await f.alice.waitFor((s) => s.attrs.id === "nf" && s.attrs.type === "error", 10_000);
    assert.ok(notFound.getChild("error")!.getChild("remote-server-not-found", "urn:ietf:params:xml:ns:xmpp-stanzas"));
    assert.equal(notFound.attrs.from, "x@nowhere.test");
    await f.alice.xmpp.send(xml("message", { to: "x@down.test", id: "down" }, xml("body", {}, "?")));
    const timeout = await f.alice.waitFor((s) => s.attrs.id === "down" && s.attrs.type === "error", 15_000);
    assert.ok(timeout.getChild("error")!.getChild("remote-server-timeout", "urn:ietf:params:xml:ns:xmpp-stanzas"));
    const counted = await f.pair.a.metrics!.render();
    assert.match(counted.body, /parley_s2s_stanzas_out_total\{outcome="bounced",kind="message"\} 2/);
  });

  it("a server that comes back within the queue's time gets what waited for it", async () => {
    await f.alice.xmpp.send(xml("message", { to: "carol@late.test", type: "chat", id: "late" }, xml("body", {}, "are you there?")));
    await new Promise((r) => setTimeout(r, 1200));
    assert.deepEqual(f.pair.a.s2s().outgoing.filter((o) => o.remote === "late.test").map((o) => [o.state, o.queued]), [["connecting", 1]]);
    const late = await startTestServer({
      hosts: ["late.test"],
      listen: { address: "127.0.0.1", c2s: 0, c2sDirectTls: null, https: null, http: null, s2s: f.pair.ports.late },
      tls: { certificates: { "late.test": pki.files["late.test"]! } },
      s2s: { caFiles: [pki.caFile], routes: { "a.test": `127.0.0.1:${f.pair.ports.a}` } },
    });
    try {
      await late.accounts.create("carol@late.test", "pw");
      const carol = await login(late, "carol", "late.test");
      const got = await carol.waitFor((s) => s.is("message") && s.attrs.id === "late", 10_000);
      assert.equal(got.getChildText("body"), "are you there?");
      await carol.stop();
    } finally {
      await late.cleanup();
    }
  });

  it("a stream that has not authenticated sends a stanza: not-authorized", async () => {
    const { raw, features } = await rawS2S(f.pair.b.ports.s2s!, "b.test", "evil.test");
    assert.ok(features.getChild("dialback", "urn:xmpp:features:dialback"), "dialback offered");
    assert.equal(features.getChild("mechanisms", NS_SASL), undefined, "no certificate, no EXTERNAL");
    raw.send("<message from='mallory@evil.test' to='bob@b.test' id='unauth'><body>spam</body></message>");
    await streamEnds(raw, "not-authorized");
    assert.ok(!f.bob.inbox.some((s) => s.attrs.id === "unauth"), "bob sees nothing");
  });

  it("an authenticated peer forging another domain in 'from': invalid-from", async () => {
    const { raw, features } = await rawS2S(f.pair.b.ports.s2s!, "b.test", "evil.test", { cert: pem(pki.files["evil.test"]!.cert), key: pem(pki.files["evil.test"]!.key) });
    assert.deepEqual(features.getChild("mechanisms", NS_SASL)?.getChildren("mechanism").map((m) => m.text()), ["EXTERNAL"]);
    raw.send(`<auth xmlns='${NS_SASL}' mechanism='EXTERNAL'>${Buffer.from("evil.test").toString("base64")}</auth>`);
    await raw.waitForElement((e) => e.is("success", NS_SASL));
    raw.restartParser();
    const mark = raw.elements.length;
    raw.send(s2sHeader("b.test", "evil.test"));
    await raw.waitForElement((e) => e.is("features", NS_STREAMS), 5000, mark);
    // Its own domain is fine (bob gets it) …
    raw.send("<message from='eve@evil.test' to='bob@b.test' id='own'><body>hi</body></message>");
    await f.bob.waitFor((s) => s.attrs.id === "own", 5000);
    // … another one is not.
    raw.send("<message from='alice@a.test' to='bob@b.test' id='forged'><body>it is me</body></message>");
    await streamEnds(raw, "invalid-from");
    assert.ok(!f.bob.inbox.some((s) => s.attrs.id === "forged"), "bob sees nothing forged");
  });

  it("an oversized stanza, before and after authentication: policy-violation", async () => {
    const pre = await rawS2S(f.pair.b.ports.s2s!, "b.test", "evil.test");
    pre.raw.send(`<db:result from='evil.test' to='b.test'>${"a".repeat(9000)}</db:result>`);
    const preError = await pre.raw.waitForElement((e) => e.is("error", NS_STREAMS));
    assert.equal(streamErrorOf(preError), "policy-violation");
    assert.ok(preError.getChild("stanza-too-big", "urn:xmpp:errors"));

    const { raw, mark } = await evilAuthenticated();
    raw.send(`<message from='eve@evil.test' to='bob@b.test' id='fits'><body>${"x".repeat(15_000)}</body></message>`);
    await f.bob.waitFor((s) => s.attrs.id === "fits", 5000);
    raw.send(`<message from='eve@evil.test' to='bob@b.test' id='too-big'><body>${"x".repeat(25_000)}</body></message>`);
    assert.equal(streamErrorOf(await raw.waitForElement((e) => e.is("error", NS_STREAMS), 5000, mark)), "policy-violation");
    await raw.closed;
    assert.ok(!f.bob.inbox.some((s) => s.attrs.id === "too-big"));
  });

  it("a burst past the stanza rate is read more slowly, not cut off: every stanza arrives and the stream stays up", async () => {
    const { raw, mark } = await evilAuthenticated();
    // The bucket holds 200 (2 s of 100/s); the 50 after them wait for tokens, well within s2s.floodSeconds.
    raw.send(Array.from({ length: 250 }, (_, i) => `<message from='eve@evil.test' to='bob@b.test' id='burst-${i}' type='headline'><body>${i}</body></message>`).join(""));
    await f.bob.waitFor((s) => s.attrs.id === "burst-249", 10_000);
    assert.equal(f.bob.inbox.filter((s) => s.attrs.id?.startsWith("burst-")).length, 250);
    assert.deepEqual(f.bob.inbox.filter((s) => s.attrs.id?.startsWith("burst-")).map((s) => s.attrs.id), Array.from({ length: 250 }, (_, i) => `burst-${i}`), "in order");
    // Still up: a stanza after the burst gets through, and no stream error came.
    raw.send("<message from='eve@evil.test' to='bob@b.test' id='after-burst'><body>x</body></message>");
    await f.bob.waitFor((s) => s.attrs.id === "after-burst", 10_000);
    assert.ok(!raw.elements.slice(mark).some((e) => e.is("error", NS_STREAMS)), "no stream error");
    raw.close();
  });

  it("a flood that stays over the stanza rate ends with policy-violation, and local users are spared most of it", async () => {
    const { raw, mark } = await evilAuthenticated();
    raw.send(Array.from({ length: 1000 }, (_, i) => `<message from='eve@evil.test' to='bob@b.test' id='flood-${i}' type='headline'><body>${i}</body></message>`).join(""));
    assert.equal(streamErrorOf(await raw.waitForElement((e) => e.is("error", NS_STREAMS), 10_000, mark)), "policy-violation");
    await raw.closed;
    await new Promise((r) => setTimeout(r, 300));
    const reached = f.bob.inbox.filter((s) => s.attrs.id?.startsWith("flood-")).length;
    // The burst allows 200, then 100/s for the second (s2s.floodSeconds) the stream is kept over the rate.
    assert.ok(reached < 500, `${reached} of 1000 reached f.bob`);
  });

  it("XEP-0198 on an incoming stream: offered, enabled only once authenticated, 'h' counts what was routed, an ack of more than was sent ends the stream", async () => {
    const { raw, features } = await rawS2S(f.pair.b.ports.s2s!, "b.test", "evil.test", { cert: pem(pki.files["evil.test"]!.cert), key: pem(pki.files["evil.test"]!.key) });
    assert.ok(features.getChild("sm", NS_SM), "offered");
    raw.send(`<enable xmlns='${NS_SM}'/>`);
    const early = await raw.waitForElement((e) => e.is("failed", NS_SM));
    assert.ok(early.getChild("unexpected-request", "urn:ietf:params:xml:ns:xmpp-stanzas"), "not before authentication");
    raw.send(`<auth xmlns='${NS_SASL}' mechanism='EXTERNAL'>=</auth>`);
    await raw.waitForElement((e) => e.is("success", NS_SASL));
    raw.restartParser();
    const mark = raw.elements.length;
    raw.send(s2sHeader("b.test", "evil.test"));
    const after = await raw.waitForElement((e) => e.is("features", NS_STREAMS), 5000, mark);
    assert.ok(after.getChild("sm", NS_SM), "offered after SASL too");
    raw.send(`<enable xmlns='${NS_SM}' resume='true'/>`);
    const enabled = await raw.waitForElement((e) => e.is("enabled", NS_SM), 5000, mark);
    assert.equal(enabled.attrs.resume, undefined, "no resumption between servers");
    raw.send("<message from='eve@evil.test' to='bob@b.test' id='sm-1'><body>1</body></message><message from='eve@evil.test' to='bob@b.test' id='sm-2'><body>2</body></message>");
    raw.send(`<r xmlns='${NS_SM}'/>`);
    const ack = await raw.waitForElement((e) => e.is("a", NS_SM), 5000, mark);
    assert.equal(ack.attrs.h, "2");
    await f.bob.waitFor((s) => s.attrs.id === "sm-2", 5000);
    // Nothing was sent to it on this stream: acknowledging one is acknowledging too many.
    raw.send(`<a xmlns='${NS_SM}' h='1'/>`);
    const error = await raw.waitForElement((e) => e.is("error", NS_STREAMS), 5000, mark);
    assert.equal(streamErrorOf(error), "undefined-condition");
    assert.equal(error.getChild("handled-count-too-high", NS_SM)?.attrs["send-count"], "0");
    await raw.closed;
  });

  it("a blocked domain: its stanzas are refused both ways", async () => {
    await f.alice.xmpp.send(xml("message", { to: "x@chat.blocked.test", id: "blocked" }, xml("body", {}, "?")));
    const refused = await f.alice.waitFor((s) => s.attrs.id === "blocked" && s.attrs.type === "error", 5000);
    assert.ok(refused.getChild("error")!.getChild("not-allowed", "urn:ietf:params:xml:ns:xmpp-stanzas"));
    assert.ok(!f.pair.a.s2s().outgoing.some((o) => o.remote.endsWith("blocked.test")), "no connection was tried");
    const raw = await RawClient.open(f.pair.a.ports.s2s!, false);
    raw.send(s2sHeader("a.test", "blocked.test"));
    assert.equal(streamErrorOf(await raw.waitForElement((e) => e.is("error", NS_STREAMS))), "policy-violation");
    await raw.closed;
  });

  it("no more than s2s.maxConnectionsPerAddress incoming connections from one address", async () => {
    const held = await Promise.all(Array.from({ length: 4 }, () => RawClient.open(f.pair.b.ports.s2s!, false, "127.0.0.2")));
    for (const raw of held) raw.send(s2sHeader("b.test", "evil.test"));
    await Promise.all(held.map((raw) => raw.waitForElement((e) => e.is("features", NS_STREAMS))));
    const fifth = await RawClient.open(f.pair.b.ports.s2s!, false, "127.0.0.2");
    await fifth.closed;
    assert.equal(fifth.text, "", "closed before a byte was sent");
    // Other addresses (here: the other server, on 127.0.0.1) are not affected.
    await f.alice.xmpp.send(xml("message", { to: "bob@b.test", id: "still" }, xml("body", {}, "still here")));
    await f.bob.waitFor((s) => s.attrs.id === "still", 10_000);
    for (const raw of held) raw.close();
  });

  it("a stream that never authenticates is closed: connection-timeout", async () => {
    const { raw } = await rawS2S(f.pair.b.ports.s2s!, "b.test", "evil.test");
    const error = await raw.waitForElement((e) => e.is("error", NS_STREAMS), 5000);
    assert.equal(streamErrorOf(error), "connection-timeout");
    await raw.closed;
  });

  it("dialback with a key the authoritative server did not give: invalid", async () => {
    const { raw } = await rawS2S(f.pair.b.ports.s2s!, "b.test", "a.test");
    // a.test is reachable, and is asked: it never gave this key.
    raw.send(`<db:result from='a.test' to='b.test'>${"0".repeat(64)}</db:result>`);
    const answer = await raw.waitForElement((e) => e.is("result", "jabber:server:dialback"), 10_000);
    assert.equal(answer.attrs.type, "invalid");
    raw.send("<message from='alice@a.test' to='bob@b.test' id='after-invalid'><body>x</body></message>");
    assert.equal(streamErrorOf(await raw.waitForElement((e) => e.is("error", NS_STREAMS))), "not-authorized");
  });

  it("a stream that keeps asking for dialback callbacks is cut off (policy-violation)", async () => {
    const { raw } = await rawS2S(f.pair.b.ports.s2s!, "b.test", "evil.test");
    for (let i = 0; i < 9; i++) raw.send(`<db:result from='victim${i}.test' to='b.test'>${"0".repeat(64)}</db:result>`);
    assert.equal(streamErrorOf(await raw.waitForElement((e) => e.is("error", NS_STREAMS), 10_000)), "policy-violation");
  });
});

describe("s2s between two Parleys, certificates that do not verify (dialback, XEP-0220)", () => {
  const f = pairWithUsers(() => startPair(undefined));

  it("chat both ways; both streams authenticate with dialback", async () => {
    await chatBothWays(f.alice, f.bob, "db");
    // XEP-0288 (on by default): b.test answers over a.test's stream, the pair for which a.test passed dialback.
    assert.deepEqual(f.pair.a.s2s().outgoing.map((o) => [o.remote, o.method, o.via]), [["b.test", "dialback", "outgoing-bidi"]]);
    assert.deepEqual(f.pair.b.s2s().outgoing.map((o) => [o.remote, o.method, o.via]), [["a.test", "dialback", "incoming-bidi"]]);
    assert.deepEqual(f.pair.b.s2s().incoming.map((i) => [i.domains, i.bidi]), [[[{ domain: "a.test", method: "dialback" }], true]]);
    assert.deepEqual(f.pair.a.s2s().incoming, []);
  });
});

// With XEP-0198 between the servers, <a h/> confirms; without, an XEP-0199 ping answered after the message.
for (const confirmation of ["sm", "round-trip"] as const) describe(`s2s: nothing lost when a stream dies (durable outbox, confirmed by ${confirmation})`, () => {
  let relay!: LossyRelay;
  const f = pairWithUsers(async () => {
    relay = await LossyRelay.open(() => f.pair.ports.b);
    return startPair(undefined, { aToB: relay.port, streamManagement: confirmation === "sm", maxQueued: 3 });
  });
  after(() => relay?.close());
  const ids = (prefix: string) => f.bob.inbox.filter((s) => s.attrs.id?.startsWith(prefix)).map((s) => s.attrs.id);

  it("a message written to a stream that dies before the peer confirmed it arrives over the next stream", async () => {
    await f.alice.xmpp.send(xml("message", { to: "bob@b.test", type: "chat", id: "before" }, xml("body", {}, "first")));
    await f.bob.waitFor((s) => s.attrs.id === "before", 10_000);
    assert.deepEqual(f.pair.a.s2s().outgoing.map((o) => [o.remote, o.state, o.confirmation]), [["b.test", "ready", confirmation]]);
    // Confirmed by b.test: its outbox row is gone.
    await until(async () => (await f.pair.a.storage.s2sOutbox.list("")).length === 0, "the acknowledged message leaves the outbox");

    // The path dies silently: what a.test writes now reaches nobody, and no confirmation comes back.
    relay.swallowing = true;
    await f.alice.xmpp.send(xml("message", { to: "bob@b.test", type: "chat", id: "in-flight" }, xml("body", {}, "second")));
    await until(() => f.pair.a.s2s().outgoing[0]?.unconfirmed === 1 && relay.swallowed > 0, "the message written, not confirmed");
    const waiting = await f.pair.a.storage.s2sOutbox.list("");
    assert.deepEqual(waiting.map((e) => [e.local, e.remote]), [["a.test", "b.test"]]);
    assert.equal(parseElement(waiting[0]!.stanza).attrs.id, "in-flight");
    // The connection is destroyed under the written, unconfirmed message.
    relay.cut();
    const got = await f.bob.waitFor((s) => s.attrs.id === "in-flight", 15_000);
    assert.equal(got.getChildText("body"), "second");
    await until(async () => (await f.pair.a.storage.s2sOutbox.list("")).length === 0, "confirmed on the new stream, the row goes");
    assert.match((await f.pair.a.metrics!.render()).body, /parley_s2s_stanzas_out_total\{outcome="resent",kind="message"\} 1/);
  });

  it("no more than s2s.maxQueuedStanzas go out unconfirmed: the rest wait, in order, until the peer confirms", async () => {
    relay.swallowing = true;
    for (let i = 0; i < 5; i++) await f.alice.xmpp.send(xml("message", { to: "bob@b.test", type: "chat", id: `window-${i}` }, xml("body", {}, String(i))));
    await until(() => {
      const o = f.pair.a.s2s().outgoing[0];
      return o?.unconfirmed === 3 && o.queued === 2;
    }, "three written and unconfirmed, two waiting");
    await until(async () => (await f.pair.a.storage.s2sOutbox.list("")).length === 5, "all five durable");
    relay.cut();
    await f.bob.waitFor((s) => s.attrs.id === "window-4", 15_000);
    // A stanza may come twice (written, then again on the next stream); never out of order, none missing.
    assert.deepEqual([...new Set(ids("window-"))], ["window-0", "window-1", "window-2", "window-3", "window-4"]);
    await until(async () => (await f.pair.a.storage.s2sOutbox.list("")).length === 0, "all confirmed, the rows gone");
  });
});

describe("s2s: the outbox survives kill -9 of the server (durable outgoing queue)", () => {
  it("a message acknowledged to its sender while the remote server was down arrives after a restart, once that server is up", async () => {
    const dir = mkdtempSync(join(tmpdir(), "parley-s2s-outbox-"));
    const [c2s, s2sA, late, noDns] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
    const config = join(dir, "parley.yaml");
    writeFileSync(config, [
      "hosts: [a.test]", `dataDir: ${dir}`, "storage: { driver: sqlite }", "auth: { scramIterations: 4096 }", "log: { level: info, pretty: false }",
      `listen: { address: 127.0.0.1, c2s: null, c2sDirectTls: ${c2s}, https: null, http: null, s2s: ${s2sA} }`,
      `s2s: { routes: { late.test: "127.0.0.1:${late}" }, dnsServer: "127.0.0.1:${noDns}", queueTimeoutSeconds: 300 }`,
    ].join("\n") + "\n");
    const added = spawnSync(BIN, ["user", "add", "alice@a.test", "--config", config], { input: "pw\n", encoding: "utf8" });
    assert.equal(added.status, 0, added.stderr);
    let child = await startChild(config);
    let remote: TestServer | undefined;
    try {
      const alice = await rawSession(c2s, "alice", "pw", "r", "a.test");
      alice.send(`<enable xmlns='${NS_SM}'/>`);
      await alice.waitForElement((e) => e.is("enabled", NS_SM));
      alice.send("<message to='carol@late.test' type='chat' id='kept'><body>still there?</body></message>");
      alice.send(`<r xmlns='${NS_SM}'/>`);
      // XEP-0198 'h' = 1: the server took custody of the message, so it is in the outbox.
      await alice.waitForElement((e) => e.is("a", NS_SM) && e.attrs.h === "1", 10_000);
      child.kill("SIGKILL");
      await new Promise((r) => child.once("exit", r));
      alice.close();

      child = await startChild(config);
      remote = await startTestServer({
        hosts: ["late.test"],
        listen: { address: "127.0.0.1", c2s: 0, c2sDirectTls: null, https: null, http: null, s2s: late },
        s2s: { routes: { "a.test": `127.0.0.1:${s2sA}` }, dnsServer: `127.0.0.1:${noDns}` },
      });
      await remote.accounts.create("carol@late.test", "pw");
      const carol = await login(remote, "carol", "late.test");
      const got = await carol.waitFor((s) => s.is("message") && s.attrs.id === "kept", 30_000);
      assert.equal(got.attrs.from, "alice@a.test/r");
      assert.equal(got.getChildText("body"), "still there?");
      await carol.stop();
    } finally {
      child.kill("SIGKILL");
      await remote?.cleanup();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("s2s: a restored stanza keeps its deadline (counted from when it was first queued)", () => {
  it("after a restart, a stanza queued longer ago than s2s.queueTimeoutSeconds bounces at once, not a full timeout later", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "parley-s2s-deadline-"));
    const [down, noDns] = await Promise.all([freePort(), freePort()]);
    // A minute to wait: the bounce below can only come from the original queueing time.
    const options = {
      hosts: ["a.test"], dataDir,
      listen: { address: "127.0.0.1", c2s: 0, c2sDirectTls: null, https: null, http: null, s2s: 0 },
      s2s: { routes: { "down.test": `127.0.0.1:${down}` }, dnsServer: `127.0.0.1:${noDns}`, queueTimeoutSeconds: 60 },
    };
    try {
      const first = await startTestServer(options);
      await first.accounts.create("alice@a.test", "pw");
      const alice = await login(first, "alice", "a.test");
      await alice.xmpp.send(xml("message", { to: "x@down.test", type: "chat", id: "old" }, xml("body", {}, "?")));
      await until(async () => (await first.storage.s2sOutbox.list("")).length === 1, "the message in the outbox");
      await alice.stop();
      // A clean stop keeps it for the next start instead of bouncing it.
      await first.cleanup();
      const db = new Database(join(dataDir, "parley.sqlite"));
      assert.equal(db.prepare("SELECT count(*) FROM s2s_outbox").pluck().get(), 1, "kept across the stop");
      // As if the server had been down for an hour since the message was queued.
      db.prepare("UPDATE s2s_outbox SET queued_at = queued_at - 3600000").run();
      db.close();

      const second = await startTestServer(options);
      try {
        // Bounced at once (alice is offline: an error message is not stored for her, RFC 6121 §8.5.2.1.1), and counted.
        await until(async () => (await second.storage.s2sOutbox.list("")).length === 0, "the row bounced and removed", 10_000);
        const counted = await second.metrics!.render();
        assert.match(counted.body, /parley_s2s_stanzas_out_total\{outcome="bounced",kind="message"\} 1/);
      } finally {
        await second.cleanup();
      }
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe("s2s over direct TLS (XEP-0368)", () => {
  const f = pairWithUsers(() => startPair(openssl ? makePki(["a.test", "b.test"]) : undefined, { directTls: true }));

  it("chat both ways over streams that start with TLS", async () => {
    await chatBothWays(f.alice, f.bob, "direct");
    assert.deepEqual(f.pair.b.s2s().incoming.map((i) => [i.directTls, i.domains.map((d) => d.domain)]), [[true, ["a.test"]]]);
    // XEP-0288: b.test answers on that same connection.
    assert.deepEqual(f.pair.b.s2s().outgoing.map((o) => [o.remote, o.via]), [["a.test", "incoming-bidi"]]);
  });
});

/** TCP connections a server has for federation: its incoming streams, and the outgoing ones that are its own. */
const connectionsOf = (server: TestServer) => {
  const { incoming, outgoing } = server.s2s();
  return incoming.length + outgoing.filter((o) => o.via !== "incoming-bidi").length;
};

describe("s2s: XEP-0288 bidirectional streams between two Parleys", { skip: openssl ? false : "openssl is not installed" }, () => {
  const pki = openssl ? makePki(["a.test", "b.test"]) : undefined;
  for (const bidiOnB of [true, false]) it(bidiOnB ? "with s2s.bidi on both sides, a.test→b.test and b.test→a.test share one TCP connection" : "with s2s.bidi off on b.test, each direction has its own connection", async () => {
    const pair = await startParleyPair({ pki: pki!, b: bidiOnB ? {} : { s2s: { bidi: false } } });
    const alice = await login(pair.a, "alice", "a.test");
    const bob = await login(pair.b, "bob", "b.test");
    try {
      await chatBothWays(alice, bob, bidiOnB ? "bidi-on" : "bidi-off");
      assert.equal(connectionsOf(pair.a), bidiOnB ? 1 : 2);
      assert.equal(connectionsOf(pair.b), bidiOnB ? 1 : 2);
      assert.deepEqual(pair.a.s2s().outgoing.map((o) => [o.remote, o.state, o.via]), [["b.test", "ready", bidiOnB ? "outgoing-bidi" : "outgoing"]]);
      assert.deepEqual(pair.b.s2s().outgoing.map((o) => [o.remote, o.state, o.via]), [["a.test", "ready", bidiOnB ? "incoming-bidi" : "outgoing"]]);
      assert.deepEqual(pair.b.s2s().incoming.map((i) => [i.domains.map((d) => d.domain), i.bidi]), [[["a.test"], bidiOnB]]);
      if (bidiOnB) {
        // The round trip that confirms b.test's durable messages went over the same connection: none is left in its outbox.
        await until(async () => (await pair.b.storage.s2sOutbox.list("")).length === 0, "b.test's message confirmed over the reverse stream");
      }
    } finally {
      await alice.stop();
      await bob.stop();
      await pair.a.cleanup();
      await pair.b.cleanup();
    }
  });
});

describe("s2s: XEP-0288 on our outgoing stream, with a hostile receiving server (raw socket)", { skip: openssl ? false : "openssl is not installed" }, () => {
  it("<bidi/> goes before dialback; what comes back is routed from the authenticated domain only: a forged 'from' gets invalid-from", async () => {
    const pki = makePki(["a.test", "evil.test"]);
    const accepted: RawClient[] = [];
    let connected!: (raw: RawClient) => void;
    const peerConnected = new Promise<RawClient>((resolve) => { connected = resolve; });
    const evilServer = createTlsServer({ cert: pem(pki.files["evil.test"]!.cert), key: pem(pki.files["evil.test"]!.key), ALPNProtocols: ["xmpp-server"] }, (socket) => {
      const raw = RawClient.accept(socket);
      accepted.push(raw);
      connected(raw);
    });
    await new Promise<void>((resolve) => evilServer.listen(0, "127.0.0.1", resolve));
    const evilPort = (evilServer.address() as { port: number }).port;
    const noDns = await freePort();
    const a = await startTestServer({
      hosts: ["a.test"], tls: { certificates: { "a.test": pki.files["a.test"]! } },
      s2s: { caFiles: [pki.caFile], routes: { "evil.test": `xmpps://127.0.0.1:${evilPort}` }, dnsServer: `127.0.0.1:${noDns}` },
      listen: { address: "127.0.0.1", c2s: 0, c2sDirectTls: null, https: null, http: null, s2s: 0 },
    });
    await a.accounts.create("alice@a.test", "pw");
    const alice = await login(a, "alice", "a.test");
    try {
      await alice.xmpp.send(xml("message", { to: "mallory@evil.test", type: "chat", id: "out" }, xml("body", {}, "hello evil")));
      const peer = await peerConnected;
      await peer.waitFor(/<stream:stream[^>]*>/);
      peer.send(`<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='${NS_STREAMS}' xmlns:db='jabber:server:dialback' from='evil.test' to='a.test' id='evil-1' version='1.0'><stream:features><bidi xmlns='urn:xmpp:features:bidi'/><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>`);
      const result = await peer.waitForElement((e) => e.is("result", "jabber:server:dialback"));
      // XEP-0288 §2.2: "This SHOULD be done before either SASL negotiation or Server Dialback."
      const bidi = peer.elements.findIndex((e) => e.is("bidi", "urn:xmpp:bidi"));
      assert.ok(bidi >= 0 && bidi < peer.elements.indexOf(result), "<bidi/> sent, before <db:result/>");
      peer.send("<db:result from='evil.test' to='a.test' type='valid'/>");
      await peer.waitForElement((e) => e.is("message") && e.attrs.id === "out");

      // Back on the same stream, from the authenticated domain to ours: delivered.
      peer.send("<message from='mallory@evil.test/x' to='alice@a.test' type='chat' id='back'><body>hi alice</body></message>");
      const back = await alice.waitFor((s) => s.is("message") && s.attrs.id === "back", 10_000);
      assert.equal(back.attrs.from, "mallory@evil.test/x");
      // From a domain this stream never authenticated: RFC 6120 §4.9.3.9 invalid-from, and nothing reaches alice.
      peer.send("<message from='mallory@forged.test' to='alice@a.test' type='chat' id='forged'><body>trust me</body></message>");
      await streamEnds(peer, "invalid-from");
      assert.equal(alice.inbox.some((s) => s.attrs.id === "forged"), false);
    } finally {
      await alice.stop();
      for (const raw of accepted) raw.close();
      await a.cleanup();
      await new Promise<void>((resolve) => evilServer.close(() => resolve()));
    }
  });
});
