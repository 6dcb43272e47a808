/** Registration and login over real TLS: xmpp.js for SCRAM-SHA-1 and PLAIN, raw SCRAM for SHA-256 and -PLUS. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { connect, xml } from "../helpers/xmpp-client.js";
import type { Element } from "@xmpp/xml";
import { RawClient, header, openStream, scramLogin, rawSession, saslConditions, errorReply, iqResult, streamError, NS_STREAMS } from "../helpers/raw.js";

const NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl";
const isFeatures = (e: Element) => e.is("features", NS_STREAMS);
/** A SASL <failure/> with this condition. */
const saslFailure = (condition: string) => (e: Element) => e.is("failure", NS_SASL) && saslConditions(e).includes(condition);
/** An IQ result with nothing in it. */
const emptyResult = (id: string) => (e: Element) => iqResult(id)(e) && e.children.length === 0;

describe("login and registration (e2e over TLS)", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
    await server.accounts.create("alice@localhost", "alice-pw");
  });
  after(() => server.cleanup());

  it("xmpp.js logs in with SCRAM-SHA-1 over STARTTLS and binds its resource", async () => {
    const c = await connect({ port: server.ports.c2s!, username: "alice", password: "alice-pw", resource: "laptop", mechanism: "SCRAM-SHA-1" });
    assert.equal(c.jid, "alice@localhost/laptop");
    await c.stop();
  });

  it("xmpp.js logs in with PLAIN over direct TLS (XEP-0368)", async () => {
    const c = await connect({ port: server.ports.c2sDirectTls!, username: "alice", password: "alice-pw", directTls: true, mechanism: "PLAIN" });
    assert.match(c.jid, /^alice@localhost\/.+/);
    await c.stop();
  });

  it("xmpp.js is refused with not-authorized for a wrong password", async () => {
    await assert.rejects(connect({ port: server.ports.c2s!, username: "alice", password: "wrong", mechanism: "SCRAM-SHA-1" }), /not-authorized/);
  });

  it("advertises every mechanism, channel binding and stream limits after TLS", async () => {
    const c = await openStream(server.ports.c2sDirectTls!);
    const features = c.elements.find(isFeatures)!;
    const mechanisms = features.getChild("mechanisms", NS_SASL)?.getChildren("mechanism").map((m) => m.getText()) ?? [];
    for (const m of ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]) assert.ok(mechanisms.includes(m), m);
    assert.deepEqual(features.getChild("sasl-channel-binding", "urn:xmpp:sasl-cb:0")?.getChildren("channel-binding").map((b) => b.attrs.type), ["tls-exporter", "tls-server-end-point"]);
    assert.equal(features.getChild("limits", "urn:xmpp:stream-limits:0")?.getChildText("max-bytes"), "8192");
    assert.ok(features.getChild("register", "http://jabber.org/features/iq-register"), features.toString());
    c.close();
  });

  const scramCases: Array<[string, "tls-exporter" | "tls-server-end-point" | undefined]> = [
    ["SCRAM-SHA-256", undefined], ["SCRAM-SHA-1", undefined],
    ["SCRAM-SHA-256-PLUS", "tls-exporter"], ["SCRAM-SHA-256-PLUS", "tls-server-end-point"], ["SCRAM-SHA-1-PLUS", "tls-exporter"],
  ];
  for (const [mech, cb] of scramCases) {
    it(`${mech}${cb ? ` with ${cb}` : ""}: success, and the server signature verifies`, async () => {
      const c = await openStream(server.ports.c2sDirectTls!);
      assert.equal(await scramLogin(c, mech, "alice", "alice-pw", cb), "success");
      c.close();
    });
  }
  it("SCRAM over STARTTLS with tls-exporter works too", async () => {
    const c = await RawClient.open(server.ports.c2s!, false);
    c.send(header());
    await c.waitForElement(isFeatures);
    await c.startTls();
    const mark = c.elements.length;
    c.send(header());
    await c.waitForElement(isFeatures, 5000, mark);
    assert.equal(await scramLogin(c, "SCRAM-SHA-256-PLUS", "alice", "alice-pw", "tls-exporter"), "success");
    c.close();
  });

  it("wrong password → <not-authorized/>; the third failure closes the stream with policy-violation", async () => {
    const c = await openStream(server.ports.c2sDirectTls!);
    for (const user of ["alice", "ghost", "alice"]) {
      const r = await scramLogin(c, "SCRAM-SHA-256", user, "nope");
      assert.ok(typeof r !== "string", r as string);
      assert.deepEqual(saslConditions(r), ["not-authorized"]);
    }
    await c.waitForElement(streamError("policy-violation"));
    await c.closed;
  });

  it("an unoffered mechanism → invalid-mechanism; bad base64 → incorrect-encoding; abort → aborted", async () => {
    const c = await openStream(server.ports.c2sDirectTls!);
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='DIGEST-MD5'/>");
    await c.waitForElement(saslFailure("invalid-mechanism"));
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!!</auth>");
    await c.waitForElement(saslFailure("incorrect-encoding"));
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>" + Buffer.from("n,,n=alice,r=abc").toString("base64") + "</auth>");
    await c.waitForElement((e) => e.is("challenge", NS_SASL));
    c.send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    await c.waitForElement(saslFailure("aborted"));
    c.close();
  });

  it("in-band registration (XEP-0077): create, conflict, invalid username; then log in with xmpp.js", async () => {
    const c = await openStream(server.ports.c2sDirectTls!);
    c.send("<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>");
    const form = (await c.waitForElement(iqResult("r1"))).getChild("query", "jabber:iq:register");
    for (const f of ["username", "password"]) assert.equal(form?.getChild(f)?.children.length, 0, `an empty <${f}/> to fill in`);
    c.send("<iq type='set' id='r2'><query xmlns='jabber:iq:register'><username>newbie</username><password>s3cret</password></query></iq>");
    await c.waitForElement(emptyResult("r2"));
    c.send("<iq type='set' id='r3'><query xmlns='jabber:iq:register'><username>newbie</username><password>x</password></query></iq>");
    await c.waitForElement(errorReply("r3", "conflict"));
    c.send("<iq type='set' id='r4'><query xmlns='jabber:iq:register'><username>bad name</username><password>x</password></query></iq>");
    await c.waitForElement(errorReply("r4", "not-acceptable"));
    c.close();
    const x = await connect({ port: server.ports.c2s!, username: "newbie", password: "s3cret" });
    // Password change, then removal of the account.
    await x.iq(xml("iq", { type: "set" }, xml("query", { xmlns: "jabber:iq:register" }, xml("username", {}, "newbie"), xml("password", {}, "changed"))));
    assert.equal(await server.accounts.checkPassword("newbie@localhost", "changed"), true);
    await x.iq(xml("iq", { type: "set" }, xml("query", { xmlns: "jabber:iq:register" }, xml("remove"))));
    assert.equal(await server.storage.accounts.exists("newbie@localhost"), false);
    await x.stop();
  });

  it("a password change names the user's own username in any form that prepares to it (RFC 7622), and no other", async () => {
    await server.accounts.create("bob@localhost", "bob-pw");
    const bob = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "bob", password: "bob-pw" });
    try {
      const change = (username: string, password: string) =>
        bob.iq(xml("iq", { type: "set" }, xml("query", { xmlns: "jabber:iq:register" }, xml("username", {}, username), xml("password", {}, password))));
      // Fullwidth and upper case: UsernameCaseMapped maps both to "bob".
      await change("\uFF22\uFF2F\uFF22", "bob-pw-2");
      assert.equal(await server.accounts.checkPassword("bob@localhost", "bob-pw-2"), true);
      await assert.rejects(change("alice", "stolen"), (err: { condition?: string }) => err.condition === "not-allowed");
      await assert.rejects(change("bob@localhost", "x"), (err: { condition?: string }) => err.condition === "not-allowed");
      assert.equal(await server.accounts.checkPassword("bob@localhost", "bob-pw-2"), true);
    } finally {
      await bob.stop();
    }
  });

  it("a second session with the same resource replaces the first, which gets <conflict/>", async () => {
    const first = await rawSession(server.ports.c2sDirectTls!, "alice", "alice-pw", "same");
    const second = await rawSession(server.ports.c2sDirectTls!, "alice", "alice-pw", "same");
    await first.waitForElement(streamError("conflict"));
    await first.closed;
    assert.equal(server.sessions.get("alice@localhost/same") !== undefined, true);
    second.close();
  });

  it("a server-generated resource when the client asks for none", async () => {
    const c = await openStream(server.ports.c2sDirectTls!);
    c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from("\0alice\0alice-pw").toString("base64")}</auth>`);
    await c.waitForElement((e) => e.is("success", NS_SASL));
    c.restartParser();
    c.send(header());
    await c.waitForElement((e) => isFeatures(e) && !!e.getChild("session", "urn:ietf:params:xml:ns:xmpp-session")?.getChild("optional"));
    c.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
    const bound = await c.waitForElement(iqResult("b"));
    assert.match(bound.getChild("bind", "urn:ietf:params:xml:ns:xmpp-bind")?.getChildText("jid") ?? "", /^alice@localhost\/[A-Za-z0-9_-]{6,}$/);
    c.send("<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
    await c.waitForElement(emptyResult("s"));
    c.close();
  });
});
