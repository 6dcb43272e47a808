/** XEP-0084 ⇄ XEP-0153 avatar conversion (XEP-0398) end to end with xmpp.js. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { announceCaps, connect, xml, type Connected } from "../helpers/xmpp-client.js";

const PUBSUB = "http://jabber.org/protocol/pubsub";
const DATA = "urn:xmpp:avatar:data";
const METADATA = "urn:xmpp:avatar:metadata";
const publish = (node: string, id: string, payload: ReturnType<typeof xml>) =>
  xml("iq", { type: "set" }, xml("pubsub", { xmlns: PUBSUB }, xml("publish", { node }, xml("item", { id }, payload))));
const photoHash = (s: { getChild(n: string, ns?: string): any }) => s.getChild("x", "vcard-temp:x:update")?.getChildText("photo");
/** A publish with publish-options (XEP-0060 §7.1.5), e.g. the node's access model. */
const publishWith = (node: string, id: string, payload: ReturnType<typeof xml>, options: Record<string, string>) =>
  xml("iq", { type: "set" }, xml("pubsub", { xmlns: PUBSUB }, xml("publish", { node }, xml("item", { id }, payload)),
    xml("publish-options", {}, xml("x", { xmlns: "jabber:x:data", type: "submit" },
      xml("field", { var: "FORM_TYPE", type: "hidden" }, xml("value", {}, `${PUBSUB}#publish-options`)),
      ...Object.entries(options).map(([k, v]) => xml("field", { var: k }, xml("value", {}, v)))))));
const vcardOf = (c: Connected, jid: string) => c.iq(xml("iq", { type: "get", to: jid }, xml("vCard", { xmlns: "vcard-temp" }))).then((r) => r.getChild("vCard")!);

