/**
 * Blocking (XEP-0191) of users and whole domains on another server, and an upload link (XEP-0363)
 * that a user on another server fetches: a.test and b.test federate over loopback (dialback).
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { Agent, request } from "undici";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";
import { startParleyPair, type ParleyPair } from "../helpers/s2s.js";
import type { Element } from "@xmpp/xml";

const BLOCKING = "urn:xmpp:blocking";
const BLOCKED = "urn:xmpp:blocking:errors";
const STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas";
const UPLOAD = "urn:xmpp:http:upload:0";
const OOB = "jabber:x:oob";

const errorOf = (s: Element) => s.getChild("error");

describe("blocking and upload links across servers", () => {
  let pair: ParleyPair;
  const clients: Connected[] = [];
  const login = async (server: "a" | "b", user: string, resource: string) => {
    const c = await connect({ port: pair[server].ports.c2s!, domain: `${server}.test`, username: user, password: "pw", resource });
    clients.push(c);
    await c.xmpp.send(xml("presence"));
    return c;
  };
  const block = (c: Connected, jid: string, verb: "block" | "unblock" = "block") =>
    c.iq(xml("iq", { type: "set" }, xml(verb, { xmlns: BLOCKING }, xml("item", { jid }))));

  before(async () => {
    pair = await startParleyPair({ a: { listen: { https: 0 } } });
    await pair.b.accounts.create("carol@b.test", "pw");
  });
  after(async () => {
    for (const c of clients) await c.stop();
    await pair.a.cleanup();
    await pair.b.cleanup();
  });

  it("a blocked remote user cannot reach the user and the user cannot write to them; a blocked domain covers everyone there", async () => {
    const alice = await login("a", "alice", "blk");
    const bob = await login("b", "bob", "blk");
    const carol = await login("b", "carol", "blk");
    // Federation works before the block.
    await bob.xmpp.send(xml("message", { to: "alice@a.test/blk", type: "chat", id: "before" }, xml("body", {}, "hi")));
    await alice.waitFor((s) => s.attrs.id === "before");

    await block(alice, "bob@b.test");
    // XEP-0191 §3.4: a message from a blocked entity is not delivered; the sender gets service-unavailable.
    await bob.xmpp.send(xml("message", { to: "alice@a.test/blk", type: "chat", id: "in-blocked" }, xml("body", {}, "hi?")));
    const bounced = await bob.waitFor((s) => s.attrs.id === "in-blocked" && s.attrs.type === "error");
    assert.ok(errorOf(bounced)?.getChild("service-unavailable", STANZAS), bounced.toString());
    // §3.4: the user's own stanza to a blocked entity is refused with <not-acceptable/> and <blocked/>.
    await alice.xmpp.send(xml("message", { to: "bob@b.test", type: "chat", id: "out-blocked" }, xml("body", {}, "x")));
    const refused = await alice.waitFor((s) => s.attrs.id === "out-blocked" && s.attrs.type === "error");
    assert.ok(errorOf(refused)?.getChild("not-acceptable", STANZAS), refused.toString());
    assert.ok(errorOf(refused)?.getChild("blocked", BLOCKED), refused.toString());
    // carol, on the same server, is not blocked.
    await carol.xmpp.send(xml("message", { to: "alice@a.test/blk", type: "chat", id: "carol-ok" }, xml("body", {}, "hello")));
    await alice.waitFor((s) => s.attrs.id === "carol-ok");

    await block(alice, "bob@b.test", "unblock");
    await block(alice, "b.test");
    await carol.xmpp.send(xml("message", { to: "alice@a.test/blk", type: "chat", id: "domain-blocked" }, xml("body", {}, "hi?")));
    const domainBounce = await carol.waitFor((s) => s.attrs.id === "domain-blocked" && s.attrs.type === "error");
    assert.ok(errorOf(domainBounce)?.getChild("service-unavailable", STANZAS), domainBounce.toString());
    await block(alice, "b.test", "unblock");
    await carol.xmpp.send(xml("message", { to: "alice@a.test/blk", type: "chat", id: "after" }, xml("body", {}, "again")));
    await alice.waitFor((s) => s.attrs.id === "after");
    for (const id of ["in-blocked", "domain-blocked"]) assert.ok(!alice.inbox.some((s) => s.attrs.id === id), `${id} never reached alice`);
  });

  it("an upload link sent to a user on another server downloads there, byte for byte", async () => {
    const alice = await login("a", "alice", "up");
    const bob = await login("b", "bob", "up");
    const bytes = Buffer.from("a photo, as far as this test is concerned\n".repeat(100));
    const reply = await alice.iq(xml("iq", { type: "get", to: "upload.a.test" },
      xml("request", { xmlns: UPLOAD, filename: "photo.jpg", size: String(bytes.length), "content-type": "image/jpeg" })));
    const slot = reply.getChild("slot", UPLOAD)!;
    const putUrl = new URL(slot.getChild("put")!.attrs.url as string);
    const getUrl = slot.getChild("get")!.attrs.url as string;
    // a.test is not in DNS here: the HTTP clients resolve it to loopback (SNI and Host stay a.test).
    assert.equal(new URL(getUrl).hostname, "a.test", "the link names the uploader's server, which the remote user can reach");
    const toA = new Agent({ connect: { rejectUnauthorized: false, lookup: (_host, _opts, done) => done(null, [{ address: "127.0.0.1", family: 4 }]) } });
    const headers = Object.fromEntries(slot.getChild("put")!.getChildren("header").map((h) => [h.attrs.name as string, h.getText()]));
    const put = await request(putUrl, { method: "PUT", body: bytes, headers: { ...headers, "content-type": "image/jpeg", "content-length": String(bytes.length) }, dispatcher: toA });
    await put.body.text();
    assert.equal(put.statusCode, 201);

    await alice.xmpp.send(xml("message", { to: "bob@b.test", type: "chat", id: "link" }, xml("body", {}, getUrl), xml("x", { xmlns: OOB }, xml("url", {}, getUrl))));
    const got = await bob.waitFor((s) => s.attrs.id === "link");
    const url = got.getChild("x", OOB)!.getChildText("url")!;
    assert.equal(url, getUrl);
    const download = await request(url, { dispatcher: toA });
    assert.equal(download.statusCode, 200);
    assert.equal(download.headers["content-type"], "image/jpeg");
    assert.deepEqual(Buffer.from(await download.body.arrayBuffer()), bytes);
    await toA.close();
  });
});
