import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import Database from "better-sqlite3";
import { storageContract } from "./contract.js";
import { createMemoryStorage } from "../../src/storage/memory/index.js";
import { createSqliteStorage, migrate } from "../../src/storage/sqlite/index.js";
import { SQLITE_MIGRATIONS } from "../../src/storage/sqlite/migrations.js";

const dir = mkdtempSync(join(tmpdir(), "parley-storage-"));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

storageContract("memory", () => createMemoryStorage());
storageContract("sqlite (file, WAL)", () => createSqliteStorage({ path: join(dir, `db${++n}.sqlite`) }));

describe("sqlite migrations", () => {
  it("are applied once and recorded", () => {
    const db = new Database(":memory:");
    assert.equal(migrate(db), SQLITE_MIGRATIONS.length);
    assert.equal(migrate(db), SQLITE_MIGRATIONS.length);
    assert.equal(db.prepare("SELECT version FROM schema_version").pluck().get(), SQLITE_MIGRATIONS.length);
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
