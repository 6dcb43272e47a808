/** XEP-0163 PEP end to end with xmpp.js: OMEMO keys, avatars, access models, +notify, last item on presence. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { announceCaps, connect, xml, type Connected } from "../helpers/xmpp-client.js";
import type { Element } from "@xmpp/xml";
import { rawSession } from "../helpers/raw.js";
import { capsVerification } from "../../src/xmpp/caps.js";

const PUBSUB = "http://jabber.org/protocol/pubsub";
const EVENT = `${PUBSUB}#event`;
const ERRORS = `${PUBSUB}#errors`;

const options = (fields: Record<string, string>) => xml("publish-options", {}, xml("x", { xmlns: "jabber:x:data", type: "submit" },
  xml("field", { var: "FORM_TYPE", type: "hidden" }, xml("value", {}, `${PUBSUB}#publish-options`)),
  ...Object.entries(fields).map(([k, v]) => xml("field", { var: k }, xml("value", {}, v)))));
const publishIq = (node: string, id: string | undefined, payload: Element, opts?: Record<string, string>) =>
  xml("iq", { type: "set" }, xml("pubsub", { xmlns: PUBSUB }, xml("publish", { node }, xml("item", id ? { id } : {}, payload)), ...(opts ? [options(opts)] : [])));
const itemsIq = (owner: string, node: string) => xml("iq", { type: "get", to: owner }, xml("pubsub", { xmlns: PUBSUB }, xml("items", { node })));
/** The error condition and pubsub#errors condition of a failed IQ. */
async function failure(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    const e = err as { condition?: string; element?: Element };
    // xmpp.js keeps the <error/> element itself.
    const app = e.element?.children.find((c) => typeof c !== "string" && (c as Element).attrs.xmlns === ERRORS) as Element | undefined;
    return app ? `${e.condition}+${app.name}` : String(e.condition);
  }
  return "no error";
}
const isEvent = (node: string, from: string) => (s: Element) => s.name === "message" && s.attrs.from === from && s.getChild("event", EVENT)?.getChild("items")?.attrs.node === node;

