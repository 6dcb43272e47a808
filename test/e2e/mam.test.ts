/** XEP-0313 Message Archive Management end to end, with xmpp.js as the client. */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";
import type { Element } from "@xmpp/xml";

const MAM = "urn:xmpp:mam:2";
const RSM = "http://jabber.org/protocol/rsm";

interface Page { messages: Element[]; fin: Element }

/** Runs one archive query and collects its <result/> messages. */
async function query(c: Connected, opts: { fields?: Record<string, string | string[]>; max?: number; after?: string; before?: string; flip?: boolean; to?: string } = {}): Promise<Page> {
  const queryid = `q${Math.random().toString(36).slice(2)}`;
  const fields = Object.entries(opts.fields ?? {});
  const form = fields.length === 0 ? undefined : xml("x", { xmlns: "jabber:x:data", type: "submit" },
    xml("field", { var: "FORM_TYPE", type: "hidden" }, xml("value", {}, MAM)),
    ...fields.map(([name, v]) => xml("field", { var: name }, ...(Array.isArray(v) ? v : [v]).map((x) => xml("value", {}, x)))));
  const paging = [
    opts.max !== undefined ? xml("max", {}, String(opts.max)) : undefined,
    opts.after !== undefined ? xml("after", {}, opts.after) : undefined,
    opts.before !== undefined ? xml("before", {}, opts.before) : undefined,
  ].filter((e) => e !== undefined);
  const set = paging.length === 0 ? undefined : xml("set", { xmlns: RSM }, ...paging);
  const start = c.inbox.length;
  const fin = await c.iq(xml("iq", { type: "set", ...(opts.to ? { to: opts.to } : {}) },
    xml("query", { xmlns: MAM, queryid }, ...[form, set, opts.flip ? xml("flip-page") : undefined].filter((e) => e !== undefined))));
  const messages = c.inbox.slice(start).filter((s) => s.getChild("result", MAM)?.attrs.queryid === queryid);
  return { messages, fin: fin.getChild("fin", MAM)! };
}
const bodyOf = (result: Element) => result.getChild("result", MAM)!.getChild("forwarded", "urn:xmpp:forward:0")!.getChild("message")!.getChildText("body");
const idOf = (result: Element) => result.getChild("result", MAM)!.attrs.id as string;
const rsm = (fin: Element, name: string) => fin.getChild("set", RSM)?.getChildText(name) ?? undefined;