describe("avatars (XEP-0084, XEP-0153, XEP-0398)", () => {
  let server: TestServer;
  const clients: Connected[] = [];
  const login = async (u: string, r: string) => {
    const c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: u, password: "pw", resource: r });
    clients.push(c);
    return c;
  };
  before(async () => {
    server = await startTestServer();
    for (const u of ["alice", "bob", "carol", "dave", "erin", "frank", "gina", "ivan"]) await server.accounts.create(`${u}@localhost`, "pw");
    for (const [a, b] of [["alice", "bob"], ["bob", "alice"], ["carol", "bob"], ["bob", "carol"], ["erin", "frank"], ["frank", "erin"], ["ivan", "frank"], ["frank", "ivan"]]) {
      await server.storage.roster.put(`${a}@localhost`, { jid: `${b}@localhost`, groups: [], subscription: "both", ask: false, approved: false });
    }
  });
  after(async () => {
    for (const c of clients) await c.stop();
    await server.cleanup();
  });

  it("a XEP-0084 avatar notifies contacts, becomes the vCard photo, and its hash rides on presence", async () => {
    const bob = await login("bob", "b");
    await announceCaps(bob, [`${METADATA}+notify`]);
    const alice = await login("alice", "a");
    await alice.xmpp.send(xml("presence"));
    const image = randomBytes(2000);
    const id = createHash("sha1").update(image).digest("hex");
    await alice.iq(publish(DATA, id, xml("data", { xmlns: DATA }, image.toString("base64"))));
    await alice.iq(publish(METADATA, id, xml("metadata", { xmlns: METADATA }, xml("info", { id, bytes: String(image.length), type: "image/png" }))));
    const note = await bob.waitFor((s) => s.getChild("event", `${PUBSUB}#event`)?.getChild("items")?.attrs.node === METADATA);
    assert.equal(note.attrs.from, "alice@localhost");
    const vcard = await bob.iq(xml("iq", { type: "get", to: "alice@localhost" }, xml("vCard", { xmlns: "vcard-temp" })));
    const photo = vcard.getChild("vCard")!.getChild("PHOTO")!;
    assert.equal(photo.getChildText("TYPE"), "image/png");
    assert.deepEqual(Buffer.from(photo.getChildText("BINVAL")!, "base64"), image);
    await alice.xmpp.send(xml("presence", {}, xml("show", {}, "away")));
    const presence = await bob.waitFor((s) => s.name === "presence" && s.attrs.from === "alice@localhost/a" && s.getChildText("show") === "away");
    assert.equal(photoHash(presence), id);
    const info = await alice.iq(xml("iq", { type: "get", to: "alice@localhost" }, xml("query", { xmlns: "http://jabber.org/protocol/disco#info" })));
    assert.ok(info.getChild("query")!.getChildren("feature").some((f) => f.attrs.var === "urn:xmpp:pep-vcard-conversion:0"));
  });

  it("a vCard photo from a legacy client is published as a XEP-0084 avatar anyone can fetch; removing it empties the metadata", async () => {
    const carol = await login("carol", "legacy");
    const image = randomBytes(1500);
    const id = createHash("sha1").update(image).digest("hex");
    await carol.iq(xml("iq", { type: "set" }, xml("vCard", { xmlns: "vcard-temp" }, xml("FN", {}, "Carol"),
      xml("PHOTO", {}, xml("TYPE", {}, "image/jpeg"), xml("BINVAL", {}, image.toString("base64").replace(/(.{76})/g, "$1\n"))))));
    const dave = await login("dave", "d");
    const meta = await dave.iq(xml("iq", { type: "get", to: "carol@localhost" }, xml("pubsub", { xmlns: PUBSUB }, xml("items", { node: METADATA }))));
    const info = meta.getChild("pubsub")!.getChild("items")!.getChild("item")!.getChild("metadata")!.getChild("info")!;
    assert.deepEqual([info.attrs.id, info.attrs.bytes, info.attrs.type], [id, String(image.length), "image/jpeg"]);
    const data = await dave.iq(xml("iq", { type: "get", to: "carol@localhost" }, xml("pubsub", { xmlns: PUBSUB }, xml("items", { node: DATA }, xml("item", { id })))));
    assert.deepEqual(Buffer.from(data.getChild("pubsub")!.getChild("items")!.getChild("item")!.getChildText("data")!, "base64"), image);
    const bob = await login("bob", "b2");
    await bob.xmpp.send(xml("presence"));
    await carol.xmpp.send(xml("presence", {}, xml("x", { xmlns: "vcard-temp:x:update" }, xml("photo", {}, "bogus"))));
    const presence = await bob.waitFor((s) => s.name === "presence" && s.attrs.from === "carol@localhost/legacy");
    assert.equal(photoHash(presence), id, "the server's hash replaces whatever the client put");

    await carol.iq(xml("iq", { type: "set" }, xml("vCard", { xmlns: "vcard-temp" }, xml("FN", {}, "Carol"))));
    const after = await dave.iq(xml("iq", { type: "get", to: "carol@localhost" }, xml("pubsub", { xmlns: PUBSUB }, xml("items", { node: METADATA }))));
    assert.equal(after.getChild("pubsub")!.getChild("items")!.getChild("item")!.getChild("metadata")!.getChild("info"), undefined);
    await carol.xmpp.send(xml("presence", {}, xml("show", {}, "dnd")));
    const cleared = await bob.waitFor((s) => s.name === "presence" && s.attrs.from === "carol@localhost/legacy" && s.getChildText("show") === "dnd");
    assert.equal(photoHash(cleared), "", "no avatar: an empty photo element");
  });

  it("vCard4 (XEP-0292) and nickname (XEP-0172) profiles over PEP: contacts read them, strangers do not", async () => {
    const alice = await login("alice", "profile");
    const info = await alice.iq(xml("iq", { type: "get", to: "alice@localhost" }, xml("query", { xmlns: "http://jabber.org/protocol/disco#info" })));
    assert.ok(info.getChild("query")!.getChildren("feature").some((f) => f.attrs.var === "urn:xmpp:vcard4"));
    await alice.iq(publish("urn:xmpp:vcard4", "current", xml("vcard", { xmlns: "urn:ietf:params:xml:ns:vcard-4.0" }, xml("fn", {}, xml("text", {}, "Alice Example")))));
    await alice.iq(publish("http://jabber.org/protocol/nick", "current", xml("nick", { xmlns: "http://jabber.org/protocol/nick" }, "Al")));
    const bob = await login("bob", "profile");
    const card = await bob.iq(xml("iq", { type: "get", to: "alice@localhost" }, xml("pubsub", { xmlns: PUBSUB }, xml("items", { node: "urn:xmpp:vcard4" }))));
    assert.equal(card.getChild("pubsub")!.getChild("items")!.getChild("item")!.getChild("vcard")!.getChild("fn")!.getChildText("text"), "Alice Example");
    const nick = await bob.iq(xml("iq", { type: "get", to: "alice@localhost" }, xml("pubsub", { xmlns: PUBSUB }, xml("items", { node: "http://jabber.org/protocol/nick" }))));
    assert.equal(nick.getChild("pubsub")!.getChild("items")!.getChild("item")!.getChildText("nick"), "Al");
    const dave = await login("dave", "profile");
    await assert.rejects(dave.iq(xml("iq", { type: "get", to: "alice@localhost" }, xml("pubsub", { xmlns: PUBSUB }, xml("items", { node: "urn:xmpp:vcard4" })))),
      (err: { condition?: string }) => err.condition === "not-authorized");
  });

  it("an avatar restricted to a whitelist stays out of the vCard others read and out of presence; a legacy vCard save does not open it; deleting it empties the vCard", async () => {
    const erin = await login("erin", "modern");
    const frank = await login("frank", "f");
    await frank.xmpp.send(xml("presence"));
    await erin.xmpp.send(xml("presence"));
    const image = randomBytes(1200);
    const id = createHash("sha1").update(image).digest("hex");
    const whitelist = { "pubsub#access_model": "whitelist" };
    await erin.iq(publishWith(DATA, id, xml("data", { xmlns: DATA }, image.toString("base64")), whitelist));
    await erin.iq(publishWith(METADATA, id, xml("metadata", { xmlns: METADATA }, xml("info", { id, bytes: String(image.length), type: "image/png" })), whitelist));
    const gina = await login("gina", "g");
    assert.equal((await vcardOf(gina, "erin@localhost")).getChild("PHOTO"), undefined, "a stranger gets no photo");
    assert.equal((await vcardOf(frank, "erin@localhost")).getChild("PHOTO"), undefined, "a subscriber outside the whitelist gets no photo");
    assert.deepEqual(Buffer.from((await vcardOf(erin, "erin@localhost")).getChild("PHOTO")!.getChildText("BINVAL")!, "base64"), image, "the owner sees it");
    await erin.xmpp.send(xml("presence", {}, xml("show", {}, "away")));
    const presence = await frank.waitFor((s) => s.name === "presence" && s.attrs.from === "erin@localhost/modern" && s.getChildText("show") === "away");
    const update = presence.getChild("x", "vcard-temp:x:update");
    assert.ok(update, "an update element that says nothing (XEP-0153 §4.3)");
    assert.equal(update.getChild("photo"), undefined, "no hash for a subscriber who cannot fetch the image");

    // A legacy client saves the vCard with a new photo: it reaches PEP, and PEP stays restricted.
    const legacy = await login("erin", "legacy");
    const other = randomBytes(900);
    const otherId = createHash("sha1").update(other).digest("hex");
    await legacy.iq(xml("iq", { type: "set" }, xml("vCard", { xmlns: "vcard-temp" }, xml("FN", {}, "Erin"),
      xml("PHOTO", {}, xml("TYPE", {}, "image/jpeg"), xml("BINVAL", {}, other.toString("base64"))))));
    const mine = await erin.iq(xml("iq", { type: "get" }, xml("pubsub", { xmlns: PUBSUB }, xml("items", { node: METADATA }))));
    assert.equal(mine.getChild("pubsub")!.getChild("items")!.getChild("item")!.attrs.id, otherId, "converted to PEP");
    const config = await erin.iq(xml("iq", { type: "get" }, xml("pubsub", { xmlns: `${PUBSUB}#owner` }, xml("configure", { node: DATA }))));
    const access = config.getChild("pubsub")!.getChild("configure")!.getChild("x")!.getChildren("field").find((f) => f.attrs.var === "pubsub#access_model");
    assert.equal(access!.getChildText("value"), "whitelist");
    assert.equal((await vcardOf(gina, "erin@localhost")).getChild("PHOTO"), undefined, "still no photo for a stranger");
    await assert.rejects(gina.iq(xml("iq", { type: "get", to: "erin@localhost" }, xml("pubsub", { xmlns: PUBSUB }, xml("items", { node: DATA })))),
      (err: { condition?: string }) => err.condition === "not-allowed");

    // The owner deletes the avatar nodes: no photo is left behind in the vCard for anyone.
    for (const node of [DATA, METADATA]) {
      await erin.iq(xml("iq", { type: "set" }, xml("pubsub", { xmlns: `${PUBSUB}#owner` }, xml("delete", { node }))));
    }
    assert.equal((await vcardOf(gina, "erin@localhost")).getChild("PHOTO"), undefined);
    assert.equal((await vcardOf(erin, "erin@localhost")).getChild("PHOTO"), undefined);
  });

  it("an avatar under the presence access model (the default): subscribers get photo and hash, strangers not the photo", async () => {
    const ivan = await login("ivan", "i");
    const frank = await login("frank", "f2");
    await frank.xmpp.send(xml("presence"));
    const image = randomBytes(800);
    const id = createHash("sha1").update(image).digest("hex");
    await ivan.iq(publish(DATA, id, xml("data", { xmlns: DATA }, image.toString("base64"))));
    await ivan.iq(publish(METADATA, id, xml("metadata", { xmlns: METADATA }, xml("info", { id, bytes: String(image.length), type: "image/png" }))));
    const gina = await login("gina", "g2");
    assert.equal((await vcardOf(gina, "ivan@localhost")).getChild("PHOTO"), undefined, "a stranger gets no photo");
    assert.deepEqual(Buffer.from((await vcardOf(frank, "ivan@localhost")).getChild("PHOTO")!.getChildText("BINVAL")!, "base64"), image);
    await ivan.xmpp.send(xml("presence"));
    const presence = await frank.waitFor((s) => s.name === "presence" && s.attrs.from === "ivan@localhost/i");
    assert.equal(photoHash(presence), id, "broadcast presence reaches only subscribers, who may fetch it");
  });
});
