/**
 * The stream layer's pieces alone, without sockets: header checks and the stream's error/close
 * rules (RFC 6120 §4), STARTTLS answers (§5), the SASL step (§6), resource binding rules (§7).
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { XmlStream, checkHeader, type StreamEnding } from "../../src/xmpp/stream/xml-stream.js";
import { withContentNamespace, type FrameReceiver, type StreamOpen, type Transport } from "../../src/xmpp/stream/transport.js";
import { preTlsAnswer } from "../../src/xmpp/c2s/starttls.js";
import { admitSession, chooseResource } from "../../src/xmpp/c2s/bind.js";
import { SaslStep, type SaslStepDeps } from "../../src/xmpp/c2s/sasl.js";
import { AuthThrottle } from "../../src/xmpp/c2s/throttle.js";
import { StanzaError, StreamError } from "../../src/errors.js";
import { el } from "../../src/xmpp/xml.js";
import { parseJid } from "../../src/xmpp/jid.js";
import { NS } from "../../src/xmpp/ns.js";
import { silentLogger } from "../../src/log.js";
import { deriveCredentials } from "../../src/auth/scram.js";
import type { Session } from "../../src/xmpp/sessions.js";

class FakeTransport implements Transport {
  readonly kind = "tcp";
  readonly remoteAddress = "192.0.2.1";
  secure = true;
  tls = undefined;
  buffered = 0;
  lastInbound = 0;
  receiver: FrameReceiver | undefined;
  readonly wire: string[] = [];
  closedStream = false;
  destroyed = false;
  setReceiver(r: FrameReceiver) { this.receiver = r; }
  restart() { this.wire.push("[restart]"); }
  setLimits() {}
  openStream(open: StreamOpen) { this.wire.push(`[open ${open.from ?? "-"} ${open.ns}]`); }
  send(xml: string) { this.wire.push(xml); }
  sendStreamElement(name: string, inner: string) { this.wire.push(`[${name}]${inner}`); }
  closeStream() { this.closedStream = true; }
  destroy() { this.destroyed = true; }
}

function stream() {
  const transport = new FakeTransport();
  const endings: StreamEnding[] = [];
  const s = new XmlStream(transport, NS.CLIENT, silentLogger(), { header() {}, element() {}, ended: (e) => endings.push(e), drain() {} });
  return { s, transport, endings };
}

const header = (attrs: Record<string, string>, overrides: Partial<{ name: string; uri: string; defaultNs: string }> = {}) =>
  ({ name: "stream", uri: NS.STREAMS, defaultNs: NS.CLIENT, attrs, ...overrides });

describe("stream headers (RFC 6120 §4.7, §4.8)", () => {
  it("checks the namespaces and the version", () => {
    const check = { contentNs: NS.CLIENT, requireVersion: true };
    assert.equal(checkHeader(header({ version: "1.0" }), check), undefined);
    assert.equal(checkHeader(header({ version: "1.0" }, { uri: "urn:wrong" }), check)?.condition, "invalid-namespace");
    assert.equal(checkHeader(header({ version: "1.0" }, { name: "strem" }), check)?.condition, "invalid-xml");
    assert.equal(checkHeader(header({ version: "1.0" }, { defaultNs: "jabber:server" }), check)?.condition, "invalid-namespace");
    assert.equal(checkHeader(header({}), check)?.condition, "unsupported-version");
    assert.equal(checkHeader(header({ version: "2.0" }), check)?.condition, "unsupported-version");
    assert.equal(checkHeader(header({}), { contentNs: NS.CLIENT, requireVersion: false }), undefined, "XEP-0114 streams have no version");
  });
});

describe("XmlStream", () => {
  it("a stream error sends our header first when we had not, then the error, once", () => {
    const { s, transport, endings } = stream();
    s.error(new StreamError("host-unknown"), "example.org");
    s.error(new StreamError("conflict"));
    assert.equal(transport.wire[0], `[open example.org ${NS.CLIENT}]`);
    assert.match(transport.wire[1]!, /^\[error\]<host-unknown xmlns="urn:ietf:params:xml:ns:xmpp-streams"\/>$/);
    assert.equal(transport.wire.length, 2, "the second error is not sent");
    assert.equal(transport.closedStream, true);
    assert.deepEqual(endings.map((e) => e.kind), ["closed"]);
  });

  it("reports how it ended exactly once: a dropped transport is 'lost', the peer's close is 'peer-closed'", () => {
    const a = stream();
    a.s.open("localhost", "en");
    a.transport.receiver!.ended("lost");
    a.transport.receiver!.ended("closed");
    assert.deepEqual(a.endings.map((e) => e.kind), ["lost"]);
    const b = stream();
    b.s.open("localhost", "en");
    b.transport.receiver!.streamEnd();
    b.transport.receiver!.ended("closed");
    assert.deepEqual(b.endings.map((e) => e.kind), ["peer-closed"]);
    assert.equal(b.transport.closedStream, true, "we close our side too");
  });

  it("abort writes the error past backpressure and drops the transport", () => {
    const { s, transport, endings } = stream();
    s.open("localhost", "en");
    s.abort(new StreamError("resource-constraint"));
    assert.equal(transport.destroyed, true);
    assert.equal(transport.closedStream, false, "no waiting for a peer that does not read");
    assert.equal(endings[0]?.kind, "closed");
    s.send("<message/>");
    assert.ok(!transport.wire.includes("<message/>"), "nothing is written after the end");
  });

  it("after a restart a new stream id and header", () => {
    const { s, transport } = stream();
    s.open("localhost", "en");
    const first = s.id;
    s.restart({ maxStanzaBytes: 1, maxDepth: 1, maxElementsPerStanza: 1, maxAttributes: 1, maxNameLength: 1, maxLangLength: 1 });
    s.open("localhost", "en");
    assert.notEqual(s.id, first);
    assert.deepEqual(transport.wire.filter((w) => w.startsWith("[")).map((w) => w.split(" ")[0]), ["[open", "[restart]", "[open"]);
  });
});

describe("framing helpers", () => {
  it("withContentNamespace adds xmlns to the top tag only when it has none", () => {
    assert.equal(withContentNamespace("<message to='a'><body>x</body></message>", NS.CLIENT), `<message xmlns='${NS.CLIENT}' to='a'><body>x</body></message>`);
    assert.equal(withContentNamespace("<presence/>", NS.CLIENT), `<presence xmlns='${NS.CLIENT}'/>`);
    assert.equal(withContentNamespace(`<iq xmlns="${NS.CLIENT}" id="1"/>`, NS.CLIENT), `<iq xmlns="${NS.CLIENT}" id="1"/>`);
    assert.equal(withContentNamespace("<message id='a>b'/>", NS.CLIENT), `<message xmlns='${NS.CLIENT}' id='a>b'/>`, "a '>' inside a value is not the end of the tag");
    assert.equal(withContentNamespace("<r xmlns='urn:xmpp:sm:3'/>", NS.CLIENT), "<r xmlns='urn:xmpp:sm:3'/>");
    assert.equal(withContentNamespace("<iq\txmlns = 'jabber:client'/>", NS.CLIENT), "<iq\txmlns = 'jabber:client'/>", "space around '=' is allowed");
    assert.equal(withContentNamespace("<message id=' xmlns=x'/>", NS.CLIENT), `<message xmlns='${NS.CLIENT}' id=' xmlns=x'/>`, "'xmlns=' inside a value is not an attribute");
    assert.equal(withContentNamespace("<stream:features xmlns:stream='s'/>", NS.CLIENT), `<stream:features xmlns='${NS.CLIENT}' xmlns:stream='s'/>`, "a prefix declaration is not the default namespace");
    assert.equal(withContentNamespace("<message><body xmlns='x'/></message>", NS.CLIENT), `<message xmlns='${NS.CLIENT}'><body xmlns='x'/></message>`, "only the top tag counts");
  });
});

describe("STARTTLS (RFC 6120 §5)", () => {
  it("answers every element of a pre-TLS stream", () => {
    assert.equal(preTlsAnswer(el("starttls", { xmlns: NS.TLS })), "starttls");
    assert.equal(preTlsAnswer(el("auth", { xmlns: NS.SASL, mechanism: "PLAIN" })), "encryption-required");
    assert.equal(preTlsAnswer(el("message", { xmlns: NS.CLIENT })), "policy-violation");
    assert.equal(preTlsAnswer(el("starttls", { xmlns: "urn:wrong" })), "policy-violation");
  });
});

describe("resource binding (RFC 6120 §7)", () => {
  const session = (full: string, hibernating = false) => ({ jid: parseJid(full), hibernating }) as unknown as Session;

  it("prepares the client's resource or makes one up; a bad one is bad-request", () => {
    assert.equal(chooseResource("Phone"), "Phone");
    assert.match(chooseResource(undefined), /^[A-Za-z0-9_-]{8}$/);
    assert.throws(() => chooseResource("a\u0000b"), (e: unknown) => e instanceof StanzaError && e.condition === "bad-request");
  });

  it("counts live sessions against the limit; hibernated ones make room, oldest first", () => {
    const live = [session("u@h/a"), session("u@h/b")];
    assert.throws(() => admitSession(live, "u@h/c", 2), (e: unknown) => e instanceof StanzaError && e.condition === "resource-constraint");
    assert.deepEqual(admitSession(live, "u@h/a", 2), [], "the same resource replaces, it does not add");
    const sleeping = [session("u@h/old", true), session("u@h/newer", true), session("u@h/live")];
    assert.deepEqual(admitSession(sleeping, "u@h/new", 3).map((s) => s.jid.resource), ["old"]);
    assert.deepEqual(admitSession(sleeping, "u@h/new", 2).map((s) => s.jid.resource), ["old", "newer"]);
    assert.deepEqual(admitSession(sleeping, "u@h/new", 10), []);
  });
});

describe("the SASL step (RFC 6120 §6)", () => {
  const user = "u@localhost";
  async function step(tls?: SaslStepDeps["tls"]) {
    const credentials = await deriveCredentials("secret", 4096);
    return new SaslStep({
      host: "localhost", remoteAddress: "192.0.2.1", tls, secure: true,
      lookup: async (jid) => (jid === user ? { jid, createdAt: 0, credentials } : undefined),
      storeCredentials: async () => {},
      secret: Buffer.alloc(32), iterations: 4096,
      throttle: new AuthThrottle({ banAfter: 100, banSeconds: 60, freeFailures: 100, maxDelayMs: 0 }),
      maxAuthFailures: 2, log: silentLogger(),
    });
  }
  const tlsFacts = (version: string) => ({ version, servername: "localhost", exportKeyingMaterial: () => Buffer.alloc(32), tlsUnique: () => Buffer.alloc(12), serverCertificate: () => undefined, peerCertificates: () => [] });
  const plain = (password: string) => Buffer.from(`\0u\0${password}`);

  it("offers -PLUS mechanisms and channel-binding types only on TLS: tls-exporter on TLS 1.3, tls-unique below it", async () => {
    const plainText = await step();
    assert.deepEqual(plainText.offeredMechanisms(), ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]);
    assert.ok(!plainText.features().includes("sasl-channel-binding"));
    const tls13 = await step(tlsFacts("TLSv1.3"));
    assert.deepEqual(tls13.channelBindingTypes(), ["tls-exporter", "tls-server-end-point"]);
    assert.ok(tls13.offeredMechanisms().includes("SCRAM-SHA-256-PLUS"));
    assert.deepEqual((await step(tlsFacts("TLSv1.2"))).channelBindingTypes(), ["tls-server-end-point", "tls-unique"]);
  });

  it("PLAIN with the right password succeeds and names the account", async () => {
    const sasl = await step();
    const outcome = await sasl.start("PLAIN", plain("secret"), []);
    assert.deepEqual(outcome, { kind: "success", username: user });
  });

  it("an unoffered mechanism, an abort and an out-of-order response each get their condition", async () => {
    const sasl = await step();
    assert.deepEqual(await sasl.start("SCRAM-SHA-1-PLUS", undefined, []), { kind: "failure", condition: "invalid-mechanism" });
    assert.deepEqual(sasl.abort(), { kind: "failure", condition: "aborted" });
    assert.equal(((await sasl.respond(Buffer.alloc(3))) as { condition: string }).condition, "not-authorized");
  });

  it("wrong credentials count: at the limit the stream is closed with policy-violation", async () => {
    const sasl = await step();
    assert.deepEqual(await sasl.start("PLAIN", plain("wrong"), []), { kind: "failure", condition: "not-authorized", username: user }, "the account tried, for the per-account slow-down");
    const second = await sasl.start("PLAIN", plain("wrong"), []);
    assert.equal(second.kind, "failure");
    assert.equal((second as { thenClose?: StreamError }).thenClose?.condition, "policy-violation");
  });

  it("SCRAM's server-first-message carries the XEP-0474 downgrade-protection hash of what was advertised", async () => {
    const sasl = await step(tlsFacts("TLSv1.3"));
    const first = await sasl.start("SCRAM-SHA-1", Buffer.from("n,,n=u,r=abcdef"), ["SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"]);
    assert.equal(first.kind, "challenge");
    const h = /,h=([^,]+)$/.exec((first as { data: Buffer }).data.toString())?.[1];
    // XEP-0474 §4's example: SHA-1 of 'SCRAM-SHA-1\x1eSCRAM-SHA-1-PLUS\x1ftls-exporter\x1etls-server-end-point'.
    assert.equal(h, "G6k/rBLDqgOhRRaCuuatSDFkJ08=");
  });
});