describe("message archive (XEP-0313)", () => {
  let server: TestServer;
  const clients: Connected[] = [];
  const login = async (username: string, resource: string, available = true) => {
    const c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username, password: "pw", resource });
    if (available) await c.xmpp.send(xml("presence"));
    clients.push(c);
    return c;
  };
  before(async () => {
    server = await startTestServer();
    for (const u of ["alice", "bob", "carol", "dave", "erin"]) await server.accounts.create(`${u}@localhost`, "pw");
  });
  after(async () => {
    for (const c of clients) await c.stop();
    await server.cleanup();
  });

  it("advertises mam:2, #extended and stanza ids on the account", async () => {
    const alice = await login("alice", "disco", false);
    const info = await alice.iq(xml("iq", { type: "get", to: "alice@localhost" }, xml("query", { xmlns: "http://jabber.org/protocol/disco#info" })));
    const features = info.getChild("query")!.getChildren("feature").map((f) => f.attrs.var);
    for (const f of [MAM, `${MAM}#extended`, "urn:xmpp:sid:0"]) assert.ok(features.includes(f), f);
    const form = await alice.iq(xml("iq", { type: "get" }, xml("query", { xmlns: MAM })));
    const vars = form.getChild("query")!.getChild("x", "jabber:x:data")!.getChildren("field").map((f) => f.attrs.var);
    assert.deepEqual(vars, ["FORM_TYPE", "with", "start", "end", "before-id", "after-id", "ids"]);
  });

  it("a second device that was offline catches up from the archive, sent and received, with the ids seen live", async () => {
    const phone = await login("alice", "phone");
    const bob = await login("bob", "pc");
    await phone.iq(xml("iq", { type: "set" }, xml("enable", { xmlns: "urn:xmpp:carbons:2" })));
    for (let i = 0; i < 3; i++) {
      await phone.xmpp.send(xml("message", { to: "bob@localhost", type: "chat", id: `a${i}` }, xml("body", {}, `alice says ${i}`)));
      await bob.waitFor((s) => s.attrs.id === `a${i}`);
      await bob.xmpp.send(xml("message", { to: "alice@localhost", type: "chat", id: `b${i}` }, xml("body", {}, `bob says ${i}`)));
      await phone.waitFor((s) => s.attrs.id === `b${i}`);
    }
    const live = phone.inbox.filter((s) => s.name === "message" && s.attrs.id?.startsWith("b"));
    const liveIds = live.map((s) => s.getChild("stanza-id", "urn:xmpp:sid:0")!);
    for (const sid of liveIds) assert.equal(sid.attrs.by, "alice@localhost");

    const laptop = await login("alice", "laptop");
    const page = await query(laptop, { fields: { with: "bob@localhost" } });
    assert.deepEqual(page.messages.map(bodyOf), ["alice says 0", "bob says 0", "alice says 1", "bob says 1", "alice says 2", "bob says 2"]);
    assert.equal(page.fin.attrs.complete, "true");
    for (const m of page.messages) {
      assert.equal(m.attrs.from, "alice@localhost", "results come from the user's own bare JID");
      assert.ok(m.getChild("result", MAM)!.getChild("forwarded", "urn:xmpp:forward:0")!.getChild("delay", "urn:xmpp:delay"));
    }
    const received = page.messages.filter((m) => bodyOf(m)?.startsWith("bob"));
    assert.deepEqual(received.map(idOf), liveIds.map((s) => s.attrs.id), "archive ids are the stanza-ids delivered live");
    // Bob's archive has the same conversation. A message both archives keep is one record
    // (docs/STORAGE.md), under one id in both — once both users' preferences are loaded (the very
    // first message waited for them, and its two entries went into two records).
    const bobPage = await query(bob, { fields: { with: "alice@localhost" } });
    assert.deepEqual(bobPage.messages.map(bodyOf), page.messages.map(bodyOf));
    assert.equal(new Set(bobPage.messages.map(idOf)).size, 6, "ids are unique within an archive");
    assert.deepEqual(bobPage.messages.slice(2).map(idOf), page.messages.slice(2).map(idOf), "one record per message");
  });

  it("pages forwards and backwards with RSM, flips pages, clamps max and filters by time and ids", async () => {
    const carol = await login("carol", "c");
    const dave = await login("dave", "d");
    const t0 = Date.now();
    for (let i = 0; i < 120; i++) await dave.xmpp.send(xml("message", { to: "carol@localhost", type: "chat", id: `p${i}` }, xml("body", {}, `m${i}`)));
    await carol.waitFor((s) => s.attrs.id === "p119", 10_000);
    const forward: string[] = [];
    let after: string | undefined;
    const completes: Array<string | undefined> = [];
    for (;;) {
      const page = await query(carol, { max: 50, ...(after ? { after } : {}) });
      forward.push(...page.messages.map((m) => bodyOf(m)!));
      completes.push(page.fin.attrs.complete);
      assert.equal(rsm(page.fin, "last"), idOf(page.messages[page.messages.length - 1]!));
      if (page.fin.attrs.complete === "true") break;
      after = rsm(page.fin, "last");
    }
    assert.deepEqual(forward, Array.from({ length: 120 }, (_, i) => `m${i}`));
    assert.deepEqual(completes, [undefined, undefined, "true"]);

    const last = await query(carol, { max: 10, before: "" });
    assert.deepEqual(last.messages.map(bodyOf), Array.from({ length: 10 }, (_, i) => `m${110 + i}`), "<before/> gives the newest page, oldest first");
    assert.equal(last.fin.attrs.complete, undefined);
    const previous = await query(carol, { max: 10, before: rsm(last.fin, "first")! });
    assert.deepEqual(previous.messages.map(bodyOf), Array.from({ length: 10 }, (_, i) => `m${100 + i}`));
    const firstPage = await query(carol, { max: 10, before: idOf((await query(carol, { max: 6 })).messages[5]!) });
    assert.deepEqual(firstPage.messages.map(bodyOf), ["m0", "m1", "m2", "m3", "m4"]);
    assert.equal(firstPage.fin.attrs.complete, "true", "paging backwards reached the start");

    const flipped = await query(carol, { max: 3, before: "", flip: true });
    assert.deepEqual(flipped.messages.map(bodyOf), ["m119", "m118", "m117"]);

    const clamped = await query(carol, { max: 100_000 });
    assert.equal(clamped.messages.length, 120, "under the 250 clamp everything fits");

    const all = await query(carol, { max: 200 });
    const picked = await query(carol, { fields: { ids: [idOf(all.messages[7]!), idOf(all.messages[3]!)] } });
    assert.deepEqual(picked.messages.map(bodyOf), ["m3", "m7"]);

    const between = await query(carol, { fields: { "after-id": idOf(all.messages[9]!), "before-id": idOf(all.messages[13]!) } });
    assert.deepEqual(between.messages.map(bodyOf), ["m10", "m11", "m12"]);

    const future = await query(carol, { fields: { start: new Date(Date.now() + 60_000).toISOString() } });
    assert.equal(future.messages.length, 0);
    assert.equal(future.fin.attrs.complete, "true");
    const since = await query(carol, { fields: { start: new Date(t0 - 1000).toISOString(), end: new Date(Date.now() + 1000).toISOString() }, max: 250 });
    assert.equal(since.messages.length, 120);
    const none = await query(carol, { fields: { with: "nobody@localhost" } });
    assert.equal(none.messages.length, 0);
  });

  it("answers bad queries with the exact errors, and nobody reads another user's archive", async () => {
    const erin = await login("erin", "e", false);
    const errorOf = async (payload: ReturnType<typeof xml>, to?: string) => {
      try {
        await erin.iq(xml("iq", { type: "set", ...(to ? { to } : {}) }, payload));
      } catch (err) {
        return ((err as { condition?: string }).condition);
      }
      return "no error";
    };
    assert.equal(await errorOf(xml("query", { xmlns: MAM }), "carol@localhost"), "forbidden");
    assert.equal(await errorOf(xml("query", { xmlns: MAM }, xml("set", { xmlns: RSM }, xml("after", {}, "12345")))), "item-not-found");
    assert.equal(await errorOf(xml("query", { xmlns: MAM }, xml("set", { xmlns: RSM }, xml("before", {}, "not-an-id")))), "item-not-found");
    const form = (name: string, value: string, type = MAM) => xml("query", { xmlns: MAM }, xml("x", { xmlns: "jabber:x:data", type: "submit" },
      xml("field", { var: "FORM_TYPE" }, xml("value", {}, type)), xml("field", { var: name }, xml("value", {}, value))));
    assert.equal(await errorOf(form("start", "yesterday")), "bad-request");
    assert.equal(await errorOf(form("colour", "blue")), "bad-request");
    assert.equal(await errorOf(form("with", "carol@localhost", "urn:xmpp:mam:1")), "bad-request");
    assert.equal(await errorOf(form("with", "@@")), "jid-malformed");
    assert.equal(await errorOf(xml("query", { xmlns: MAM }, xml("set", { xmlns: RSM }, xml("max", {}, "-1")))), "bad-request");
    const meta = await erin.iq(xml("iq", { type: "get" }, xml("metadata", { xmlns: MAM })));
    assert.equal(meta.getChild("metadata", MAM)!.children.length, 0, "an empty archive has empty metadata");
  });

  it("strips forged stanza-ids and honours preferences (XEP-0441)", async () => {
    const bob = await login("bob", "prefs");
    const erin = await login("erin", "prefs");
    await bob.xmpp.send(xml("message", { to: "erin@localhost", type: "chat", id: "forged" }, xml("body", {}, "hi"),
      xml("stanza-id", { xmlns: "urn:xmpp:sid:0", id: "fake", by: "erin@localhost" }),
      xml("stanza-id", { xmlns: "urn:xmpp:sid:0", id: "other", by: "bob@localhost" })));
    const got = await erin.waitFor((s) => s.attrs.id === "forged");
    const sids = got.getChildren("stanza-id", "urn:xmpp:sid:0");
    assert.equal(sids.filter((s) => s.attrs.by === "erin@localhost").length, 1);
    assert.notEqual(sids.find((s) => s.attrs.by === "erin@localhost")!.attrs.id, "fake");
    assert.ok(sids.some((s) => s.attrs.id === "other"), "ids by other entities are left alone");

    const prefs = await erin.iq(xml("iq", { type: "set" }, xml("prefs", { xmlns: MAM, default: "never" },
      xml("always", {}, xml("jid", {}, "carol@localhost")), xml("never"))));
    assert.equal(prefs.getChild("prefs", MAM)!.attrs.default, "never");
    const read = await erin.iq(xml("iq", { type: "get" }, xml("prefs", { xmlns: MAM })));
    assert.equal(read.getChild("prefs", MAM)!.getChild("always")!.getChildText("jid"), "carol@localhost");
    const carol = await login("carol", "prefs", false);
    await bob.xmpp.send(xml("message", { to: "erin@localhost", type: "chat", id: "unarchived" }, xml("body", {}, "not kept")));
    await carol.xmpp.send(xml("message", { to: "erin@localhost", type: "chat", id: "kept" }, xml("body", {}, "kept")));
    const unarchived = await erin.waitFor((s) => s.attrs.id === "unarchived");
    assert.equal(unarchived.getChild("stanza-id", "urn:xmpp:sid:0"), undefined, "not archived, so no id");
    await erin.waitFor((s) => s.attrs.id === "kept");
    const page = await query(erin, {});
    assert.deepEqual(page.messages.map(bodyOf), ["hi", "kept"]);
  });

  it("strips forged stanza-ids whose 'by' names the recipient in another spelling (RFC 7622: case, trailing dot)", async () => {
    const bob = await login("bob", "spelling");
    const alice = await login("alice", "spelling");
    await bob.xmpp.send(xml("message", { to: "alice@localhost/spelling", type: "chat", id: "respelled" }, xml("body", {}, "look, an archive id"),
      xml("stanza-id", { xmlns: "urn:xmpp:sid:0", id: "fake-upper", by: "ALICE@LOCALHOST" }),
      xml("stanza-id", { xmlns: "urn:xmpp:sid:0", id: "fake-dot", by: "alice@localhost." }),
      xml("stanza-id", { xmlns: "urn:xmpp:sid:0", id: "fake-both", by: "Alice@LocalHost." })));
    const got = await alice.waitFor((s) => s.attrs.id === "respelled");
    const ids = got.getChildren("stanza-id", "urn:xmpp:sid:0").map((s) => s.attrs.id);
    for (const fake of ["fake-upper", "fake-dot", "fake-both"]) assert.ok(!ids.includes(fake), `${fake} was stripped`);
    assert.equal(ids.length, 1, "only the archive's own id is left");
  });

  it("an 'ids' query is paged like any other: at most the page limit per page, the rest with RSM; a missing id is item-not-found", async () => {
    const carol = await login("carol", "ids");
    // 400 archived messages, written straight to storage with archive-clock ids (ms × 1024, increasing).
    const base = (Date.now() - 60_000) * 1024;
    const seeded = Array.from({ length: 400 }, (_, i) => base + i * 2);
    for (const [i, id] of seeded.entries()) {
      await server.storage.archive.append("carol@localhost", { id, withBare: "dave@localhost", withResource: "d", stanza: `<message xmlns="jabber:client" type="chat" from="dave@localhost/d" to="carol@localhost"><body>seed ${i}</body></message>` });
    }
    const ids = seeded.map(String);
    const first = await query(carol, { fields: { ids }, max: 100_000 });
    assert.equal(first.messages.length, 250, "clamped to maxPageSize");
    assert.equal(first.fin.attrs.complete, undefined);
    assert.deepEqual(first.messages.map(bodyOf), Array.from({ length: 250 }, (_, i) => `seed ${i}`));
    const rest = await query(carol, { fields: { ids }, max: 250, after: rsm(first.fin, "last")! });
    assert.equal(rest.messages.length, 150);
    assert.equal(rest.fin.attrs.complete, "true");
    assert.equal(bodyOf(rest.messages[0]!), "seed 250");
    // The default page size applies too, and paging backwards gives the newest ids.
    const byDefault = await query(carol, { fields: { ids } });
    assert.equal(byDefault.messages.length, 50);
    const newest = await query(carol, { fields: { ids }, max: 3, before: "" });
    assert.deepEqual(newest.messages.map(bodyOf), ["seed 397", "seed 398", "seed 399"]);
    // XEP-0313 §4.1.3: any id not in the archive fails the whole query.
    await assert.rejects(query(carol, { fields: { ids: [ids[0]!, String(base + 1)] } }), (err: { condition?: string }) => err.condition === "item-not-found");
    await assert.rejects(query(carol, { fields: { ids: [ids[0]!, "not-an-id"] } }), (err: { condition?: string }) => err.condition === "item-not-found");
  });

  it("a stanza-id a client has seen is in its archive when it asks, even while the archive write is still committing", async () => {
    const alice = await login("alice", "slow-disk");
    const bob = await login("bob", "slow-disk");
    // A slow disk: message records reach the store only when the test lets them through. The
    // record is complete by then (its parts are added in the turn that routes the message).
    const messages = server.storage.messages;
    const write = messages.write.bind(messages);
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    messages.write = (record) => gate.then(() => write(record));
    try {
      await bob.xmpp.send(xml("message", { to: "alice@localhost/slow-disk", type: "chat", id: "fresh" }, xml("body", {}, "just now")));
      const got = await alice.waitFor((s) => s.attrs.id === "fresh");
      const seen = got.getChild("stanza-id", "urn:xmpp:sid:0")!.attrs.id as string;
      // The client pages on from the id it just saw (RSM <after/>, as clients catch up). The disk
      // lets the write through a moment after the query has reached the server: a server that does
      // not wait for it answers item-not-found, or a page without the message.
      const pending = query(alice, { after: seen });
      const behind = query(alice, { max: 250, before: "" });
      setTimeout(release, 300);
      const page = await pending;
      assert.equal(page.messages.length, 0);
      assert.equal(page.fin.attrs.complete, "true");
      assert.ok((await behind).messages.map(idOf).includes(seen), "the id delivered live is found");
    } finally {
      release();
      messages.write = write;
    }
  });

  it("advertises and answers MAM on the server domain too, for clients that look there (Profanity)", async () => {
    const dave = await login("dave", "domain", false);
    const info = await dave.iq(xml("iq", { type: "get", to: "localhost" }, xml("query", { xmlns: "http://jabber.org/protocol/disco#info" })));
    const features = info.getChild("query")!.getChildren("feature").map((f) => f.attrs.var);
    for (const f of [MAM, `${MAM}#extended`]) assert.ok(features.includes(f), f);
    const form = await dave.iq(xml("iq", { type: "get", to: "localhost" }, xml("query", { xmlns: MAM })));
    const ids = form.getChild("query")!.getChild("x", "jabber:x:data")!.getChildren("field").find((f) => f.attrs.var === "ids")!;
    assert.equal(ids.attrs.type, "list-multi");
    assert.ok(ids.getChild("validate", "http://jabber.org/protocol/xdata-validate")?.getChild("open"), "§4.1.5: an open list");
    // Sent to the domain, a query reads the sender's own archive — the same page as at the bare JID.
    const atDomain = await query(dave, { to: "localhost", max: 5 });
    const atAccount = await query(dave, { max: 5 });
    assert.ok(atAccount.messages.length > 0);
    assert.deepEqual(atDomain.messages.map(idOf), atAccount.messages.map(idOf));
  });

  it("archives messages stored offline and delivers them with their stanza-id; chat states are not archived", async () => {
    const dave = await login("dave", "offline");
    await dave.xmpp.send(xml("message", { to: "bob@localhost", type: "chat", id: "state" }, xml("composing", { xmlns: "http://jabber.org/protocol/chatstates" })));
    for (const c of clients.filter((x) => x.jid.startsWith("bob@"))) await c.stop();
    await dave.xmpp.send(xml("message", { to: "bob@localhost", type: "chat", id: "while-away" }, xml("body", {}, "while you were away")));
    await new Promise((r) => setTimeout(r, 300));
    const bob = await login("bob", "back");
    const got = await bob.waitFor((s) => s.attrs.id === "while-away");
    const sid = got.getChild("stanza-id", "urn:xmpp:sid:0")!;
    const page = await query(bob, { fields: { with: "dave@localhost" } });
    assert.deepEqual(page.messages.map(idOf), [sid.attrs.id]);
  });
});

