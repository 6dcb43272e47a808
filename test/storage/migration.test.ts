/**
 * Migration 11 (docs/STORAGE.md): the old shape — an archive row per owner and copy, offline rows
 * deleted on acknowledgement — with data in it becomes message records, and every driver's stores
 * read the moved data as they read it before.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import Database from "better-sqlite3";
import pg from "pg";
import { createSqliteStorage } from "../../src/storage/sqlite/index.js";
import { SQLITE_MIGRATIONS } from "../../src/storage/sqlite/migrations.js";
import { createPostgresStorage } from "../../src/storage/postgres/index.js";
import { POSTGRES_MIGRATIONS } from "../../src/storage/postgres/migrations.js";
import { PG_URL, postgresUnavailable } from "../helpers/postgres.js";
import type { Storage } from "../../src/storage/index.js";

/** Migrations 1–9 are the old shape (10 adds the s2s outbox, 11 the message records). */
const OLD_SHAPE = 9;
const base = 1_800_000_000_000 * 1024;
const oldArchive = [
  // alice → bob, kept in both archives (two rows, two ids, as the old module wrote them)
  { id: base + 2, owner: "alice@a.test", with_bare: "bob@a.test", with_resource: "", stanza: "<message id='1'><body>hi</body></message>" },
  { id: base + 4, owner: "bob@a.test", with_bare: "alice@a.test", with_resource: "phone", stanza: "<message id='1'><body>hi</body></message>" },
  { id: base + 6, owner: "bob@a.test", with_bare: "carol@a.test", with_resource: "", stanza: "<message id='2'><body>yo</body></message>" },
];
const oldOffline = [
  { owner: "bob@a.test", stanza: "<message id='o1'><delay xmlns='urn:xmpp:delay' from='a.test' stamp='2026-01-01T00:00:00.000Z'/></message>", stored_at: 100 },
  { owner: "bob@a.test", stanza: "<message id='o2'/>", stored_at: 200 },
  { owner: "dave@a.test", stanza: "<message id='o3'/>", stored_at: 300 },
];

async function checkMoved(s: Storage): Promise<void> {
  const ids = (ms: Array<{ id: number }>) => ms.map((m) => m.id - base);
  assert.deepEqual(await s.archive.query("bob@a.test", { newestFirst: false, limit: 10 }), [
    { id: base + 4, withBare: "alice@a.test", withResource: "phone", stanza: oldArchive[1]!.stanza },
    { id: base + 6, withBare: "carol@a.test", withResource: "", stanza: oldArchive[2]!.stanza },
  ]);
  assert.deepEqual(ids(await s.archive.query("alice@a.test", { withBare: "bob@a.test", newestFirst: true, limit: 1 })), [2]);
  assert.deepEqual(await s.archive.bounds("bob@a.test"), { first: base + 4, last: base + 6 });
  const queue = await s.offline.list("bob@a.test");
  assert.deepEqual(queue.map((m) => [m.stanza, m.storedAt]), [[oldOffline[0]!.stanza, 100], [oldOffline[1]!.stanza, 200]], "in the old order");
  assert.equal(await s.offline.total(), 3);
  // The moved entries behave like new ones: acknowledging moves the watermark, new entries come after.
  await s.offline.acknowledge("bob@a.test", [queue[0]!.id]);
  const next = await s.offline.append("bob@a.test", "<message id='new'/>", 400, 10);
  assert.deepEqual((await s.offline.list("bob@a.test")).map((m) => m.stanza), ["<message id='o2'/>", "<message id='new'/>"]);
  assert.ok(next! > queue[1]!.id);
  assert.equal(await s.archive.prune(base + 5, 100), 2, "moved archive records are pruned like new ones");
}

describe("migration to message records: sqlite", () => {
  const dir = mkdtempSync(join(tmpdir(), "parley-migrate-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("moves old archive and offline rows", async () => {
    const path = join(dir, "old.sqlite");
    const db = new Database(path);
    db.exec("CREATE TABLE schema_version (version INTEGER NOT NULL)");
    for (const step of SQLITE_MIGRATIONS.slice(0, OLD_SHAPE)) db.exec(step);
    db.prepare("INSERT INTO schema_version (version) VALUES (?)").run(OLD_SHAPE);
    const insertArchive = db.prepare("INSERT INTO archive (id, owner, with_bare, with_resource, stanza) VALUES (@id, @owner, @with_bare, @with_resource, @stanza)");
    for (const row of oldArchive) insertArchive.run(row);
    const insertOffline = db.prepare("INSERT INTO offline_messages (owner, stanza, stored_at) VALUES (@owner, @stanza, @stored_at)");
    for (const row of oldOffline) insertOffline.run(row);
    db.close();

    const s = createSqliteStorage({ path });
    try {
      await checkMoved(s);
    } finally {
      await s.close();
    }
    const reopened = new Database(path);
    assert.equal(reopened.prepare("SELECT version FROM schema_version").pluck().get(), SQLITE_MIGRATIONS.length);
    assert.equal(reopened.prepare("SELECT count(*) FROM sqlite_master WHERE name IN ('archive', 'offline_messages')").pluck().get(), 0, "old tables gone");
    reopened.close();
  });
});

const pgMissing = await postgresUnavailable();
describe("migration to message records: postgres", () => {
  it("moves old archive and offline rows", { skip: pgMissing && `Postgres unreachable: ${pgMissing}` }, async () => {
    const schema = `parley_migrate_${randomBytes(6).toString("hex")}`;
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    try {
      await c.query(`CREATE SCHEMA "${schema}"`);
      await c.query(`SET search_path = "${schema}"`);
      await c.query("CREATE TABLE schema_version (version INTEGER NOT NULL)");
      for (const step of POSTGRES_MIGRATIONS.slice(0, OLD_SHAPE)) await c.query(step);
      await c.query("INSERT INTO schema_version (version) VALUES ($1)", [OLD_SHAPE]);
      for (const r of oldArchive) await c.query("INSERT INTO archive (id, owner, with_bare, with_resource, stanza) VALUES ($1, $2, $3, $4, $5)", [r.id, r.owner, r.with_bare, r.with_resource, r.stanza]);
      for (const r of oldOffline) await c.query("INSERT INTO offline_messages (owner, stanza, stored_at) VALUES ($1, $2, $3)", [r.owner, r.stanza, r.stored_at]);

      const s = await createPostgresStorage({ url: PG_URL, schema, poolSize: 2 });
      try {
        await checkMoved(s);
      } finally {
        await s.close();
      }
      assert.equal((await c.query("SELECT version FROM schema_version")).rows[0].version, POSTGRES_MIGRATIONS.length);
      assert.equal((await c.query("SELECT to_regclass('archive') AS a, to_regclass('offline_messages') AS o")).rows.filter((r) => r.a || r.o).length, 0, "old tables gone");
    } finally {
      await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      await c.end();
    }
  });
});
