/** SQLite checkpoints in a worker thread (src/storage/sqlite/checkpointer.ts). */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import Database from "better-sqlite3";
import { closeSync, mkdtempSync, openSync, readSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BackgroundCheckpointer } from "../../src/storage/sqlite/checkpointer.js";

const withDb = async (body: (db: Database.Database, path: string) => Promise<void>) => {
  const dir = mkdtempSync(join(tmpdir(), "checkpointer-"));
  const path = join(dir, "db.sqlite");
  const db = new Database(path);
  db.pragma("journal_mode = WAL");
  try { await body(db, path); } finally { db.close(); rmSync(dir, { recursive: true, force: true }); }
};

describe("background WAL checkpoints", () => {
  it("the main connection never checkpoints; stop() copies the WAL back and truncates it", async () => {
    await withDb(async (db, path) => {
      const checkpointer = new BackgroundCheckpointer(db, path, (m) => assert.fail(m), { intervalMs: 60_000 });
      db.exec("CREATE TABLE t (v TEXT)");
      const insert = db.prepare("INSERT INTO t VALUES (?)");
      for (let i = 0; i < 3000; i++) insert.run("x".repeat(500));
      assert.ok(statSync(`${path}-wal`).size > 1000 * 4096, "past SQLite's automatic threshold, the WAL kept growing");
      await checkpointer.stop();
      assert.equal(statSync(`${path}-wal`).size, 0);
      assert.equal((db.prepare("SELECT count(*) AS n FROM t").get() as { n: number }).n, 3000);
    });
  });

  it("under steady writes the WAL restarts: commits wait out the worker's short hold", async () => {
    await withDb(async (db, path) => {
      const checkpointer = new BackgroundCheckpointer(db, path, (m) => assert.fail(m), { intervalMs: 20, holdAtFrames: 256 });
      db.exec("CREATE TABLE t (v TEXT)");
      const insert = db.prepare("INSERT INTO t VALUES (?)");
      const commit = db.transaction((n: number) => { for (let i = 0; i < n; i++) insert.run("x".repeat(1000)); });
      // The WAL header's checkpoint sequence number (https://sqlite.org/fileformat2.html#walformat)
      // goes up by one at each restart.
      const restarts = () => {
        const header = Buffer.alloc(16);
        const fd = openSync(`${path}-wal`, "r");
        try { readSync(fd, header, 0, 16, 0); } finally { closeSync(fd); }
        return header.readUInt32BE(12);
      };
      const before = restarts();
      let rows = 0;
      let held = 0;
      // As a group commit does: one batch per event-loop turn, waiting while commits are held.
      for (const until = Date.now() + 1500; Date.now() < until;) {
        if (checkpointer.commitsHeld) { held++; await checkpointer.commitsHeld; }
        commit(50);
        rows += 50;
        await new Promise((r) => setImmediate(r));
      }
      const restarted = restarts() - before;
      await checkpointer.stop();
      assert.ok(held > 0, "the worker held commits at least once");
      assert.ok(restarted >= 3, `the WAL restarted ${restarted} times in 1.5 s of writes`);
      assert.equal((db.prepare("SELECT count(*) AS n FROM t").get() as { n: number }).n, rows);
    });
  });

  it("stop() returns when the worker has already died", async () => {
    await withDb(async (db, path) => {
      const checkpointer = new BackgroundCheckpointer(db, path, () => {});
      await (checkpointer as unknown as { worker: { terminate(): Promise<number> } }).worker.terminate();
      await new Promise((r) => setImmediate(r));
      const outcome = await Promise.race([checkpointer.stop().then(() => "stopped"), new Promise((r) => setTimeout(() => r("hung"), 2000))]);
      assert.equal(outcome, "stopped");
    });
  });
});
