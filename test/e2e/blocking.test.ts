/** XEP-0191 blocking end to end. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { rawSession, errorReply, iqResult, tree, type RawClient } from "../helpers/raw.js";
import { connect, xml } from "../helpers/xmpp-client.js";

const NS_BLOCKING = "urn:xmpp:blocking";
const NS_BLOCKED = "urn:xmpp:blocking:errors";
const withId = (id: string) => (e: { attrs: Record<string, string> }) => e.attrs.id === id;

describe("blocking command (XEP-0191)", () => {
  let server: TestServer;
  const open: RawClient[] = [];
  const session = async (user: string, resource: string) => {
    const c = await rawSession(server.ports.c2sDirectTls!, user, "pw", resource);
    c.send("<presence/>");
    open.push(c);
    return c;
  };
  before(async () => {
    server = await startTestServer();
    for (const u of ["alice", "bob", "carol"]) await server.accounts.create(`${u}@localhost`, "pw");
  });
  after(async () => {
    for (const c of open) c.close();
    await server.cleanup();
  });

  it("block, get the list, pushes to other resources, enforcement both ways, unblock", async () => {
    const alice = await session("alice", "a1");
    const alice2 = await session("alice", "a2");
    const bob = await session("bob", "b");
    alice2.send("<iq type='get' id='bl0'><blocklist xmlns='urn:xmpp:blocking'/></iq>");
    const empty = await alice2.waitForElement(iqResult("bl0"));
    assert.deepEqual(tree(empty).children, [tree(xml("blocklist", { xmlns: NS_BLOCKING }))]);

    alice.send("<iq type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></block></iq>");
    await alice.waitForElement(iqResult("b1"));
    const push = await alice2.waitForElement((e) => e.is("iq") && e.attrs.type === "set" && !!e.getChild("block", NS_BLOCKING));
    assert.deepEqual(tree(push).children, [tree(xml("block", { xmlns: NS_BLOCKING }, xml("item", { jid: "bob@localhost" })))]);
    alice.send("<iq type='get' id='bl1'><blocklist xmlns='urn:xmpp:blocking'/></iq>");
    const list = await alice.waitForElement(withId("bl1"));
    assert.deepEqual(tree(list).children, [tree(xml("blocklist", { xmlns: NS_BLOCKING }, xml("item", { jid: "bob@localhost" })))]);

    // Bob (any resource) cannot reach Alice: service-unavailable, and Alice sees nothing.
    bob.send("<message to='alice@localhost/a1' type='chat' id='in1'><body>hi</body></message>");
    await bob.waitForElement(errorReply("in1", "service-unavailable"));
    bob.send("<iq type='get' id='in2' to='alice@localhost/a1'><ping xmlns='urn:xmpp:ping'/></iq>");
    await bob.waitForElement(errorReply("in2", "service-unavailable"));
    // Alice cannot message Bob: not-acceptable + <blocked/>.
    alice.send("<message to='bob@localhost' type='chat' id='out1'><body>hi</body></message>");
    const refused = await alice.waitForElement(errorReply("out1", "not-acceptable"));
    assert.ok(refused.getChild("error")!.getChild("blocked", NS_BLOCKED), refused.toString());
    await new Promise((r) => setTimeout(r, 100));
    for (const a of [alice, alice2]) assert.ok(!a.anyElement((e) => e.attrs.id === "in1" && !!e.getChild("body")));

    // Carol is unaffected.
    const carol = await session("carol", "c");
    carol.send("<message to='alice@localhost/a1' type='chat' id='ok1'><body>hi</body></message>");
    await alice.waitForElement(withId("ok1"));

    alice.send("<iq type='set' id='u1'><unblock xmlns='urn:xmpp:blocking'/></iq>");
    await alice.waitForElement(iqResult("u1"));
    bob.send("<message to='alice@localhost/a1' type='chat' id='in3'><body>again</body></message>");
    await alice.waitForElement(withId("in3"));
  });

  it("a domain item blocks everyone there; a block without items or with a bad JID is refused", async () => {
    const carol = await session("carol", "d");
    carol.send("<iq type='set' id='d1'><block xmlns='urn:xmpp:blocking'><item jid='remote.example'/></block></iq>");
    await carol.waitForElement(iqResult("d1"));
    carol.send("<message to='someone@remote.example' id='d2'><body>x</body></message>");
    await carol.waitForElement(errorReply("d2", "blocked", NS_BLOCKED));
    carol.send("<iq type='set' id='d3'><block xmlns='urn:xmpp:blocking'/></iq>");
    await carol.waitForElement(errorReply("d3", "bad-request"));
    carol.send("<iq type='set' id='d4'><block xmlns='urn:xmpp:blocking'><item jid='a@b@c'/></block></iq>");
    await carol.waitForElement(errorReply("d4", "jid-malformed"));
  });

  it("a XEP-0377 report filed with a block is kept for the admins; a bad reason is refused", async () => {
    const carol = await session("carol", "r");
    carol.send("<iq type='set' id='rep'><block xmlns='urn:xmpp:blocking'><item jid='spammer@example.net'>"
      + "<report xmlns='urn:xmpp:reporting:1' reason='urn:xmpp:reporting:spam'><stanza-id xmlns='urn:xmpp:sid:0' by='carol@localhost' id='123'/>"
      + "<text xml:lang='en'>buy now</text></report></item></block></iq>");
    await carol.waitForElement(iqResult("rep"));
    const [report] = await server.storage.reports.list(1);
    assert.deepEqual({ ...report, at: 0, id: 0 }, { id: 0, at: 0, reporter: "carol@localhost", reported: "spammer@example.net", reason: "spam", text: "buy now", stanzaIds: ["123"] });
    carol.send("<iq type='set' id='rep2'><block xmlns='urn:xmpp:blocking'><item jid='x@example.net'>"
      + "<report xmlns='urn:xmpp:reporting:1' reason='because'/></item></block></iq>");
    await carol.waitForElement((e) => e.is("iq") && errorReply("rep2", "bad-request")(e));
    assert.equal((await server.storage.reports.list(10)).length, 1);
    assert.ok(!(await server.storage.blocklist.list("carol@localhost")).includes("x@example.net"), "nothing is blocked by a refused request");
  });

  it("with xmpp.js: a blocked contact cannot reach the user, and reaches them again once unblocked", async () => {
    const dave = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "carol", password: "pw", resource: "xmppjs" });
    const erin = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "bob", password: "pw", resource: "xmppjs" });
    try {
      await dave.xmpp.send(xml("presence"));
      await dave.iq(xml("iq", { type: "set" }, xml("block", { xmlns: "urn:xmpp:blocking" }, xml("item", { jid: "bob@localhost" }))));
      await erin.xmpp.send(xml("message", { to: "carol@localhost/xmppjs", type: "chat", id: "blocked" }, xml("body", {}, "hi")));
      const bounce = await erin.waitFor((s) => s.attrs.id === "blocked" && s.attrs.type === "error");
      assert.ok(bounce.getChild("error")!.getChild("service-unavailable", "urn:ietf:params:xml:ns:xmpp-stanzas"));
      assert.ok(!dave.inbox.some((s) => s.attrs.id === "blocked"));
      await dave.iq(xml("iq", { type: "set" }, xml("unblock", { xmlns: "urn:xmpp:blocking" }, xml("item", { jid: "bob@localhost" }))));
      await erin.xmpp.send(xml("message", { to: "carol@localhost/xmppjs", type: "chat", id: "unblocked" }, xml("body", {}, "hi again")));
      await dave.waitFor((s) => s.attrs.id === "unblocked");
    } finally {
      await dave.stop();
      await erin.stop();
    }
  });
});
