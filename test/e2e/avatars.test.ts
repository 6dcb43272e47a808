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
    for (const u of ["alice", "bob", "carol", "dave"]) await server.accounts.create(`${u}@localhost`, "pw");
    for (const [a, b] of [["alice", "bob"], ["bob", "alice"], ["carol", "bob"], ["bob", "carol"]]) {
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
});
