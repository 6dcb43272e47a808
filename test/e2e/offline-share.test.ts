/**
 * The offline queue's share for strangers (issue 21.7): senders outside the recipient's roster
 * cannot fill it, so a contact's message still gets stored; every message refused gets an error
 * back (the delivery promise), none is dropped in silence.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";

describe("offline storage: strangers share a part of the queue", () => {
  let server: TestServer;
  const clients: Connected[] = [];
  before(async () => {
    server = await startTestServer({ modules: { offline: { maxPerUser: 40, maxFromStrangers: 10, maxPerStranger: 5 } } });
    for (const u of ["vera", "colleague", "s1", "s2", "s3"]) await server.accounts.create(`${u}@localhost`, "pw");
    await server.storage.roster.put("vera@localhost", { jid: "colleague@localhost", groups: [], subscription: "both", ask: false, approved: false });
    await server.storage.roster.put("colleague@localhost", { jid: "vera@localhost", groups: [], subscription: "both", ask: false, approved: false });
  });
  after(async () => {
    for (const c of clients) await c.stop();
    await server.cleanup();
  });
  const login = async (user: string, resource = "r") => {
    const c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: user, password: "pw", resource });
    clients.push(c);
    return c;
  };
  const errorsFor = (c: Connected) => c.inbox.filter((s) => s.name === "message" && s.attrs.type === "error");
  /** Sends n chat messages to vera and waits until each is either answered with an error or (by the count) stored. */
  const flood = async (c: Connected, prefix: string, n: number, expectErrors: number) => {
    for (let i = 0; i < n; i++) await c.xmpp.send(xml("message", { to: "vera@localhost", type: "chat", id: `${prefix}-${i}` }, xml("body", {}, `${prefix} ${i}`)));
    for (let i = 0; i < 200 && errorsFor(c).length < expectErrors; i++) await new Promise((r) => setTimeout(r, 25));
    // A ping round trip after the messages: the server has handled everything sent before it.
    await c.iq(xml("iq", { type: "get", to: "localhost" }, xml("ping", { xmlns: "urn:xmpp:ping" })));
    return errorsFor(c);
  };

  it("a stranger gets its own share, strangers together theirs, refusals come back as service-unavailable; a contact's message is still stored", async () => {
    const s1 = await login("s1");
    const e1 = await flood(s1, "s1", 8, 3);
    assert.equal(e1.length, 3, "one stranger: 5 stored, 3 refused");
    for (const e of e1) {
      const error = e.getChild("error")!;
      assert.equal(error.attrs.type, "cancel");
      assert.ok(error.getChild("service-unavailable", "urn:ietf:params:xml:ns:xmpp-stanzas"));
      assert.equal(e.attrs.from, "vera@localhost");
    }
    const s2 = await login("s2");
    assert.equal((await flood(s2, "s2", 6, 1)).length, 1, "the second stranger fills the strangers' share");
    const s3 = await login("s3");
    assert.equal((await flood(s3, "s3", 2, 2)).length, 2, "a third stranger finds it full");

    const colleague = await login("colleague");
    assert.equal((await flood(colleague, "c", 20, 0)).length, 0, "a contact's messages are stored");

    const vera = await login("vera");
    await vera.xmpp.send(xml("presence"));
    const refused = new Set([...errorsFor(s1), ...errorsFor(s2), ...errorsFor(s3)].map((e) => e.attrs.id));
    const sent = [...Array.from({ length: 8 }, (_, i) => `s1-${i}`), ...Array.from({ length: 6 }, (_, i) => `s2-${i}`),
      ...Array.from({ length: 2 }, (_, i) => `s3-${i}`), ...Array.from({ length: 20 }, (_, i) => `c-${i}`)];
    const stored = sent.filter((id) => !refused.has(id));
    assert.equal(stored.length, 30);
    for (const id of stored) await vera.waitFor((s) => s.name === "message" && s.attrs.id === id);
    const got = vera.inbox.filter((s) => s.name === "message" && s.getChild("body")).map((s) => s.attrs.id).sort();
    assert.deepEqual(got, [...stored].sort(), "every message is either delivered or was answered with an error");
    // Vera's client has read them (it answers the ping after the flush): the rows and the strangers' counts go.
    for (let i = 0; i < 200 && await server.storage.offline.count("vera@localhost") > 0; i++) await new Promise((r) => setTimeout(r, 25));
    assert.equal(await server.storage.offline.count("vera@localhost"), 0);
    await vera.stop();
  });

  it("what strangers have queued still counts after a restart", async () => {
    // The tally is written within a second of its change (TALLY_WRITE_DELAY_MS in src/modules/offline.ts).
    const deadline = Date.now() + 5_000;
    while (await server.storage.documents.get("vera@localhost", "offline-strangers") !== undefined && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert.equal(await server.storage.documents.get("vera@localhost", "offline-strangers"), undefined, "vera drained her queue: nothing counted");
    const s1 = await login("s1", "again");
    assert.equal((await flood(s1, "again", 7, 2)).length, 2);
    await s1.stop();
    await server.stop();
    server = Object.assign(await startTestServer({ dataDir: server.dataDir, modules: { offline: { maxPerUser: 40, maxFromStrangers: 10, maxPerStranger: 5 } } }), { dataDir: server.dataDir });
    const back = await login("s1", "after-restart");
    assert.equal((await flood(back, "later", 2, 2)).length, 2, "s1's five queued messages still count");
  });
});
