/** Delivery rules that need their own server configuration: offline queue limit, priorities, multi-resource. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { isDeepStrictEqual } from "node:util";
import { xml, type Element } from "@xmpp/xml";
import { rawSession, errorReply, iqResult, NS_STANZAS, tree, type RawClient } from "../helpers/raw.js";

const withId = (id: string) => (e: Element) => e.attrs.id === id;
/** A roster result or push carrying exactly this item. */
const rosterItem = (attrs: Record<string, string>) => (e: Element) =>
  e.is("iq") && !!e.getChild("query", "jabber:iq:roster")?.getChildren("item").some((i) => isDeepStrictEqual(tree(i), tree(xml("item", attrs))));
const presence = (from: string, type?: string) => (e: Element) => e.is("presence") && e.attrs.from === from && e.attrs.type === type;

describe("delivery rules (e2e)", () => {
  let server: TestServer;
  const open: RawClient[] = [];
  const session = async (user: string, resource: string) => {
    const c = await rawSession(server.ports.c2sDirectTls!, user, "pw", resource);
    open.push(c);
    return c;
  };
  before(async () => {
    server = await startTestServer({ modules: { offline: { maxPerUser: 2 } } });
    for (const u of ["alice", "bob", "carol"]) await server.accounts.create(`${u}@localhost`, "pw");
  });
  after(async () => {
    for (const c of open) c.close();
    await server.cleanup();
  });

  it("a full offline queue answers service-unavailable (XEP-0160), never a silent drop", async () => {
    const a = await session("alice", "q");
    for (const id of ["o1", "o2", "o3"]) a.send(`<message to='bob@localhost' type='chat' id='${id}'><body>${id}</body></message>`);
    const full = await a.waitForElement(errorReply("o3", "service-unavailable"));
    assert.equal(full.getChild("error")!.getChildText("text", NS_STANZAS), "The recipient's offline queue is full");
    assert.ok(!a.anyElement((e) => e.attrs.id === "o1" && e.attrs.type === "error"));
    assert.equal(await server.storage.offline.count("bob@localhost"), 2);
  });

  it("bare-JID chat goes to every resource of the top priority, not to lower or negative ones", async () => {
    const high1 = await session("carol", "h1");
    const high2 = await session("carol", "h2");
    const low = await session("carol", "low");
    const neg = await session("carol", "neg");
    high1.send("<presence><priority>5</priority></presence>");
    high2.send("<presence><priority>5</priority></presence>");
    low.send("<presence><priority>1</priority></presence>");
    neg.send("<presence><priority>-1</priority></presence>");
    await new Promise((r) => setTimeout(r, 200));
    const a = await session("alice", "s");
    a.send("<message to='carol@localhost' type='chat' id='prio'><body>x</body></message>");
    await high1.waitForElement(withId("prio"));
    await high2.waitForElement(withId("prio"));
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(!low.anyElement(withId("prio")));
    assert.ok(!neg.anyElement(withId("prio")));
    // A message to a full JID that is gone falls back to the bare JID (RFC 6121 §8.5.3.2.1).
    a.send("<message to='carol@localhost/gone' type='chat' id='fallback'><body>x</body></message>");
    await high1.waitForElement(withId("fallback"));
  });
});

describe("presence details (e2e)", () => {
  let server: TestServer;
  const open: RawClient[] = [];
  const session = async (user: string, resource: string) => {
    const c = await rawSession(server.ports.c2sDirectTls!, user, "pw", resource);
    c.send("<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>");
    await c.waitForElement(iqResult("roster"));
    open.push(c);
    return c;
  };
  before(async () => {
    server = await startTestServer();
    for (const u of ["ann", "ben", "cat"]) await server.accounts.create(`${u}@localhost`, "pw");
  });
  after(async () => {
    for (const c of open) c.close();
    await server.cleanup();
  });

  it("pre-approval (RFC 6121 §3.4): a later request is approved without asking the user", async () => {
    const ann = await session("ann", "a");
    ann.send("<presence to='ben@localhost' type='subscribed'/>");
    await ann.waitForElement(rosterItem({ jid: "ben@localhost", subscription: "none", approved: "true" }));
    const ben = await session("ben", "b");
    ben.send("<presence/>");
    ann.send("<presence/>");
    ben.send("<presence to='ann@localhost' type='subscribe'/>");
    await ben.waitForElement(presence("ann@localhost", "subscribed"));
    await ben.waitForElement((e) => e.is("presence") && e.attrs.from === "ann@localhost/a");
    assert.ok(!ann.anyElement((e) => e.attrs.type === "subscribe"), "ann was not asked");
    await ann.waitForElement(rosterItem({ jid: "ben@localhost", subscription: "from" }));
  });

  it("a subscription request to an offline user is delivered when they come online", async () => {
    const ann = await session("ann", "a2");
    ann.send("<presence to='cat@localhost' type='subscribe'/>");
    await new Promise((r) => setTimeout(r, 200));
    assert.equal((await server.storage.subscriptionRequests.list("cat@localhost")).length, 1);
    const cat = await session("cat", "c");
    cat.send("<presence/>");
    await cat.waitForElement(presence("ann@localhost", "subscribe"));
    // Denying it removes the request and tells ann.
    cat.send("<presence to='ann@localhost' type='unsubscribed'/>");
    await ann.waitForElement(rosterItem({ jid: "cat@localhost", subscription: "none" }));
    assert.equal((await server.storage.subscriptionRequests.list("cat@localhost")).length, 0);
  });

  it("directed presence reaches a non-contact, and its end is announced when the session closes", async () => {
    const cat = await session("cat", "d");
    cat.send("<presence/>");
    const ben = await session("ben", "d");
    const mark = cat.elements.length;
    ben.send("<presence to='cat@localhost/d'><status>hi</status></presence>");
    await cat.waitForElement((e) => presence("ben@localhost/d")(e) && e.getChildText("status") === "hi", 5000, mark);
    ben.close();
    await cat.waitForElement(presence("ben@localhost/d", "unavailable"), 5000, mark);
  });
});
