import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import Database from "better-sqlite3";
import pg from "pg";
import { storageContract } from "./contract.js";
import { createMemoryStorage } from "../../src/storage/memory/index.js";
import { ARCHIVE_CONVERSATION, createSqliteStorage, migrate } from "../../src/storage/sqlite/index.js";
import { SQLITE_MIGRATIONS } from "../../src/storage/sqlite/migrations.js";
import { freshPostgresSchema, freshPostgresStorage, PG_URL, postgresUnavailable } from "../helpers/postgres.js";
import { ARCHIVE_PARTIES } from "../../src/storage/postgres/index.js";

const dir = mkdtempSync(join(tmpdir(), "parley-storage-"));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

storageContract("memory", () => createMemoryStorage());
storageContract("sqlite (file, WAL)", () => createSqliteStorage({ path: join(dir, `db${++n}.sqlite`) }));

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

  it("answer an archive query by correspondent from the conversation's index, in id order, on either side", () => {
    const db = new Database(":memory:");
    migrate(db);
    for (const side of ["sender", "recipient"]) {
      const sql = `SELECT id, stanza FROM messages WHERE ${side}_owner = ? AND ${ARCHIVE_CONVERSATION} AND ${side}_with = ?
        AND id < ? ORDER BY id DESC LIMIT ?`;
      const plan = (db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all("a", "a", "b", "a", "b", "b", 1, 1) as Array<{ detail: string }>).map((r) => r.detail);
      assert.deepEqual(plan, ["SEARCH messages USING INDEX messages_conversation (<expr>=? AND <expr>=? AND id<?)"], side);
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
