/** The storage contract: every driver runs these unchanged. */
import { describe, it, beforeEach, afterEach } from "node:test";
import assert from "node:assert/strict";
import type { Account, MessageRecord, RosterItem, Storage } from "../../src/storage/index.js";

const cred = (n: string) => ({ iterations: 4096, salt: `salt${n}`, storedKey: `stored${n}`, serverKey: `server${n}` });
const account = (jid: string): Account => ({ jid, createdAt: 1700000000000, credentials: { "SHA-1": cred("1"), "SHA-256": cred("256") } });
const item = (jid: string, patch: Partial<RosterItem> = {}): RosterItem => ({ jid, groups: [], subscription: "none", ask: false, approved: false, ...patch });

export function storageContract(name: string, open: () => Promise<Storage> | Storage): void {
  describe(`storage contract: ${name}`, () => {
    let s: Storage;
    beforeEach(async () => { s = await open(); });
    afterEach(async () => { await s.close(); });

    it("creates, reads and refuses duplicate accounts", async () => {
      assert.equal(await s.accounts.create(account("alice@a.test")), true);
      assert.equal(await s.accounts.create(account("alice@a.test")), false);
      assert.deepEqual(await s.accounts.get("alice@a.test"), { ...account("alice@a.test"), disabled: false });
      assert.equal(await s.accounts.exists("alice@a.test"), true);
      assert.equal(await s.accounts.exists("bob@a.test"), false);
      assert.equal(await s.accounts.get("bob@a.test"), undefined);
    });

    it("changes credentials only of existing accounts", async () => {
      await s.accounts.create(account("alice@a.test"));
      const next = { "SHA-1": cred("x"), "SHA-256": cred("y") };
      assert.equal(await s.accounts.setCredentials("alice@a.test", next), true);
      assert.deepEqual((await s.accounts.get("alice@a.test"))!.credentials, next);
      assert.equal(await s.accounts.setCredentials("nobody@a.test", next), false);
    });

    it("disables and re-enables accounts, keeping their data, and creates disabled ones when asked", async () => {
      await s.accounts.create(account("alice@a.test"));
      await s.roster.put("alice@a.test", item("bob@a.test"));
      assert.equal(await s.accounts.setDisabled("alice@a.test", true), true);
      assert.equal((await s.accounts.get("alice@a.test"))!.disabled, true);
      assert.deepEqual((await s.accounts.get("alice@a.test"))!.credentials, account("alice@a.test").credentials, "credentials untouched");
      assert.equal((await s.roster.get("alice@a.test")).items.length, 1, "data kept");
      assert.equal(await s.accounts.exists("alice@a.test"), true);
      assert.equal(await s.accounts.setDisabled("alice@a.test", false), true);
      assert.equal((await s.accounts.get("alice@a.test"))!.disabled, false);
      assert.equal(await s.accounts.setDisabled("nobody@a.test", true), false);
      await s.accounts.create({ ...account("carol@a.test"), disabled: true });
      assert.equal((await s.accounts.get("carol@a.test"))!.disabled, true);
    });

    it("lists accounts sorted, optionally by domain, with LIKE metacharacters taken literally", async () => {
      for (const j of ["zed@a.test", "bob@b.test", "amy@a.test", "x@a_test"]) await s.accounts.create(account(j));
      assert.deepEqual(await s.accounts.list(), ["amy@a.test", "bob@b.test", "x@a_test", "zed@a.test"]);
      assert.deepEqual(await s.accounts.list("a.test"), ["amy@a.test", "zed@a.test"]);
      assert.deepEqual(await s.accounts.list("a_test"), ["x@a_test"]);
    });

    it("deleting an account removes all of its data and nobody else's", async () => {
      for (const j of ["alice@a.test", "bob@a.test"]) {
        await s.accounts.create(account(j));
        await s.roster.put(j, item("carol@a.test"));
        await s.subscriptionRequests.put(j, "dave@a.test", "<presence/>");
        await s.offline.append(j, "<message/>", 1, 10);
        await s.documents.set(j, "vcard", "<vCard xmlns='vcard-temp'/>");
        await s.lastActivity.set(j, { at: 5, status: "gone" });
        await s.blocklist.add(j, ["spam@x.test"]);
        await s.pubsub.createNode(j, "urn:xmpp:avatar:data", "{}");
        await s.pubsub.publish(j, "urn:xmpp:avatar:data", { id: "a", publisher: j, payload: "<data/>", publishedAt: 1 }, 1);
        await s.archive.append(j, { id: j.startsWith("alice") ? 1 : 2, withBare: "carol@a.test", withResource: "", stanza: "<message/>" });
      }
      assert.equal(await s.accounts.delete("alice@a.test"), true);
      assert.equal(await s.accounts.delete("alice@a.test"), false);
      assert.deepEqual(await s.roster.get("alice@a.test"), { version: 0, items: [] });
      assert.deepEqual(await s.subscriptionRequests.list("alice@a.test"), []);
      assert.equal(await s.offline.count("alice@a.test"), 0);
      assert.equal(await s.documents.get("alice@a.test", "vcard"), undefined);
      assert.equal(await s.lastActivity.get("alice@a.test"), undefined);
      assert.deepEqual(await s.blocklist.list("alice@a.test"), []);
      assert.deepEqual(await s.blocklist.list("bob@a.test"), ["spam@x.test"]);
      assert.equal(await s.archive.bounds("alice@a.test"), undefined);
      assert.deepEqual(await s.pubsub.nodes("alice@a.test"), []);
      assert.deepEqual(await s.pubsub.items("alice@a.test", "urn:xmpp:avatar:data"), []);
      assert.deepEqual(await s.pubsub.nodes("bob@a.test"), ["urn:xmpp:avatar:data"]);
      assert.deepEqual(await s.archive.bounds("bob@a.test"), { first: 2, last: 2 });
      assert.equal((await s.roster.get("bob@a.test")).items.length, 1);
      assert.equal(await s.offline.count("bob@a.test"), 1);
      assert.equal(await s.documents.get("bob@a.test", "vcard"), "<vCard xmlns='vcard-temp'/>");
    });

    it("roster put/replace/remove bumps the version each time", async () => {
      assert.deepEqual(await s.roster.get("alice@a.test"), { version: 0, items: [] });
      const v1 = await s.roster.put("alice@a.test", item("bob@a.test", { name: "Bob", groups: ["Friends", "Work"] }));
      const v2 = await s.roster.put("alice@a.test", item("bob@a.test", { subscription: "both", ask: true, approved: true }));
      const v3 = await s.roster.put("alice@a.test", item("amy@a.test"));
      assert.ok(v1 < v2 && v2 < v3);
      const r = await s.roster.get("alice@a.test");
      assert.equal(r.version, v3);
      assert.deepEqual(r.items, [item("amy@a.test"), item("bob@a.test", { subscription: "both", ask: true, approved: true })]);
      assert.deepEqual(await s.roster.getItem("alice@a.test", "amy@a.test"), item("amy@a.test"));
      const v4 = await s.roster.remove("alice@a.test", "amy@a.test");
      assert.ok(v4! > v3);
      assert.equal(await s.roster.remove("alice@a.test", "amy@a.test"), undefined);
      assert.equal(await s.roster.getItem("alice@a.test", "amy@a.test"), undefined);
      assert.deepEqual((await s.roster.get("alice@a.test")).items.map((i) => i.jid), ["bob@a.test"]);
    });

    it("keeps item names and groups exactly, including Unicode", async () => {
      await s.roster.put("alice@a.test", item("bob@a.test", { name: "Bøb 😀", groups: ["Ünï", "x y"] }));
      assert.deepEqual(await s.roster.getItem("alice@a.test", "bob@a.test"), item("bob@a.test", { name: "Bøb 😀", groups: ["Ünï", "x y"] }));
    });

    it("subscription requests: one per contact, replaceable, removable", async () => {
      await s.subscriptionRequests.put("alice@a.test", "bob@a.test", "<presence type='subscribe'/>");
      await s.subscriptionRequests.put("alice@a.test", "bob@a.test", "<presence type='subscribe'><status>hi</status></presence>");
      await s.subscriptionRequests.put("alice@a.test", "amy@a.test", "<presence type='subscribe'/>");
      assert.equal(await s.subscriptionRequests.has("alice@a.test", "bob@a.test"), true);
      assert.deepEqual(await s.subscriptionRequests.list("alice@a.test"), [
        { contact: "amy@a.test", stanza: "<presence type='subscribe'/>" },
        { contact: "bob@a.test", stanza: "<presence type='subscribe'><status>hi</status></presence>" },
      ]);
      await s.subscriptionRequests.remove("alice@a.test", "bob@a.test");
      assert.equal(await s.subscriptionRequests.has("alice@a.test", "bob@a.test"), false);
    });

    it("offline queue: ordered, limited, acknowledgement by entry", async () => {
      const ids: number[] = [];
      for (let i = 0; i < 3; i++) ids.push((await s.offline.append("bob@a.test", `<message id='${i}'/>`, 1000 + i, 3))!);
      assert.equal(await s.offline.append("bob@a.test", "<message id='over'/>", 2000, 3), undefined);
      assert.equal(await s.offline.count("bob@a.test"), 3);
      const all = await s.offline.list("bob@a.test");
      assert.deepEqual(all.map((m) => m.stanza), ["<message id='0'/>", "<message id='1'/>", "<message id='2'/>"]);
      assert.deepEqual(all.map((m) => m.storedAt), [1000, 1001, 1002]);
      assert.deepEqual((await s.offline.list("bob@a.test", 2)).map((m) => m.id), ids.slice(0, 2));
      await s.offline.acknowledge("bob@a.test", [ids[0]!, ids[2]!]);
      assert.deepEqual((await s.offline.list("bob@a.test")).map((m) => m.id), [ids[1]]);
      await s.offline.acknowledge("alice@a.test", [ids[1]!]); // another owner's id: no effect
      assert.equal(await s.offline.count("bob@a.test"), 1);
    });

    it("offline total counts every owner's queue", async () => {
      assert.equal(await s.offline.total(), 0);
      await s.offline.append("bob@a.test", "<message/>", 1, 10);
      await s.offline.append("bob@a.test", "<message/>", 2, 10);
      const id = (await s.offline.append("amy@a.test", "<message/>", 3, 10))!;
      assert.equal(await s.offline.total(), 3);
      await s.offline.acknowledge("amy@a.test", [id]);
      assert.equal(await s.offline.total(), 2);
    });

    it("s2s outbox: appends committed together keep their order, ids are unique, removal by id", async () => {
      assert.deepEqual(await s.s2sOutbox.list(""), []);
      // Appended in one turn, as a burst from several senders is: they share a commit, and keep their order.
      const ids = await Promise.all([
        s.s2sOutbox.append("", "a.test", "b.test", "<message id='1'/>", 1000),
        s.s2sOutbox.append("", "a.test", "c.test", "<presence type='subscribe'/>", 1001),
        s.s2sOutbox.append("", "a.test", "b.test", "<message id='2'/>", 1002),
      ]);
      assert.equal(new Set(ids).size, 3);
      assert.deepEqual(await s.s2sOutbox.list(""), [
        { id: ids[0], local: "a.test", remote: "b.test", stanza: "<message id='1'/>", queuedAt: 1000 },
        { id: ids[1], local: "a.test", remote: "c.test", stanza: "<presence type='subscribe'/>", queuedAt: 1001 },
        { id: ids[2], local: "a.test", remote: "b.test", stanza: "<message id='2'/>", queuedAt: 1002 },
      ]);
      await s.s2sOutbox.remove([ids[0]!, ids[2]!, 999_999]);
      assert.deepEqual((await s.s2sOutbox.list("")).map((e) => e.id), [ids[1]]);
      await s.s2sOutbox.remove([]);
      const later = await s.s2sOutbox.append("", "a.test", "b.test", "<message id='3'/>", 1003);
      assert.ok(later > ids[2]!, "ids grow: listing in id order is listing in queue order");
      assert.deepEqual((await s.s2sOutbox.list("")).map((e) => e.stanza), ["<presence type='subscribe'/>", "<message id='3'/>"]);
    });

    it("s2s outbox: rows are listed by owner; a claim moves one owner's rows to another and returns them", async () => {
      const mine = await s.s2sOutbox.append("node-a", "a.test", "b.test", "<message id='a1'/>", 2000);
      const theirs = await Promise.all([
        s.s2sOutbox.append("node-b", "a.test", "b.test", "<message id='b1'/>", 2001),
        s.s2sOutbox.append("node-b", "a.test", "c.test", "<message id='b2'/>", 2002),
      ]);
      assert.deepEqual((await s.s2sOutbox.list("node-a")).map((e) => e.id), [mine]);
      assert.deepEqual((await s.s2sOutbox.list("node-b")).map((e) => e.id), theirs);
      const claimed = await s.s2sOutbox.claim("node-b", "node-a");
      assert.deepEqual(claimed, [
        { id: theirs[0], local: "a.test", remote: "b.test", stanza: "<message id='b1'/>", queuedAt: 2001 },
        { id: theirs[1], local: "a.test", remote: "c.test", stanza: "<message id='b2'/>", queuedAt: 2002 },
      ]);
      assert.deepEqual(await s.s2sOutbox.list("node-b"), []);
      assert.deepEqual((await s.s2sOutbox.list("node-a")).map((e) => e.id), [mine, ...theirs]);
      assert.deepEqual(await s.s2sOutbox.claim("node-b", "node-a"), [], "nothing left to claim");
      await s.s2sOutbox.remove([mine, ...theirs]);
    });

    it("message records: one record in both archives and the queue, with its sides' other parties", async () => {
      const base = 1_800_000_000_000 * 1024;
      const stanza = "<message from='alice@a.test/phone' to='bob@a.test'><body>hi</body></message>";
      const record: MessageRecord = { id: base + 1, stanza, storedAt: 7,
        sender: { owner: "alice@a.test", withBare: "bob@a.test", withResource: "" },
        recipient: { owner: "bob@a.test", withBare: "alice@a.test", withResource: "phone" },
        queue: { owner: "bob@a.test", limit: 10 } };
      const entry = await s.messages.write(record);
      assert.equal(typeof entry, "number", "queued");
      assert.equal(record.sealed, true, "the store sealed what it wrote");
      assert.deepEqual(await s.archive.query("alice@a.test", { newestFirst: false, limit: 10 }), [{ id: base + 1, withBare: "bob@a.test", withResource: "", stanza }]);
      assert.deepEqual(await s.archive.query("bob@a.test", { withBare: "alice@a.test", withResource: "phone", newestFirst: false, limit: 10 }),
        [{ id: base + 1, withBare: "alice@a.test", withResource: "phone", stanza }]);
      assert.deepEqual(await s.offline.list("bob@a.test"), [{ id: entry, stanza, storedAt: 7 }]);
      // Acknowledged: out of the queue, still in both archives.
      await s.offline.acknowledge("bob@a.test", [entry!]);
      assert.equal(await s.offline.count("bob@a.test"), 0);
      assert.equal((await s.archive.get("bob@a.test", [base + 1])).length, 1);
      assert.equal((await s.archive.get("alice@a.test", [base + 1])).length, 1);
      // One side leaving (a deleted account) leaves the other side's entry.
      await s.accounts.create(account("alice@a.test"));
      await s.accounts.delete("alice@a.test");
      assert.equal(await s.archive.bounds("alice@a.test"), undefined);
      assert.deepEqual(await s.archive.bounds("bob@a.test"), { first: base + 1, last: base + 1 });
    });

    it("message records: in one group commit, records without a queue entry between queued ones leave each entry on its own record", async () => {
      const base = 1_800_000_000_000 * 1024;
      // A live message to a stream-managed session, twice over: the sender's archive copy, then
      // the recipient's durable copy, all committed together.
      const sent = (n: number) => s.messages.write({ id: base + 2 * n, stanza: `<message id='sent${n}'/>`, storedAt: n,
        sender: { owner: "alice@a.test", withBare: "bob@a.test", withResource: "" } });
      const queued = (n: number) => s.messages.write({ id: base + 2 * n + 1, stanza: `<message id='queued${n}'/>`, storedAt: n,
        queue: { owner: "bob@a.test", limit: 10 } });
      const [notQueued1, first, notQueued2, second] = await Promise.all([sent(1), queued(1), sent(2), queued(2)]);
      assert.deepEqual([notQueued1, notQueued2], [undefined, undefined]);
      assert.deepEqual((await s.offline.list("bob@a.test")).map((m) => [m.id, m.stanza]),
        [[first, "<message id='queued1'/>"], [second, "<message id='queued2'/>"]]);
      await s.offline.acknowledge("bob@a.test", [first!]);
      assert.deepEqual((await s.offline.list("bob@a.test")).map((m) => m.stanza), ["<message id='queued2'/>"]);
      assert.equal(await s.offline.count("bob@a.test"), 1);
      assert.equal((await s.archive.query("alice@a.test", { newestFirst: false, limit: 10 })).length, 2, "both sent copies archived");
    });

    it("message records: merged pages of both sides, newest first and with filters", async () => {
      const base = 1_800_000_000_000 * 1024;
      const write = (n: number, from: string, to: string) => s.messages.write({ id: base + n, stanza: `<message id='m${n}'/>`, storedAt: n,
        sender: { owner: from, withBare: to, withResource: "" }, recipient: { owner: to, withBare: from, withResource: "r" } });
      await Promise.all([write(1, "alice@a.test", "bob@a.test"), write(2, "bob@a.test", "alice@a.test"), write(3, "alice@a.test", "carol@a.test"),
        write(4, "carol@a.test", "alice@a.test"), write(5, "alice@a.test", "bob@a.test")]);
      const ids = (ms: Array<{ id: number }>) => ms.map((m) => m.id - base);
      assert.deepEqual(ids(await s.archive.query("alice@a.test", { newestFirst: false, limit: 10 })), [1, 2, 3, 4, 5]);
      assert.deepEqual(ids(await s.archive.query("alice@a.test", { newestFirst: false, limit: 3 })), [1, 2, 3]);
      assert.deepEqual(ids(await s.archive.query("alice@a.test", { newestFirst: true, limit: 3 })), [3, 4, 5]);
      assert.deepEqual(ids(await s.archive.query("alice@a.test", { withBare: "bob@a.test", newestFirst: false, limit: 10 })), [1, 2, 5]);
      assert.deepEqual(ids(await s.archive.query("alice@a.test", { withBare: "carol@a.test", withResource: "r", newestFirst: false, limit: 10 })), [4],
        "the resource is the other party's on each side");
      assert.deepEqual(ids(await s.archive.query("alice@a.test", { afterId: base + 1, beforeId: base + 5, newestFirst: true, limit: 2 })), [3, 4]);
      assert.deepEqual(ids(await s.archive.get("alice@a.test", [base + 5, base + 2, base + 9])), [2, 5]);
      assert.deepEqual(ids(await s.archive.get("bob@a.test", [base + 3])), [], "not bob's");
      assert.deepEqual(await s.archive.bounds("alice@a.test"), { first: base + 1, last: base + 5 });
      assert.deepEqual(await s.archive.bounds("carol@a.test"), { first: base + 3, last: base + 4 });
    });

    it("undelivered queue: the watermark passes contiguous acknowledgements, holds those above a gap, and never re-delivers them", async () => {
      const e: number[] = [];
      for (let i = 0; i < 5; i++) e.push((await s.offline.append("bob@a.test", `<message id='${i}'/>`, i, 10))!);
      const listed = async () => (await s.offline.list("bob@a.test")).map((m) => m.stanza);
      await s.offline.acknowledge("bob@a.test", [e[1]!, e[3]!]);
      assert.deepEqual(await listed(), ["<message id='0'/>", "<message id='2'/>", "<message id='4'/>"]);
      assert.equal(await s.offline.count("bob@a.test"), 3);
      assert.equal(await s.offline.total(), 3);
      await s.offline.acknowledge("bob@a.test", [e[0]!]);
      assert.deepEqual(await listed(), ["<message id='2'/>", "<message id='4'/>"]);
      await s.offline.acknowledge("bob@a.test", [e[2]!]);
      assert.deepEqual(await listed(), ["<message id='4'/>"], "the gap closed: the held acknowledgement of 3 counts");
      await Promise.all([s.offline.acknowledge("bob@a.test", [e[4]!]), s.offline.acknowledge("bob@a.test", [e[4]!])]);
      assert.equal(await s.offline.count("bob@a.test"), 0);
      // A new entry after the newest record was collected is above the watermark (no seq reuse).
      const again = await s.offline.append("bob@a.test", "<message id='5'/>", 5, 10);
      assert.ok(again! > e[4]!);
      assert.deepEqual(await listed(), ["<message id='5'/>"]);
      assert.equal(await s.offline.count("bob@a.test"), 1, "the limit counts entries above the watermark only");
    });

    it("message records: a full queue still archives; an unreferenced record is not written; pruning keeps what a queue holds", async () => {
      const base = 1_800_000_000_000 * 1024;
      await s.offline.append("bob@a.test", "<message id='q'/>", 1, 1);
      const full = await s.messages.write({ id: base + 1, stanza: "<message id='a'/>", storedAt: 2,
        recipient: { owner: "bob@a.test", withBare: "alice@a.test", withResource: "" }, queue: { owner: "bob@a.test", limit: 1 } });
      assert.equal(full, undefined, "not queued");
      assert.equal((await s.archive.get("bob@a.test", [base + 1])).length, 1, "archived all the same");
      assert.equal(await s.messages.write({ stanza: "<message id='none'/>", storedAt: 3, queue: { owner: "bob@a.test", limit: 1 } }), undefined);
      assert.equal(await s.offline.total(), 1);
      const held = (await s.messages.write({ id: base + 2, stanza: "<message id='held'/>", storedAt: 4,
        recipient: { owner: "carol@a.test", withBare: "alice@a.test", withResource: "" }, queue: { owner: "carol@a.test", limit: 5 } }))!;
      assert.equal(await s.archive.prune(base + 3, 100), 1, "only the record no queue holds");
      assert.equal((await s.archive.get("carol@a.test", [base + 2])).length, 1);
      await s.offline.acknowledge("carol@a.test", [held]);
      assert.equal(await s.archive.prune(base + 3, 100), 1, "delivered: pruned now");
      assert.equal(await s.archive.bounds("carol@a.test"), undefined);
      assert.deepEqual((await s.offline.list("bob@a.test")).map((m) => m.stanza), ["<message id='q'/>"], "the queue-only record is kept");
    });

    it("blocklist: add is idempotent, sorted, remove some or all", async () => {
      await s.blocklist.add("alice@a.test", ["zed@x.test", "evil.test", "bob@a.test/phone"]);
      await s.blocklist.add("alice@a.test", ["zed@x.test"]);
      assert.deepEqual(await s.blocklist.list("alice@a.test"), ["bob@a.test/phone", "evil.test", "zed@x.test"]);
      await s.blocklist.remove("alice@a.test", ["evil.test", "not-there@x.test"]);
      assert.deepEqual(await s.blocklist.list("alice@a.test"), ["bob@a.test/phone", "zed@x.test"]);
      await s.blocklist.remove("alice@a.test");
      assert.deepEqual(await s.blocklist.list("alice@a.test"), []);
    });

    it("archive: id ranges, with filters, newest-first pages, ids, bounds, pruning", async () => {
      const base = 1_800_000_000_000 * 1024;
      const entry = (n: number, withBare: string, withResource = "") =>
        ({ id: base + n, withBare, withResource, stanza: `<message id='m${n}'><body>ü ${n}</body></message>` });
      // Appended concurrently, as the server does: they share one commit.
      await Promise.all([
        s.archive.append("alice@a.test", entry(1, "bob@a.test", "phone")),
        s.archive.append("alice@a.test", entry(2, "carol@a.test")),
        s.archive.append("alice@a.test", entry(3, "bob@a.test", "laptop")),
        s.archive.append("alice@a.test", entry(4, "bob@a.test", "phone")),
        s.archive.append("bob@a.test", entry(5, "alice@a.test")),
      ]);
      const ids = (list: Array<{ id: number }>) => list.map((m) => m.id - base);
      assert.deepEqual(ids(await s.archive.query("alice@a.test", { newestFirst: false, limit: 10 })), [1, 2, 3, 4]);
      assert.deepEqual(ids(await s.archive.query("alice@a.test", { newestFirst: false, limit: 2 })), [1, 2]);
      assert.deepEqual(ids(await s.archive.query("alice@a.test", { newestFirst: true, limit: 2 })), [3, 4], "newest page, oldest first");
      assert.deepEqual(ids(await s.archive.query("alice@a.test", { afterId: base + 1, beforeId: base + 4, newestFirst: false, limit: 10 })), [2, 3]);
      assert.deepEqual(ids(await s.archive.query("alice@a.test", { withBare: "bob@a.test", newestFirst: false, limit: 10 })), [1, 3, 4]);
      assert.deepEqual(ids(await s.archive.query("alice@a.test", { withBare: "bob@a.test", withResource: "phone", newestFirst: true, limit: 1 })), [4]);
      const [first] = await s.archive.query("alice@a.test", { newestFirst: false, limit: 1 });
      assert.deepEqual(first, entry(1, "bob@a.test", "phone"), "stored exactly, Unicode included");
      assert.deepEqual(ids(await s.archive.get("alice@a.test", [base + 4, base + 2, base + 5, base + 9])), [2, 4], "only the owner's existing ids");
      assert.deepEqual(await s.archive.bounds("alice@a.test"), { first: base + 1, last: base + 4 });
      assert.equal(await s.archive.replace("alice@a.test", base + 2, "<message><retracted/></message>"), true);
      assert.equal(await s.archive.replace("bob@a.test", base + 2, "<x/>"), false, "only the owner's message");
      assert.equal(await s.archive.replace("alice@a.test", base + 99, "<x/>"), false);
      assert.equal((await s.archive.get("alice@a.test", [base + 2]))[0]!.stanza, "<message><retracted/></message>");
      assert.equal(await s.archive.bounds("nobody@a.test"), undefined);
      assert.equal(await s.archive.prune(base + 3, 1), 1, "at most the limit");
      assert.equal(await s.archive.prune(base + 3, 100), 1);
      assert.equal(await s.archive.prune(base + 3, 100), 0);
      assert.deepEqual(ids(await s.archive.query("alice@a.test", { newestFirst: false, limit: 10 })), [3, 4]);
      assert.deepEqual(ids(await s.archive.query("bob@a.test", { newestFirst: false, limit: 10 })), [5]);
      await s.archive.removeOwner("bob@a.test");
      assert.equal(await s.archive.bounds("bob@a.test"), undefined);
      assert.deepEqual(ids(await s.archive.query("alice@a.test", { newestFirst: false, limit: 10 })), [3, 4], "nobody else's");
    });

    it("pubsub: nodes, configs, newest-first items, republish moves to newest, max items, retract, purge, delete", async () => {
      const o = "alice@a.test";
      const item = (id: string, at: number) => ({ id, publisher: `${o}/phone`, payload: `<entry xmlns='x'>${id} ü</entry>`, publishedAt: at });
      assert.equal(await s.pubsub.createNode(o, "n1", '{"max":3}'), true);
      assert.equal(await s.pubsub.createNode(o, "n1", "{}"), false);
      await s.pubsub.createNode(o, "a0", "{}");
      assert.deepEqual(await s.pubsub.nodes(o), ["a0", "n1"]);
      assert.equal(await s.pubsub.getConfig(o, "n1"), '{"max":3}');
      await s.pubsub.setConfig(o, "n1", '{"max":2}');
      assert.equal(await s.pubsub.getConfig(o, "n1"), '{"max":2}');
      assert.equal(await s.pubsub.getConfig(o, "nope"), undefined);
      assert.deepEqual(await s.pubsub.publish(o, "n1", item("i1", 1), 3), []);
      await s.pubsub.publish(o, "n1", item("i2", 2), 3);
      await s.pubsub.publish(o, "n1", item("i3", 3), 3);
      assert.deepEqual((await s.pubsub.items(o, "n1")).map((i) => i.id), ["i3", "i2", "i1"]);
      assert.deepEqual(await s.pubsub.publish(o, "n1", item("i1", 4), 3), [], "a new version of i1 replaces it");
      assert.deepEqual((await s.pubsub.items(o, "n1")).map((i) => i.id), ["i1", "i3", "i2"]);
      assert.deepEqual((await s.pubsub.publish(o, "n1", item("i4", 5), 2)).sort(), ["i2", "i3"], "the oldest beyond max items go");
      assert.deepEqual((await s.pubsub.items(o, "n1")).map((i) => i.id), ["i4", "i1"]);
      assert.deepEqual((await s.pubsub.items(o, "n1", { max: 1 })), [item("i4", 5)], "stored exactly");
      assert.deepEqual((await s.pubsub.items(o, "n1", { ids: ["i1", "zz"] })).map((i) => i.id), ["i1"]);
      assert.equal(await s.pubsub.retract(o, "n1", "i4"), true);
      assert.equal(await s.pubsub.retract(o, "n1", "i4"), false);
      assert.deepEqual((await s.pubsub.items(o, "n1")).map((i) => i.id), ["i1"]);
      await s.pubsub.purge(o, "n1");
      assert.deepEqual(await s.pubsub.items(o, "n1"), []);
      await s.pubsub.publish(o, "n1", item("i5", 6), 10);
      assert.equal(await s.pubsub.deleteNode(o, "n1"), true);
      assert.equal(await s.pubsub.deleteNode(o, "n1"), false);
      assert.deepEqual(await s.pubsub.nodes(o), ["a0"]);
      await s.pubsub.createNode(o, "n1", "{}");
      assert.deepEqual(await s.pubsub.items(o, "n1"), [], "a re-created node starts empty");
    });

    it("abuse reports: newest first, limited, kept exactly", async () => {
      const report = (n: number) => ({ at: 1000 + n, reporter: "alice@a.test", reported: `spam${n}@x.test`, reason: "spam", text: n === 2 ? "ünïcode" : "", stanzaIds: n === 2 ? ["1", "2"] : [] });
      for (const n of [1, 2, 3]) await s.reports.add(report(n));
      const newest = await s.reports.list(2);
      assert.deepEqual(newest.map(({ id: _, ...r }) => r), [report(3), report(2)]);
      assert.ok(newest[0]!.id > newest[1]!.id, "ids increase");
      assert.equal((await s.reports.list(10)).length, 3);
    });

    it("abuse reports: removal by id", async () => {
      for (const n of [1, 2]) await s.reports.add({ at: n, reporter: "alice@a.test", reported: `spam${n}@x.test`, reason: "spam", text: "", stanzaIds: [] });
      const [second, first] = await s.reports.list(10);
      assert.equal(await s.reports.remove(first!.id), true);
      assert.equal(await s.reports.remove(first!.id), false);
      assert.deepEqual((await s.reports.list(10)).map((r) => r.reported), [second!.reported]);
    });

    it("uploads: usage totals and recent bytes, expiring ones oldest first, per owner, removal", async () => {
      const up = (id: string, owner: string, size: number, createdAt: number, expires = true) =>
        ({ id, owner, filename: `f ${id}.jpg`, size, contentType: "image/jpeg", createdAt, expires });
      await s.uploads.add(up("a1", "alice@a.test", 100, 1000));
      await s.uploads.add(up("a2", "alice@a.test", 50, 2000, false));
      await s.uploads.add(up("a3", "alice@a.test", 7, 3000));
      await s.uploads.add(up("b1", "bob@a.test", 5_000_000_000, 500));
      assert.deepEqual(await s.uploads.get("a2"), up("a2", "alice@a.test", 50, 2000, false));
      assert.equal(await s.uploads.get("zz"), undefined);
      assert.deepEqual(await s.uploads.usage("alice@a.test", 2000), { files: 3, bytes: 157, bytesSince: 57 });
      assert.deepEqual(await s.uploads.usage("nobody@a.test", 0), { files: 0, bytes: 0, bytesSince: 0 });
      assert.deepEqual((await s.uploads.expired(2500, 10)).map((u) => u.id), ["b1", "a1"], "non-expiring a2 is never listed");
      assert.deepEqual((await s.uploads.expired(5000, 1)).map((u) => u.id), ["b1"]);
      assert.deepEqual((await s.uploads.ofOwner("alice@a.test")).map((u) => u.id), ["a1", "a2", "a3"]);
      assert.deepEqual(await s.uploads.totals(), [{ owner: "alice@a.test", files: 3, bytes: 157 }, { owner: "bob@a.test", files: 1, bytes: 5_000_000_000 }]);
      await s.uploads.remove("a1");
      assert.equal(await s.uploads.get("a1"), undefined);
      await s.accounts.create(account("bob@a.test"));
      await s.accounts.delete("bob@a.test");
      assert.deepEqual(await s.uploads.ofOwner("bob@a.test"), [], "account deletion removes upload records");
    });

    it("rooms: put/replace/list by service, affiliations set/replace/remove, delete takes the affiliations", async () => {
      const room = (jid: string, subject = "") => ({ jid, config: '{"membersOnly":true}', subject, createdAt: 1700000000000 });
      await s.rooms.put(room("team@conference.a.test"));
      await s.rooms.put(room("alpha@conference.a.test"));
      await s.rooms.put(room("other@conference.b.test"));
      await s.rooms.put(room("team@conference.a.test", "<message><subject>ünïcode</subject></message>"));
      assert.deepEqual(await s.rooms.get("team@conference.a.test"), room("team@conference.a.test", "<message><subject>ünïcode</subject></message>"));
      assert.equal(await s.rooms.get("nope@conference.a.test"), undefined);
      assert.deepEqual((await s.rooms.list("conference.a.test")).map((r) => r.jid), ["alpha@conference.a.test", "team@conference.a.test"]);
      await s.rooms.setAffiliation("team@conference.a.test", { jid: "bob@a.test", affiliation: "member", nick: "bobby", reason: "" });
      await s.rooms.setAffiliation("team@conference.a.test", { jid: "amy@a.test", affiliation: "owner", nick: "", reason: "" });
      await s.rooms.setAffiliation("team@conference.a.test", { jid: "bob@a.test", affiliation: "admin", nick: "bob", reason: "promoted" });
      await s.rooms.setAffiliation("team@conference.a.test", { jid: "spam@x.test", affiliation: "outcast", nick: "", reason: "spam" });
      assert.deepEqual(await s.rooms.affiliations("team@conference.a.test"), [
        { jid: "amy@a.test", affiliation: "owner", nick: "", reason: "" },
        { jid: "bob@a.test", affiliation: "admin", nick: "bob", reason: "promoted" },
        { jid: "spam@x.test", affiliation: "outcast", nick: "", reason: "spam" },
      ]);
      await s.rooms.setAffiliation("team@conference.a.test", { jid: "spam@x.test", affiliation: "none" });
      assert.equal((await s.rooms.affiliations("team@conference.a.test")).length, 2);
      await s.rooms.delete("team@conference.a.test");
      assert.equal(await s.rooms.get("team@conference.a.test"), undefined);
      assert.deepEqual(await s.rooms.affiliations("team@conference.a.test"), []);
      assert.equal((await s.rooms.list("conference.a.test")).length, 1);
    });

    it("documents: several set and deleted at once", async () => {
      await s.documents.set("alice@a.test", "tally", "<t xmlns='x'>old</t>");
      await s.documents.set("carol@a.test", "tally", "<t xmlns='x'>carol</t>");
      await s.documents.setMany([
        { owner: "alice@a.test", key: "tally", xml: "<t xmlns='x'>new</t>" },
        { owner: "bob@a.test", key: "tally", xml: "<t xmlns='x'>bob</t>" },
        { owner: "carol@a.test", key: "tally", xml: undefined },
        { owner: "dave@a.test", key: "tally", xml: undefined },
      ]);
      assert.equal(await s.documents.get("alice@a.test", "tally"), "<t xmlns='x'>new</t>", "replaced");
      assert.equal(await s.documents.get("bob@a.test", "tally"), "<t xmlns='x'>bob</t>", "created");
      assert.equal(await s.documents.get("carol@a.test", "tally"), undefined, "deleted");
      assert.equal(await s.documents.get("dave@a.test", "tally"), undefined, "deleting a missing one is no error");
      await s.documents.setMany([]);
      assert.equal(await s.documents.get("alice@a.test", "tally"), "<t xmlns='x'>new</t>");
    });

    it("documents and last activity round-trip", async () => {
      assert.equal(await s.documents.get("alice@a.test", "private:x"), undefined);
      await s.documents.set("alice@a.test", "private:x", "<a xmlns='x'>1</a>");
      await s.documents.set("alice@a.test", "private:x", "<a xmlns='x'>2</a>");
      assert.equal(await s.documents.get("alice@a.test", "private:x"), "<a xmlns='x'>2</a>");
      await s.documents.delete("alice@a.test", "private:x");
      assert.equal(await s.documents.get("alice@a.test", "private:x"), undefined);
      for (const key of ["private:b 100%_", "vcard-temp", "private:a x", "privateer"]) await s.documents.set("alice@a.test", key, "<a/>");
      await s.documents.set("bob@a.test", "private:c", "<a/>");
      assert.deepEqual(await s.documents.keys("alice@a.test", "private:"), ["private:a x", "private:b 100%_"]);
      assert.deepEqual(await s.documents.keys("alice@a.test", "private:b 100%"), ["private:b 100%_"]);
      assert.deepEqual(await s.documents.keys("carol@a.test", "private:"), []);
      await s.lastActivity.set("alice@a.test", { at: 123, status: "bye" });
      assert.deepEqual(await s.lastActivity.get("alice@a.test"), { at: 123, status: "bye" });
    });

    it("devices: put/replace, newest first, tokens kept exactly, delete one or all, and with the account", async () => {
      const token = (hash: string) => ({ hash, mechanism: "HT-SHA-256-NONE", expiresAt: 1800000000000, count: 0 });
      const device = (id: string, lastSeen: number, extra: Record<string, unknown> = {}) =>
        ({ owner: "alice@a.test", id, software: "App", name: "Phone", firstSeen: 1, lastSeen, ...extra });
      await s.accounts.create(account("alice@a.test"));
      await s.devices.put(device("d1", 10, { current: token("aGFzaDE=") }));
      await s.devices.put(device("d2", 30));
      await s.devices.put({ ...device("d3", 20), owner: "bob@a.test" });
      assert.deepEqual(await s.devices.get("alice@a.test", "d1"), device("d1", 10, { current: token("aGFzaDE=") }));
      await s.devices.put(device("d1", 40, { current: { ...token("aGFzaDE="), count: 7 }, next: token("aGFzaDI=") }));
      assert.deepEqual(await s.devices.get("alice@a.test", "d1"), device("d1", 40, { current: { ...token("aGFzaDE="), count: 7 }, next: token("aGFzaDI=") }));
      assert.deepEqual((await s.devices.list("alice@a.test")).map((d) => d.id), ["d1", "d2"]);
      await s.devices.delete("alice@a.test", "d2");
      assert.deepEqual((await s.devices.list("alice@a.test")).map((d) => d.id), ["d1"]);
      await s.devices.put(device("d4", 50));
      await s.devices.delete("alice@a.test");
      assert.deepEqual(await s.devices.list("alice@a.test"), []);
      await s.devices.put(device("d5", 60));
      await s.accounts.delete("alice@a.test");
      assert.equal(await s.devices.get("alice@a.test", "d5"), undefined);
      assert.equal((await s.devices.list("bob@a.test")).length, 1, "nobody else's");
    });
  });
}
