/** XEP-0402 bookmarks with #compat and XEP-0411 conversion from XEP-0048 (private XML and PEP), with xmpp.js. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";

const PUBSUB = "http://jabber.org/protocol/pubsub";
const NATIVE = "urn:xmpp:bookmarks:1";
const settle = () => new Promise((r) => setTimeout(r, 200));

describe("bookmarks (XEP-0402 #compat, XEP-0411, XEP-0048)", () => {
  let server: TestServer;
  let c: Connected;
  before(async () => {
    server = await startTestServer();
    await server.accounts.create("alice@localhost", "pw");
    c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "alice", password: "pw" });
  });
  after(async () => {
    await c.stop();
    await server.cleanup();
  });
  const nativeItems = async () => {
    const r = await c.iq(xml("iq", { type: "get" }, xml("pubsub", { xmlns: PUBSUB }, xml("items", { node: NATIVE }))));
    return r.getChild("pubsub")!.getChild("items")!.getChildren("item");
  };
  const privateBookmarks = async () => {
    const r = await c.iq(xml("iq", { type: "get" }, xml("query", { xmlns: "jabber:iq:private" }, xml("storage", { xmlns: "storage:bookmarks" }))));
    return r.getChild("query")!.getChild("storage")!;
  };

  it("advertises #compat and conversion", async () => {
    const info = await c.iq(xml("iq", { type: "get", to: "alice@localhost" }, xml("query", { xmlns: "http://jabber.org/protocol/disco#info" })));
    const features = info.getChild("query")!.getChildren("feature").map((f) => f.attrs.var);
    assert.ok(features.includes(`${NATIVE}#compat`));
    assert.ok(features.includes("urn:xmpp:bookmarks-conversion:0"));
  });

  it("legacy bookmarks in private XML become native items, and removals are retracted", async () => {
    await c.iq(xml("iq", { type: "set" }, xml("query", { xmlns: "jabber:iq:private" }, xml("storage", { xmlns: "storage:bookmarks" },
      xml("conference", { jid: "team@conference.localhost", name: "Team", autojoin: "1" }, xml("nick", {}, "al")),
      xml("conference", { jid: "old@conference.localhost", name: "Old" }),
      xml("url", { name: "Home", url: "https://example.org" })))));
    await settle();
    let items = await nativeItems();
    assert.deepEqual(items.map((i) => i.attrs.id).sort(), ["old@conference.localhost", "team@conference.localhost"]);
    const team = items.find((i) => i.attrs.id === "team@conference.localhost")!.getChild("conference", NATIVE)!;
    assert.deepEqual([team.attrs.name, team.attrs.autojoin, team.getChildText("nick")], ["Team", "true", "al"]);
    const config = await c.iq(xml("iq", { type: "get" }, xml("pubsub", { xmlns: `${PUBSUB}#owner` }, xml("configure", { node: NATIVE }))));
    const fields = Object.fromEntries(config.getChild("pubsub")!.getChild("configure")!.getChild("x")!.getChildren("field").map((f) => [f.attrs.var, f.getChildText("value")]));
    assert.equal(fields["pubsub#access_model"], "whitelist");
    assert.equal(fields["pubsub#send_last_published_item"], "never");

    await c.iq(xml("iq", { type: "set" }, xml("query", { xmlns: "jabber:iq:private" }, xml("storage", { xmlns: "storage:bookmarks" },
      xml("conference", { jid: "team@conference.localhost", name: "Team", autojoin: "true" }, xml("nick", {}, "al")),
      xml("url", { name: "Home", url: "https://example.org" })))));
    await settle();
    items = await nativeItems();
    assert.deepEqual(items.map((i) => i.attrs.id), ["team@conference.localhost"]);
  });

  it("native bookmarks set by a modern client are what a legacy client reads, URLs kept", async () => {
    await c.iq(xml("iq", { type: "set" }, xml("pubsub", { xmlns: PUBSUB },
      xml("publish", { node: NATIVE }, xml("item", { id: "new@conference.localhost" }, xml("conference", { xmlns: NATIVE, name: "New", autojoin: "true" }, xml("password", {}, "pw")))),
      xml("publish-options", {}, xml("x", { xmlns: "jabber:x:data", type: "submit" },
        xml("field", { var: "FORM_TYPE", type: "hidden" }, xml("value", {}, `${PUBSUB}#publish-options`)),
        xml("field", { var: "pubsub#persist_items" }, xml("value", {}, "true")),
        xml("field", { var: "pubsub#max_items" }, xml("value", {}, "max")),
        xml("field", { var: "pubsub#send_last_published_item" }, xml("value", {}, "never")),
        xml("field", { var: "pubsub#access_model" }, xml("value", {}, "whitelist")))))));
    await settle();
    const legacy = await privateBookmarks();
    const conferences = legacy.getChildren("conference");
    assert.deepEqual(conferences.map((x) => x.attrs.jid).sort(), ["new@conference.localhost", "team@conference.localhost"]);
    const added = conferences.find((x) => x.attrs.jid === "new@conference.localhost")!;
    assert.deepEqual([added.attrs.name, added.attrs.autojoin, added.getChildText("password")], ["New", "true", "pw"]);
    assert.equal(legacy.getChild("url")?.attrs.url, "https://example.org", "legacy-only URL bookmarks survive");

    await c.iq(xml("iq", { type: "set" }, xml("pubsub", { xmlns: PUBSUB }, xml("retract", { node: NATIVE, notify: "true" }, xml("item", { id: "team@conference.localhost" })))));
    await settle();
    assert.deepEqual((await privateBookmarks()).getChildren("conference").map((x) => x.attrs.jid), ["new@conference.localhost"]);
  });

  it("XEP-0048 bookmarks in the PEP node storage:bookmarks are converted too, without an echo loop", async () => {
    await c.iq(xml("iq", { type: "set" }, xml("pubsub", { xmlns: PUBSUB },
      xml("publish", { node: "storage:bookmarks" }, xml("item", { id: "current" }, xml("storage", { xmlns: "storage:bookmarks" },
        xml("conference", { jid: "pep@conference.localhost", name: "Via PEP", autojoin: "true" })))),
      xml("publish-options", {}, xml("x", { xmlns: "jabber:x:data", type: "submit" },
        xml("field", { var: "FORM_TYPE", type: "hidden" }, xml("value", {}, `${PUBSUB}#publish-options`)),
        xml("field", { var: "pubsub#access_model" }, xml("value", {}, "whitelist")))))));
    await settle();
    assert.deepEqual((await nativeItems()).map((i) => i.attrs.id), ["pep@conference.localhost"]);
    await c.iq(xml("iq", { type: "set" }, xml("pubsub", { xmlns: PUBSUB },
      xml("publish", { node: NATIVE }, xml("item", { id: "two@conference.localhost" }, xml("conference", { xmlns: NATIVE, name: "Two" }))))));
    await settle();
    const pepLegacy = await c.iq(xml("iq", { type: "get" }, xml("pubsub", { xmlns: PUBSUB }, xml("items", { node: "storage:bookmarks" }))));
    const stored = pepLegacy.getChild("pubsub")!.getChild("items")!.getChild("item")!.getChild("storage")!;
    assert.deepEqual(stored.getChildren("conference").map((x) => x.attrs.jid).sort(), ["pep@conference.localhost", "two@conference.localhost"]);
  });
});
