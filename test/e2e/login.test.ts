/** Registration and login over real TLS: xmpp.js for SCRAM-SHA-1 and PLAIN, raw SCRAM for SHA-256 and -PLUS. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { connect, xml } from "../helpers/xmpp-client.js";
import { RawClient, header, openStream, scramLogin, rawSession } from "../helpers/raw.js";

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
    for (const m of ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]) assert.match(c.text, new RegExp(`<mechanism>${m}</mechanism>`));
    assert.match(c.text, /<channel-binding type='tls-exporter'\/><channel-binding type='tls-server-end-point'\/>/);
    assert.match(c.text, /<limits xmlns='urn:xmpp:stream-limits:0'><max-bytes>8192<\/max-bytes>/);
    assert.match(c.text, /<register xmlns=["']http:\/\/jabber.org\/features\/iq-register["']\/>/);
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
    await c.waitFor(/<\/stream:features>/);
    await c.startTls();
    const mark = c.text.length;
    c.send(header());
    await c.waitFor(/<\/stream:features>/, 5000, mark);
    assert.equal(await scramLogin(c, "SCRAM-SHA-256-PLUS", "alice", "alice-pw", "tls-exporter"), "success");
    c.close();
  });

  it("wrong password → <not-authorized/>; the third failure closes the stream with policy-violation", async () => {
    const c = await openStream(server.ports.c2sDirectTls!);
    assert.match(await scramLogin(c, "SCRAM-SHA-256", "alice", "nope"), /<not-authorized\/>/);
    assert.match(await scramLogin(c, "SCRAM-SHA-256", "ghost", "nope"), /<not-authorized\/>/);
    assert.match(await scramLogin(c, "SCRAM-SHA-256", "alice", "nope"), /<not-authorized\/>/);
    await c.waitFor(/<policy-violation xmlns="urn:ietf:params:xml:ns:xmpp-streams"\/>/);
    await c.closed;
  });

  it("an unoffered mechanism → invalid-mechanism; bad base64 → incorrect-encoding; abort → aborted", async () => {
    const c = await openStream(server.ports.c2sDirectTls!);
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='DIGEST-MD5'/>");
    await c.waitFor(/<invalid-mechanism\/>/);
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>!!!</auth>");
    await c.waitFor(/<incorrect-encoding\/>/);
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>" + Buffer.from("n,,n=alice,r=abc").toString("base64") + "</auth>");
    await c.waitFor(/<challenge/);
    c.send("<abort xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
    await c.waitFor(/<aborted\/>/);
    c.close();
  });

  it("in-band registration (XEP-0077): create, conflict, invalid username; then log in with xmpp.js", async () => {
    const c = await openStream(server.ports.c2sDirectTls!);
    c.send("<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>");
    await c.waitFor(/id="r1"[^>]*>.*<username\/>.*<password\/>/s);
    c.send("<iq type='set' id='r2'><query xmlns='jabber:iq:register'><username>newbie</username><password>s3cret</password></query></iq>");
    await c.waitFor(/<iq type="result" id="r2"\/>/);
    c.send("<iq type='set' id='r3'><query xmlns='jabber:iq:register'><username>newbie</username><password>x</password></query></iq>");
    await c.waitFor(/id="r3".*<conflict xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"\/>/s);
    c.send("<iq type='set' id='r4'><query xmlns='jabber:iq:register'><username>bad name</username><password>x</password></query></iq>");
    await c.waitFor(/id="r4".*<not-acceptable xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"\/>/s);
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
    await first.waitFor(/<conflict xmlns="urn:ietf:params:xml:ns:xmpp-streams"\/>/);
    await first.closed;
    assert.equal(server.sessions.get("alice@localhost/same") !== undefined, true);
    second.close();
  });

  it("a server-generated resource when the client asks for none", async () => {
    const c = await openStream(server.ports.c2sDirectTls!);
    c.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from("\0alice\0alice-pw").toString("base64")}</auth>`);
    await c.waitFor(/<success/);
    c.send(header());
    await c.waitFor(/<session xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional\/><\/session>/);
    c.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
    await c.waitFor(/<jid>alice@localhost\/[A-Za-z0-9_-]{6,}<\/jid>/);
    c.send("<iq type='set' id='s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>");
    await c.waitFor(/<iq type="result" id="s"\/>/);
    c.close();
  });
});
