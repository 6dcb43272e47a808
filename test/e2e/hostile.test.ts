/**
 * Bad input over real sockets gets the exact stream or stanza error of ../shared/reference/HARDENING.md,
 * and the server keeps serving everyone else.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { xml, type Element } from "@xmpp/xml";
import { RawClient, header, rawSession, errorReply, iqResult, streamError, tree, NS_STREAMS } from "../helpers/raw.js";

const NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls";
/**
 * The stream's closing tag. Bytes on purpose: </stream:stream> is no element (the parser only
 * ends the root on it), and these tests are about the server closing the stream after the error.
 */
const streamClose = /<\/stream:stream>/;

describe("hostile input (e2e)", () => {
  let server: TestServer;
  let bystander: RawClient;
  before(async () => {
    server = await startTestServer({ limits: { negotiationTimeoutSeconds: 2 } });
    await server.accounts.create("alice@localhost", "pw");
    await server.accounts.create("bob@localhost", "pw");
    bystander = await rawSession(server.ports.c2sDirectTls!, "bob", "pw", "bystander");
  });
  after(async () => {
    bystander.close();
    await server.cleanup();
  });

  /** Send `input` on a fresh connection and expect a stream error, then the closing tag and a closed socket. */
  const expectStreamError = async (input: string | Buffer | Array<string | Buffer>, condition: string, directTls = true) => {
    const c = await RawClient.open(directTls ? server.ports.c2sDirectTls! : server.ports.c2s!, directTls);
    for (const part of Array.isArray(input) ? input : [input]) c.send(part);
    await c.waitForElement(streamError(condition));
    await c.waitFor(streamClose);
    await c.closed;
    return c;
  };

  const preAuth: Array<[string, string | Buffer | Array<string | Buffer>, string]> = [
    ["not well-formed <'/>", [header(), "<'/>"], "not-well-formed"],
    ["duplicate attribute", [header(), "<message to='a@x' to='b@x'/>"], "not-well-formed"],
    ["unbound prefix", [header(), "<foo:message/>"], "bad-namespace-prefix"],
    ["DOCTYPE / billion laughs", `<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;">]>${header()}`, "restricted-xml"],
    ["comment", [header(), "<!-- <message/> -->"], "restricted-xml"],
    ["processing instruction", [header(), "<?evil?>"], "restricted-xml"],
    ["invalid UTF-8", [header(), Buffer.from([0x3c, 0x61, 0x20, 0xc0, 0xaf])], "unsupported-encoding"],
    ["wrong stream namespace", "<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong' to='localhost' version='1.0'>", "invalid-namespace"],
    ["jabber:server on c2s", "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>", "invalid-namespace"],
    ["version 2.0", header("localhost").replace("version='1.0'>", "version='2.0'>"), "unsupported-version"],
    ["missing to", "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>", "improper-addressing"],
    ["unknown host", header("elsewhere.example"), "host-unknown"],
    ["xml:lang over 35 characters", header("localhost", ` xml:lang='${"a".repeat(36)}'`), "policy-violation"],
    ["a stanza before authentication", [header(), "<message to='bob@localhost'><body>x</body></message>"], "not-authorized"],
    ["an unknown top-level element", [header(), "<foo xmlns='urn:x'/>"], "unsupported-stanza-type"],
    ["pre-auth stanza over 8192 bytes", [header(), `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${"A".repeat(9000)}</auth>`], "policy-violation"],
    ["10k-deep nesting", [header(), "<a>".repeat(10000)], "policy-violation"],
  ];
  for (const [name, input, condition] of preAuth) {
    it(`${name} → ${condition}`, async () => { await expectStreamError(input, condition); });
  }

  it("a stanza before STARTTLS → policy-violation; <auth> before STARTTLS → encryption-required", async () => {
    const c = await RawClient.open(server.ports.c2s!, false);
    c.send(header());
    const features = await c.waitForElement((e) => e.is("features", NS_STREAMS));
    assert.ok(features.getChild("starttls", NS_TLS)?.getChild("required"), features.toString());
    assert.ok(!c.anyElement((e) => e.is("mechanisms", NS_SASL) || e.getText().includes("PLAIN")), "no mechanism is offered before TLS");
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHB3</auth>");
    const failure = await c.waitForElement((e) => e.is("failure", NS_SASL));
    assert.deepEqual(tree(failure), tree(xml("failure", { xmlns: NS_SASL }, xml("encryption-required"))));
    c.send("<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq>");
    await c.waitForElement(streamError("policy-violation"));
    await c.closed;
  });

  it("data pipelined after <starttls/> is discarded, never processed", async () => {
    const c = await RawClient.open(server.ports.c2s!, false);
    c.send(header());
    await c.waitForElement((e) => e.is("features", NS_STREAMS));
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><iq type='set' id='smuggled'><query xmlns='jabber:iq:register'><username>smuggled</username><password>x</password></query></iq>");
    await c.waitForElement((e) => e.is("proceed", NS_TLS));
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(await server.storage.accounts.exists("smuggled@localhost"), false);
    c.close();
  });

  it("a connection that never finishes negotiating is closed with connection-timeout", async () => {
    const c = await RawClient.open(server.ports.c2sDirectTls!, true);
    c.send(header());
    await c.waitForElement(streamError("connection-timeout"), 5000);
    await c.closed;
  });

  describe("after authentication", () => {
    let alice: RawClient;
    before(async () => { alice = await rawSession(server.ports.c2sDirectTls!, "alice", "pw", "hostile"); });
    after(() => alice.close());

    it("a bad 'to' JID → jid-malformed", async () => {
      alice.send("<message to='a@b@c' id='jm'><body>x</body></message>");
      await alice.waitForElement(errorReply("jm", "jid-malformed"));
    });
    it("an iq without a child, with two children, or with a bad type → bad-request", async () => {
      alice.send("<iq type='get' id='nochild' to='localhost'/>");
      await alice.waitForElement(errorReply("nochild", "bad-request"));
      alice.send("<iq type='get' id='two' to='localhost'><ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/></iq>");
      await alice.waitForElement(errorReply("two", "bad-request"));
      alice.send("<iq type='wrong' id='badtype' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
      await alice.waitForElement(errorReply("badtype", "bad-request"));
    });
    it("an iq with an unknown namespace → service-unavailable; to a remote domain → remote-server-not-found", async () => {
      alice.send("<iq type='get' id='unk' to='localhost'><x xmlns='urn:nope'/></iq>");
      await alice.waitForElement(errorReply("unk", "service-unavailable"));
      alice.send("<message to='someone@remote.example' id='rem'><body>x</body></message>");
      await alice.waitForElement(errorReply("rem", "remote-server-not-found"));
    });
    it("a spoofed 'from' is overwritten; a forged roster push cannot be sent as the victim", async () => {
      const mark = bystander.elements.length;
      alice.send("<message to='bob@localhost/bystander' from='bob@localhost' id='spoof'><body>x</body></message>");
      const m = await bystander.waitForElement((e: Element) => e.is("message") && e.attrs.id === "spoof", 5000, mark);
      assert.equal(m.attrs.from, "alice@localhost/hostile");
    });
    it("a second bind → unexpected-request", async () => {
      alice.send("<iq type='set' id='rebind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>x</resource></bind></iq>");
      await alice.waitForElement(errorReply("rebind", "unexpected-request"));
    });
    it("an oversized stanza → policy-violation, and the bystander is still served", async () => {
      const c = await rawSession(server.ports.c2sDirectTls!, "alice", "pw", "big");
      c.send(`<message to='bob@localhost'><body>${"x".repeat(262144)}</body></message>`);
      await c.waitForElement(streamError("policy-violation"));
      await c.closed;
      const mark = bystander.elements.length;
      bystander.send("<iq type='get' id='still' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>");
      await bystander.waitForElement(iqResult("still"), 5000, mark);
    });
  });

  it("a bound client that sends </stream:stream> gets the closing tag back", async () => {
    const c = await rawSession(server.ports.c2sDirectTls!, "alice", "pw", "closer");
    const mark = c.text.length;
    c.send("</stream:stream>");
    await c.waitFor(streamClose, 5000, mark);
    await c.closed;
  });

  it("after all of the above the bystander session is still bound", () => {
    assert.ok(server.sessions.get("bob@localhost/bystander"));
  });
});
