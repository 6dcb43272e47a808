/** XEP-0280 Message Carbons end to end with raw sessions; the copies are checked whole, parsed. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { xml, type Element } from "@xmpp/xml";
import { rawSession, descendants, iqResult, tree, type RawClient } from "../helpers/raw.js";

const NS_CARBONS = "urn:xmpp:carbons:2";
const NS_FORWARD = "urn:xmpp:forward:0";
const withId = (id: string) => (e: Element) => e.is("message") && e.attrs.id === id;
/** The message forwarded in a <sent/> or <received/> carbon wrapper `e`, if `e` is one. */
const carbonOf = (e: Element, kind: "sent" | "received") =>
  e.is(kind, NS_CARBONS) ? e.getChild("forwarded", NS_FORWARD)?.getChild("message") : undefined;
/** A top-level message that is a `kind` carbon of the message with `id`. */
const carbon = (kind: "sent" | "received", id: string) => (e: Element) =>
  e.is("message") && e.getChildElements().some((c) => carbonOf(c, kind)?.attrs.id === id);

describe("message carbons (XEP-0280)", () => {
  let server: TestServer;
  const open: RawClient[] = [];
  const session = async (user: string, resource: string, enable: boolean) => {
    const c = await rawSession(server.ports.c2sDirectTls!, user, "pw", resource);
    c.send("<presence/>");
    if (enable) {
      c.send("<iq type='set' id='carbons'><enable xmlns='urn:xmpp:carbons:2'/></iq>");
      await c.waitForElement(iqResult("carbons"));
    }
    open.push(c);
    return c;
  };
  before(async () => {
    server = await startTestServer();
    for (const u of ["alice", "bob"]) await server.accounts.create(`${u}@localhost`, "pw");
  });
  after(async () => {
    for (const c of open) c.close();
    await server.cleanup();
  });

  it("sent and received copies go to the user's other carbons-enabled resources, from the bare JID", async () => {
    const phone = await session("alice", "phone", true);
    const laptop = await session("alice", "laptop", true);
    const old = await session("alice", "old", false);
    const bob = await session("bob", "b", true);
    phone.send("<message to='bob@localhost/b' type='chat' id='c1'><body>from phone</body></message>");
    await bob.waitForElement(withId("c1"));
    const sent = await laptop.waitForElement(carbon("sent", "c1"));
    assert.deepEqual(tree(sent), tree(
      xml("message", { from: "alice@localhost", to: "alice@localhost/laptop", type: "chat" },
        xml("sent", { xmlns: NS_CARBONS },
          xml("forwarded", { xmlns: NS_FORWARD },
            xml("message", { to: "bob@localhost/b", type: "chat", id: "c1", xmlns: "jabber:client", from: "alice@localhost/phone" },
              xml("body", {}, "from phone")))))));
    bob.send("<message to='alice@localhost/phone' type='chat' id='c2'><body>to phone</body></message>");
    await phone.waitForElement(withId("c2"));
    const received = await laptop.waitForElement(carbon("received", "c2"));
    const copy = carbonOf(received.getChild("received", NS_CARBONS)!, "received")!;
    assert.deepEqual([copy.attrs.to, copy.attrs.type], ["alice@localhost/phone", "chat"]);
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(!old.anyElement((e) => e.attrs.id === "c1" || e.attrs.id === "c2"), "a resource without carbons gets no copies");
    assert.ok(!phone.anyElement((e) => carbonOf(e, "sent")?.attrs.id === "c1"), "no copy back to the sender");
  });

  it("<private/> and <no-copy/> messages are not copied; the private marker is stripped", async () => {
    const a1 = await session("alice", "p1", true);
    const a2 = await session("alice", "p2", true);
    const bob = await session("bob", "p", false);
    a1.send("<message to='bob@localhost/p' type='chat' id='priv'><body>x</body><private xmlns='urn:xmpp:carbons:2'/></message>");
    a1.send("<message to='bob@localhost/p' type='chat' id='nocopy'><body>x</body><no-copy xmlns='urn:xmpp:hints'/></message>");
    const got = await bob.waitForElement(withId("priv"));
    assert.ok(!descendants(got).some((e) => e.getName() === "private"), got.toString());
    await bob.waitForElement(withId("nocopy"));
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(!a2.anyElement((e) => e.attrs.id === "priv" || e.attrs.id === "nocopy"));
  });

  it("disable stops the copies", async () => {
    const a1 = await session("alice", "d1", true);
    const a2 = await session("alice", "d2", true);
    a2.send("<iq type='set' id='off'><disable xmlns='urn:xmpp:carbons:2'/></iq>");
    await a2.waitForElement(iqResult("off"));
    const bob = await session("bob", "d", false);
    a1.send("<message to='bob@localhost/d' type='chat' id='afteroff'><body>x</body></message>");
    await bob.waitForElement(withId("afteroff"));
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(!a2.anyElement((e) => e.attrs.id === "afteroff"));
  });

  it("strips forged carbon and archive wrappers that a client sends (CVE-2017-5589 class)", async () => {
    const alice = await session("alice", "victim", true);
    const mallory = await session("bob", "mallory", false);
    mallory.send("<message to='alice@localhost/victim' type='chat' id='forged'><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'>"
      + "<message from='carol@localhost/x' to='alice@localhost' type='chat'><body>I am carol</body></message></forwarded></received>"
      + "<result xmlns='urn:xmpp:mam:2' id='1'><forwarded xmlns='urn:xmpp:forward:0'><message from='carol@localhost/x'><body>me too</body></message></forwarded></result>"
      + "<body>plain</body></message>");
    const got = await alice.waitForElement(withId("forged"));
    assert.equal(got.attrs.from, "bob@localhost/mallory");
    const inside = descendants(got);
    assert.deepEqual(inside.filter((e) => e.getNS() === NS_CARBONS || e.getNS() === "urn:xmpp:mam:2").map(String), []);
    assert.deepEqual(inside.flatMap((e) => e.children).filter((t) => typeof t === "string" && /I am carol|me too/.test(t)), []);
    assert.equal(got.getChildText("body"), "plain");
  });
});
