import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import Database from "better-sqlite3";
import pg from "pg";
import { storageContract } from "./contract.js";
import { createMemoryStorage } from "../../src/storage/memory/index.js";
import { createSqliteStorage, migrate } from "../../src/storage/sqlite/index.js";
import { SQLITE_MIGRATIONS } from "../../src/storage/sqlite/migrations.js";
import { freshPostgresSchema, freshPostgresStorage, PG_URL, postgresUnavailable } from "../helpers/postgres.js";
import { ARCHIVE_PARTIES } from "../../src/storage/postgres/index.js";

const dir = mkdtempSync(join(tmpdir(), "parley-storage-"));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

storageContract("memory", () => createMemoryStorage());
storageContract("sqlite (file, WAL)", () => createSqliteStorage({ path: join(dir, `db${++n}.sqlite`) }));
// Steps of two records in slices of one entry: the contract's queries meet the archive index
// before, during and after its steps (src/storage/sqlite/archive-index.ts).
storageContract("sqlite (archive index in steps of two records)",
  () => createSqliteStorage({ path: join(dir, `db${++n}.sqlite`), archiveIndex: { every: 2, sliceEntries: 1 } }));

const pgMissing = await postgresUnavailable();
if (pgMissing) {
  console.log(`# SKIPPED storage contract on postgres: no database reachable (${pgMissing})`);
  describe("storage contract: postgres", () => { it("needs a reachable Postgres", { skip: `Postgres unreachable: ${pgMissing}` }, () => {}); });
} else {
  storageContract("postgres (fresh schema per test)", freshPostgresStorage);
  describe("postgres driver", () => {
    it("group-commits concurrent offline appends and still enforces the per-user limit", async () => {
      const s = await freshPostgresStorage();
      try {
        const ids = await Promise.all(Array.from({ length: 50 }, (_, i) => s.offline.append("bob@a.test", `<message id='${i}'/>`, i, 40)));
        assert.equal(ids.filter((id) => id !== undefined).length, 40);
        assert.equal(await s.offline.count("bob@a.test"), 40);
        const rows = await s.offline.list("bob@a.test");
        assert.deepEqual(rows.map((r) => r.stanza), Array.from({ length: 40 }, (_, i) => `<message id='${i}'/>`), "order kept");
      } finally {
        await s.close();
      }
    });
    it("a record written again under its id (a retried commit whose answer was lost) comes back with its first seq, stored once", async () => {
      const s = await freshPostgresStorage();
      try {
        const record = { id: 1_800_000_000_000 * 1024, stanza: "<message id='m'/>", storedAt: 1,
          recipient: { owner: "bob@a.test", withBare: "alice@a.test", withResource: "" }, queue: { owner: "bob@a.test", limit: 10 } };
        const first = await s.messages.write({ ...record });
        const [again, unnamed] = await Promise.all([s.messages.write({ ...record }), s.offline.append("bob@a.test", "<message id='n'/>", 2, 10)]);
        assert.equal(again, first);
        assert.ok(unnamed !== undefined && unnamed > first!, "the record without an id takes the next seq");
        assert.deepEqual((await s.offline.list("bob@a.test")).map((r) => r.stanza), ["<message id='m'/>", "<message id='n'/>"]);
        assert.equal((await s.archive.get("bob@a.test", [record.id])).length, 1);
      } finally {
        await s.close();
      }
    });
    it("can answer an archive query by correspondent from the conversation's index, in id order, on either side", async () => {
      const { storage: s, schema } = await freshPostgresSchema(1);
      const c = new pg.Client({ connectionString: PG_URL, options: `-c search_path=${schema}` });
      await c.connect();
      try {
        // An empty table is read whole whatever the indexes; without that choice the index must serve.
        await c.query("SET enable_seqscan = off");
        for (const side of ["sender", "recipient"]) {
          const { rows } = await c.query(`EXPLAIN SELECT id, stanza FROM messages WHERE ${side}_owner = $1
            AND LEAST(${ARCHIVE_PARTIES}) = LEAST($1::text, $2::text) AND GREATEST(${ARCHIVE_PARTIES}) = GREATEST($1::text, $2::text)
            AND (sender_owner IS NOT NULL OR recipient_owner IS NOT NULL) AND ${side}_with = $2::text AND id < $3
            ORDER BY id DESC LIMIT $4`, ["alice@a.test", "bob@a.test", 1, 1]);
          const plan = rows.map((r: { "QUERY PLAN": string }) => r["QUERY PLAN"]).join("\n");
          assert.match(plan, /Index Scan Backward using messages_conversation on messages/, `${side}:\n${plan}`);
        }
      } finally {
        await c.end();
        await s.close();
      }
    });
  });
}