describe("message archive retention", () => {
  it("prunes expired messages in the background; retention 0 turns the archive off", async () => {
    // 0.00002 days ≈ 1.7 s; pruning every 0.01 minutes = 0.6 s.
    const server = await startTestServer({ modules: { mam: { retentionDays: 0.00002, pruneIntervalMinutes: 0.01 } } });
    const off = await startTestServer({ modules: { mam: { retentionDays: 0 } } });
    const clients: Connected[] = [];
    try {
      for (const s of [server, off]) for (const u of ["ann", "ben"]) await s.accounts.create(`${u}@localhost`, "pw");
      const ann = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "ann", password: "pw" });
      const ben = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: "ben", password: "pw" });
      clients.push(ann, ben);
      await ben.xmpp.send(xml("presence"));
      await ann.xmpp.send(xml("message", { to: "ben@localhost", type: "chat", id: "soon-gone" }, xml("body", {}, "x")));
      await ben.waitFor((s) => s.attrs.id === "soon-gone");
      assert.equal((await query(ben, {})).messages.length, 1);
      let remaining = 1;
      for (let i = 0; i < 50 && remaining > 0; i++) {
        await new Promise((r) => setTimeout(r, 200));
        remaining = (await query(ben, {})).messages.length;
      }
      assert.equal(remaining, 0, "pruned within 10 s");

      const offAnn = await connect({ port: off.ports.c2sDirectTls!, directTls: true, username: "ann", password: "pw" });
      clients.push(offAnn);
      const info = await offAnn.iq(xml("iq", { type: "get", to: "ann@localhost" }, xml("query", { xmlns: "http://jabber.org/protocol/disco#info" })));
      const features = info.getChild("query")!.getChildren("feature").map((f) => f.attrs.var);
      assert.ok(!features.includes(MAM), "no archive advertised");
      await assert.rejects(offAnn.iq(xml("iq", { type: "set" }, xml("query", { xmlns: MAM }))), (err: { condition?: string }) => err.condition === "service-unavailable");
    } finally {
      for (const c of clients) await c.stop();
      await server.cleanup();
      await off.cleanup();
    }
  });
});