describe("personal eventing (XEP-0163)", () => {
  let server: TestServer;
  const clients: Connected[] = [];
  const login = async (username: string, resource: string) => {
    const c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username, password: "pw", resource });
    clients.push(c);
    return c;
  };
  before(async () => {
    server = await startTestServer();
    for (const u of ["alice", "bob", "carol", "dave"]) await server.accounts.create(`${u}@localhost`, "pw");
    // alice and bob are mutual contacts; carol and dave are strangers to everyone.
    for (const [a, b] of [["alice", "bob"], ["bob", "alice"]]) {
      await server.storage.roster.put(`${a}@localhost`, { jid: `${b}@localhost`, groups: ["friends"], subscription: "both", ask: false, approved: false });
    }
  });
  after(async () => {
    for (const c of clients) await c.stop();
    await server.cleanup();
  });

  it("accounts are PEP services with publish-options, and the server shows its own caps", async () => {
    const alice = await login("alice", "disco");
    const info = await alice.iq(xml("iq", { type: "get", to: "alice@localhost" }, xml("query", { xmlns: "http://jabber.org/protocol/disco#info" })));
    const q = info.getChild("query")!;
    assert.ok(q.getChildren("identity").some((i) => i.attrs.category === "pubsub" && i.attrs.type === "pep"));
    const features = q.getChildren("feature").map((f) => f.attrs.var);
    for (const f of [PUBSUB, `${PUBSUB}#publish`, `${PUBSUB}#publish-options`, `${PUBSUB}#access-open`, `${PUBSUB}#auto-create`, `${PUBSUB}#last-published`]) assert.ok(features.includes(f), f);
    // The <c/> the server put in its stream features must name a node#ver its disco#info answers.
    const raw = await rawSession(server.ports.c2sDirectTls!, "dave", "pw", "caps");
    const c = raw.elements.filter((e) => e.is("features", "http://etherx.jabber.org/streams"))
      .map((f) => f.getChild("c", "http://jabber.org/protocol/caps")).find((e) => e !== undefined);
    raw.close();
    assert.ok(c, "caps in stream features");
    assert.equal(c.attrs.hash, "sha-1");
    const { node, ver } = c.attrs as { node: string; ver: string };
    assert.ok(node && ver, c.toString());
    const byNode = await alice.iq(xml("iq", { type: "get", to: "localhost" }, xml("query", { xmlns: "http://jabber.org/protocol/disco#info", node: `${node}#${ver}` })));
    const answered = byNode.getChild("query")!;
    assert.equal(capsVerification(answered.getChildren("identity").map((i) => ({ category: i.attrs.category, type: i.attrs.type, name: i.attrs.name })),
      answered.getChildren("feature").map((f) => f.attrs.var)), ver, "the advertised ver hashes the server's disco#info");
  });

  it("OMEMO: device list and bundle published with access_model=open are fetched by a non-contact", async () => {
    const alice = await login("alice", "omemo");
    const carol = await login("carol", "omemo");
    for (const [node, payload] of [
      ["urn:xmpp:omemo:2:devices", xml("devices", { xmlns: "urn:xmpp:omemo:2" }, xml("device", { id: "12345" }))],
      ["eu.siacs.conversations.axolotl.devicelist", xml("list", { xmlns: "eu.siacs.conversations.axolotl" }, xml("device", { id: "12345" }))],
    ] as const) {
      await alice.iq(publishIq(node, "current", payload, { "pubsub#access_model": "open" }));
    }
    const bundle = xml("bundle", { xmlns: "urn:xmpp:omemo:2" }, xml("spk", { id: "1" }, "c3Br"), xml("ik", {}, "aWs="));
    await alice.iq(publishIq("urn:xmpp:omemo:2:bundles", "12345", bundle, { "pubsub#access_model": "open", "pubsub#max_items": "max" }));

    const devices = await carol.iq(itemsIq("alice@localhost", "urn:xmpp:omemo:2:devices"));
    assert.equal(devices.getChild("pubsub")!.getChild("items")!.getChild("item")!.getChild("devices")!.getChild("device")!.attrs.id, "12345");
    const legacy = await carol.iq(itemsIq("alice@localhost", "eu.siacs.conversations.axolotl.devicelist"));
    assert.equal(legacy.getChild("pubsub")!.getChild("items")!.getChild("item")!.attrs.id, "current");
    const bundles = await carol.iq(itemsIq("alice@localhost", "urn:xmpp:omemo:2:bundles"));
    const item = bundles.getChild("pubsub")!.getChild("items")!.getChild("item")!;
    assert.equal(item.attrs.id, "12345");
    assert.equal(item.getChild("bundle")!.getChildText("ik"), "aWs=");
  });

  it("access models: presence, roster and whitelist refuse strangers with the XEP-0060 errors; precondition conflicts can be fixed", async () => {
    const alice = await login("alice", "access");
    const bob = await login("bob", "access");
    const carol = await login("carol", "access");
    await alice.iq(publishIq("urn:xmpp:avatar:metadata", "h1", xml("metadata", { xmlns: "urn:xmpp:avatar:metadata" })));
    assert.equal(await failure(carol.iq(itemsIq("alice@localhost", "urn:xmpp:avatar:metadata"))), "not-authorized+presence-subscription-required");
    const ok = await bob.iq(itemsIq("alice@localhost", "urn:xmpp:avatar:metadata"));
    assert.equal(ok.getChild("pubsub")!.getChild("items")!.getChild("item")!.attrs.id, "h1");

    await alice.iq(publishIq("storage:bookmarks", "current", xml("storage", { xmlns: "storage:bookmarks" }), { "pubsub#access_model": "whitelist", "pubsub#persist_items": "true" }));
    assert.equal(await failure(bob.iq(itemsIq("alice@localhost", "storage:bookmarks"))), "not-allowed+closed-node", "XEP-0223 private data");
    const own = await alice.iq(itemsIq("alice@localhost", "storage:bookmarks"));
    assert.ok(own.getChild("pubsub")!.getChild("items")!.getChild("item")!.getChild("storage"));

    await alice.iq(publishIq("urn:example:friends", "x", xml("x", { xmlns: "urn:example" }), { "pubsub#access_model": "roster" }));
    assert.equal(await failure(bob.iq(itemsIq("alice@localhost", "urn:example:friends"))), "not-authorized+not-in-roster-group");

    // Publishing with options that contradict the node: conflict; the client reconfigures and retries.
    assert.equal(await failure(alice.iq(publishIq("urn:xmpp:avatar:metadata", "h2", xml("metadata", { xmlns: "urn:xmpp:avatar:metadata" }), { "pubsub#access_model": "open" }))),
      "conflict+precondition-not-met");
    const form = await alice.iq(xml("iq", { type: "get" }, xml("pubsub", { xmlns: `${PUBSUB}#owner` }, xml("configure", { node: "urn:xmpp:avatar:metadata" }))));
    const field = form.getChild("pubsub")!.getChild("configure")!.getChild("x")!.getChildren("field").find((f) => f.attrs.var === "pubsub#access_model")!;
    assert.equal(field.getChildText("value"), "presence");
    await alice.iq(xml("iq", { type: "set" }, xml("pubsub", { xmlns: `${PUBSUB}#owner` }, xml("configure", { node: "urn:xmpp:avatar:metadata" },
      xml("x", { xmlns: "jabber:x:data", type: "submit" },
        xml("field", { var: "FORM_TYPE", type: "hidden" }, xml("value", {}, `${PUBSUB}#node_config`)),
        xml("field", { var: "pubsub#access_model" }, xml("value", {}, "open")))))));
    await alice.iq(publishIq("urn:xmpp:avatar:metadata", "h2", xml("metadata", { xmlns: "urn:xmpp:avatar:metadata" }), { "pubsub#access_model": "open" }));
    const now = await carol.iq(itemsIq("alice@localhost", "urn:xmpp:avatar:metadata"));
    assert.equal(now.getChild("pubsub")!.getChild("items")!.getChild("item")!.attrs.id, "h2", "open now, and max_items 1 kept only the newest");

    const items = await bob.iq(xml("iq", { type: "get", to: "alice@localhost" }, xml("query", { xmlns: "http://jabber.org/protocol/disco#items" })));
    const nodes = items.getChild("query")!.getChildren("item").map((i) => i.attrs.node);
    assert.ok(nodes.includes("urn:xmpp:avatar:metadata"));
    assert.ok(!nodes.includes("storage:bookmarks"), "disco#items lists only nodes the requester may read");
  });

  it("answers malformed and foreign requests with the exact errors", async () => {
    const dave = await login("dave", "errors");
    assert.equal(await failure(dave.iq(xml("iq", { type: "set", to: "alice@localhost" }, xml("pubsub", { xmlns: PUBSUB }, xml("publish", { node: "x" }, xml("item", {}, xml("x", { xmlns: "y" }))))))), "forbidden");
    assert.equal(await failure(dave.iq(xml("iq", { type: "set" }, xml("pubsub", { xmlns: PUBSUB }, xml("publish", {}, xml("item", {}, xml("x", { xmlns: "y" }))))))), "bad-request+nodeid-required");
    assert.equal(await failure(dave.iq(xml("iq", { type: "set" }, xml("pubsub", { xmlns: PUBSUB }, xml("publish", { node: "x" }, xml("item", {})))))), "bad-request+payload-required");
    assert.equal(await failure(dave.iq(itemsIq("alice@localhost", "no-such-node"))), "item-not-found");
    assert.equal(await failure(dave.iq(xml("iq", { type: "set" }, xml("pubsub", { xmlns: PUBSUB }, xml("subscribe", { node: "x", jid: "dave@localhost" }))))), "feature-not-implemented+unsupported");
  });

  it("notifies +notify resources of contacts and the owner, not strangers; last item on presence; retract and delete", async () => {
    const NODE = "http://jabber.org/protocol/nick";
    const alice = await login("alice", "nick");
    const bob = await login("bob", "nick");
    const carol = await login("carol", "nick");
    await announceCaps(alice, [`${NODE}+notify`]);
    await announceCaps(bob, [`${NODE}+notify`]);
    await announceCaps(carol, [`${NODE}+notify`]);
    await new Promise((r) => setTimeout(r, 300)); // caps lookups
    await alice.iq(publishIq(NODE, "current", xml("nick", { xmlns: NODE }, "Alice"), { "pubsub#access_model": "presence" }));
    const toBob = await bob.waitFor(isEvent(NODE, "alice@localhost"));
    assert.equal(toBob.attrs.type, "headline");
    assert.equal(toBob.getChild("event", EVENT)!.getChild("items")!.getChild("item")!.getChildText("nick"), "Alice");
    await alice.waitFor(isEvent(NODE, "alice@localhost"));
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(!carol.inbox.some(isEvent(NODE, "alice@localhost")), "a stranger with +notify gets nothing from a presence node");

    // A new resource of bob with +notify gets the last item when it comes online.
    const bob2 = await login("bob", "nick2");
    await announceCaps(bob2, [`${NODE}+notify`]);
    const last = await bob2.waitFor(isEvent(NODE, "alice@localhost"));
    assert.ok(last.getChild("delay", "urn:xmpp:delay"));
    // Without +notify, nothing.
    const bob3 = await login("bob", "nick3");
    await announceCaps(bob3, []);
    await alice.iq(xml("iq", { type: "set" }, xml("pubsub", { xmlns: PUBSUB }, xml("retract", { node: NODE, notify: "true" }, xml("item", { id: "current" })))));
    const retracted = await bob.waitFor((s) => s.getChild("event", EVENT)?.getChild("items")?.getChild("retract")?.attrs.id === "current");
    assert.ok(retracted);
    await alice.iq(xml("iq", { type: "set" }, xml("pubsub", { xmlns: `${PUBSUB}#owner` }, xml("delete", { node: NODE }))));
    await bob.waitFor((s) => s.getChild("event", EVENT)?.getChild("delete")?.attrs.node === NODE);
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(!bob3.inbox.some((s) => s.getChild("event", EVENT)), "no +notify, no notifications");
    assert.equal(await failure(bob.iq(itemsIq("alice@localhost", NODE))), "item-not-found", "deleted");
  });
});