describe("sqlite driver: the queue sizes the limit check keeps (src/storage/sqlite/queue-sizes.ts)", () => {
  it("appends committed together still stop at the limit, and acknowledgements make room again", async () => {
    const s = createSqliteStorage({ path: join(dir, `db${++n}.sqlite`) });
    try {
      const ids = await Promise.all(Array.from({ length: 50 }, (_, i) => s.offline.append("bob@a.test", `<message id='${i}'/>`, i, 40)));
      assert.equal(ids.filter((id) => id !== undefined).length, 40);
      await s.offline.acknowledge("bob@a.test", ids.slice(0, 5) as number[]);
      const more = await Promise.all(Array.from({ length: 10 }, (_, i) => s.offline.append("bob@a.test", `<message id='more${i}'/>`, 100 + i, 40)));
      assert.equal(more.filter((id) => id !== undefined).length, 5);
      assert.equal(await s.offline.count("bob@a.test"), 40);
    } finally {
      await s.close();
    }
  });

  it("a commit by another connection to the same file is seen: the sizes are counted again", async () => {
    const path = join(dir, `db${++n}.sqlite`);
    const s = createSqliteStorage({ path });
    const other = new Database(path);
    try {
      await s.offline.append("bob@a.test", "<message id='1'/>", 1, 3);
      await s.offline.append("bob@a.test", "<message id='2'/>", 2, 3);
      // As an operator's tool on the same file would: bob's queue emptied behind the server's back.
      other.prepare("UPDATE messages SET queue_owner = NULL WHERE queue_owner = ?").run("bob@a.test");
      const accepted = await Promise.all([3, 4, 5].map((i) => s.offline.append("bob@a.test", `<message id='${i}'/>`, i, 3)));
      assert.equal(accepted.filter((id) => id !== undefined).length, 3, "counted from the empty queue, not from the 2 held before");
      assert.equal(await s.offline.count("bob@a.test"), 3);
    } finally {
      other.close();
      await s.close();
    }
  });
});

describe("sqlite migrations", () => {
  it("are applied once and recorded", () => {
    const db = new Database(":memory:");
    assert.equal(migrate(db), SQLITE_MIGRATIONS.length);
    assert.equal(migrate(db), SQLITE_MIGRATIONS.length);
    assert.equal(db.prepare("SELECT version FROM schema_version").pluck().get(), SQLITE_MIGRATIONS.length);
  });

  it("leave no per-owner index on the message records: their archive entries are in archive_entries (migration 14)", () => {
    const db = new Database(":memory:");
    migrate(db);
    const indexes = db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'messages' AND sql IS NOT NULL ORDER BY name").pluck().all();
    assert.deepEqual(indexes, ["messages_id", "messages_queue"]);
  });

  it("move the archive entries of records written before migration 14 into archive_entries", async () => {
    const path = join(dir, `db${++n}.sqlite`);
    const before = new Database(path);
    before.exec("CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (13)");
    for (const sql of SQLITE_MIGRATIONS.slice(0, 13)) before.exec(sql);
    const insert = before.prepare(`INSERT INTO messages (id, stanza, stored_at, sender_owner, sender_with, sender_resource,
      recipient_owner, recipient_with, recipient_resource, queue_owner) VALUES (?, ?, 1, ?, ?, '', ?, ?, ?, ?)`);
    insert.run(1, "<message id='1'/>", "alice@a.test", "bob@a.test", "bob@a.test", "alice@a.test", "phone", null);
    insert.run(2, "<message id='2'/>", null, null, "alice@a.test", "room@muc.a.test", "nick", null);
    insert.run(null, "<message id='3'/>", null, null, null, null, null, "bob@a.test");
    before.close();
    const s = createSqliteStorage({ path });
    try {
      const ids = async (owner: string) => (await s.archive.query(owner, { newestFirst: false, limit: 10 })).map((m) => [m.id, m.withBare, m.withResource]);
      assert.deepEqual(await ids("alice@a.test"), [[1, "bob@a.test", ""], [2, "room@muc.a.test", "nick"]]);
      assert.deepEqual(await ids("bob@a.test"), [[1, "alice@a.test", "phone"]]);
      assert.deepEqual((await s.offline.list("bob@a.test")).map((m) => m.stanza), ["<message id='3'/>"]);
      const look = new Database(path, { readonly: true });
      assert.equal(look.prepare("SELECT count(*) FROM archive_entries").pluck().get(), 3);
      assert.equal(look.prepare("SELECT indexed_through FROM archive_index").pluck().get(), 3, "every record moved: no tail");
      look.close();
    } finally {
      await s.close();
    }
  });

  it("data survives reopening the file", async () => {
    const path = join(dir, "reopen.sqlite");
    const a = createSqliteStorage({ path });
    await a.offline.append("bob@a.test", "<message/>", 1, 10);
    await a.close();
    const b = createSqliteStorage({ path });
    assert.equal(await b.offline.count("bob@a.test"), 1);
    await b.close();
  });
});

describe("sqlite driver: the archive index in sorted bulk steps (src/storage/sqlite/archive-index.ts)", () => {
  const base = 1_800_000_000_000 * 1024;
  const owners = ["alice@a.test", "bob@a.test", "carol@a.test", "dave@a.test", "erin@a.test"];
  /** Record i goes from owner i mod 5 to owner (i + 1) mod 5, both archiving it. */
  const record = (i: number) => ({
    id: base + i, stanza: `<message id='${i}'/>`, storedAt: i,
    sender: { owner: owners[i % 5]!, withBare: owners[(i + 1) % 5]!, withResource: "" },
    recipient: { owner: owners[(i + 1) % 5]!, withBare: owners[i % 5]!, withResource: "phone" },
  });
  const expected = (owner: string, count: number) =>
    Array.from({ length: count }, (_, i) => i).filter((i) => owners[i % 5] === owner || owners[(i + 1) % 5] === owner).map((i) => base + i);
  const turn = () => new Promise((resolve) => setImmediate(resolve));

  // Slices of 10 entries are cut from every record; slices of 100 from one record in two (the plan's sample).
  for (const [every, sliceEntries] of [[40, 10], [200, 100]] as const) it(`finds every entry exactly once before, during and after a step, and a step cut short by a close goes on at the next start (steps of ${every} records, slices of ${sliceEntries} entries)`, async () => {
    const path = join(dir, `db${++n}.sqlite`);
    const options = { path, archiveIndex: { every, sliceEntries } };
    const perRound = (every * 3) / 8;
    let s = createSqliteStorage(options);
    const look = new Database(path, { readonly: true });
    const state = () => look.prepare("SELECT indexed_through AS through, step_done_below AS doneBelow FROM archive_index").get() as { through: number; doneBelow: string | null };
    const entries = () => look.prepare("SELECT count(*) FROM archive_entries").pluck().get() as number;
    const everyoneSeesAll = async (count: number, when: string) => {
      for (const owner of owners) {
        const ids = (await s.archive.query(owner, { newestFirst: false, limit: 1000 })).map((m) => m.id);
        assert.deepEqual(ids, expected(owner, count), `${owner}, ${when}`);
        const newest = await s.archive.query(owner, { newestFirst: true, limit: 3 });
        assert.deepEqual(newest.map((m) => m.id), expected(owner, count).slice(-3), `${owner}'s newest page, ${when}`);
        const withNext = await s.archive.query(owner, { withBare: owners[(owners.indexOf(owner) + 1) % 5]!, newestFirst: false, limit: 1000 });
        assert.ok(withNext.every((m) => m.withBare === owners[(owners.indexOf(owner) + 1) % 5]), `${owner} with the next owner, ${when}`);
        assert.deepEqual(await s.archive.bounds(owner), count === 0 ? undefined : { first: expected(owner, count)[0], last: expected(owner, count).at(-1) }, `${owner}'s bounds, ${when}`);
      }
    };
    try {
      let written = 0;
      const midStep = new Set<string>();
      for (let round = 0; round < 6; round++) {
        await Promise.all(Array.from({ length: perRound }, () => s.messages.write(record(written++))));
        for (let t = 0; t < 4; t++) {
          await everyoneSeesAll(written, `round ${round}, turn ${t}, ${JSON.stringify(state())}`);
          const { doneBelow } = state();
          if (doneBelow !== null) midStep.add(doneBelow);
          await turn();
        }
      }
      assert.ok(midStep.size >= 2, `queries ran while steps were half done, at several slices: ${[...midStep].join(", ")}`);
      assert.ok(state().through > 0, "steps finished");

      // Writes until a step starts, then a close after its first slice: the rest waits for the next start.
      while (state().doneBelow === null) {
        await Promise.all(Array.from({ length: perRound }, () => s.messages.write(record(written++))));
        await turn();
        await turn();
      }
      await s.close();
      assert.notEqual(state().doneBelow, null, "closed half way through a step");
      s = createSqliteStorage(options);
      await everyoneSeesAll(written, "reopened half way through a step");
      while (state().doneBelow !== null) await turn();
      await everyoneSeesAll(written, "the resumed step done");
      const tail = look.prepare("SELECT count(*) FROM messages WHERE seq > ?").pluck().get(state().through) as number;
      assert.equal(entries(), 2 * (written - tail), "two entries for each record up to the mark, none twice");
    } finally {
      look.close();
      await s.close();
    }
  });

  it("takes entries away with their record or side, in the index and in the tail", async () => {
    const path = join(dir, `db${++n}.sqlite`);
    const s = createSqliteStorage({ path, archiveIndex: { every: 10, sliceEntries: 4 } });
    const look = new Database(path, { readonly: true });
    try {
      await Promise.all(Array.from({ length: 10 }, (_, i) => s.messages.write(record(i))));
      while ((look.prepare("SELECT indexed_through FROM archive_index").pluck().get() as number) < 10) await turn();
      await Promise.all(Array.from({ length: 5 }, (_, i) => s.messages.write(record(10 + i))));
      // bob's archive goes: his side of records 0–14 (indexed and tail); alice keeps hers.
      await s.archive.removeOwner("bob@a.test");
      assert.deepEqual(await s.archive.query("bob@a.test", { newestFirst: false, limit: 100 }), []);
      assert.deepEqual((await s.archive.query("alice@a.test", { newestFirst: false, limit: 100 })).map((m) => m.id), expected("alice@a.test", 15));
      assert.equal(look.prepare("SELECT count(*) FROM archive_entries WHERE owner = 'bob@a.test'").pluck().get(), 0);
      assert.equal(await s.archive.prune(base + 12, 100), 12);
      assert.deepEqual((await s.archive.query("alice@a.test", { newestFirst: false, limit: 100 })).map((m) => m.id), expected("alice@a.test", 15).filter((id) => id >= base + 12));
      assert.equal(look.prepare("SELECT count(*) FROM archive_entries WHERE id < ?").pluck().get(base + 12), 0, "pruned records' entries gone");
    } finally {
      look.close();
      await s.close();
    }
  });

  it("reads an owner's entries through the entries' indexes and the tail by seq", () => {
    const db = new Database(":memory:");
    migrate(db);
    const plan = (sql: string, ...values: unknown[]) => (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...values) as Array<{ detail: string }>).map((r) => r.detail);
    const join = "SELECT e.id, m.stanza FROM archive_entries e JOIN messages m ON m.seq = e.seq WHERE e.owner = ?";
    assert.deepEqual(plan(`${join} AND e.id < ? ORDER BY e.id DESC LIMIT ?`, "a", 1, 1),
      ["SEARCH e USING PRIMARY KEY (owner=? AND id<?)", "SEARCH m USING INTEGER PRIMARY KEY (rowid=?)"]);
    assert.deepEqual(plan(`${join} AND e.correspondent = ? AND e.id > ? ORDER BY e.id LIMIT ?`, "a", "b", 1, 1),
      ["SEARCH e USING COVERING INDEX archive_entries_with (owner=? AND correspondent=? AND id>?)", "SEARCH m USING INTEGER PRIMARY KEY (rowid=?)"]);
    assert.deepEqual(plan("SELECT id, stanza FROM messages WHERE seq > ? AND sender_owner = ? AND +id > ? ORDER BY +id LIMIT ?", 1, "a", 1, 1),
      ["SEARCH messages USING INTEGER PRIMARY KEY (rowid>?)", "USE TEMP B-TREE FOR ORDER BY"]);
  });
});
