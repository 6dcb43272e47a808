/**
 * WAL checkpoints in a worker thread. SQLite's automatic checkpoint runs inside whichever commit
 * crosses the threshold: on the event loop, copying pages back into the database and fsyncing
 * while every session waits. Measured on 1:1 traffic with archiving (two archive rows per message):
 * 40 µs per row with automatic checkpoints, 16 µs without (bench/load S3, docs/PERFORMANCE.md).
 * Here the main connection never checkpoints; a second connection in a worker does, every
 * `intervalMs`, in PASSIVE mode (it never waits for or blocks a writer), and copies each page once
 * however many commits touched it. Durability is unchanged: a commit is in the WAL when it returns.
 */
import { Worker } from "node:worker_threads";
import { createRequire } from "node:module";
import type Database from "better-sqlite3";

// Plain CommonJS evaluated in the worker, so it runs the same from TypeScript sources and from dist/.
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const Database = require(workerData.module);
const db = new Database(workerData.path);
db.pragma("busy_timeout = 5000");
const checkpoint = (mode) => {
  try { db.pragma("wal_checkpoint(" + mode + ")"); } catch (err) { parentPort.postMessage({ error: String(err) }); }
};
const timer = setInterval(() => checkpoint("PASSIVE"), workerData.intervalMs);
parentPort.on("message", (m) => {
  if (m !== "stop") return;
  clearInterval(timer);
  checkpoint("TRUNCATE");
  db.close();
  parentPort.postMessage({ stopped: true });
});
`;

export class BackgroundCheckpointer {
  private readonly worker: Worker;
  private stopping: Promise<void> | undefined;
  private exited = false;

  constructor(db: Database.Database, path: string, onError: (message: string) => void, intervalMs = 500) {
    db.pragma("wal_autocheckpoint = 0");
    this.worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { path, intervalMs, module: createRequire(import.meta.url).resolve("better-sqlite3") },
    });
    this.worker.unref();
    this.worker.once("exit", () => { this.exited = true; });
    this.worker.on("message", (m: { error?: string }) => { if (m.error) onError(m.error); });
    this.worker.on("error", (err) => {
      // Without the worker the WAL would grow without bound: SQLite checkpoints on commit again.
      onError(String(err));
      if (db.open) db.pragma("wal_autocheckpoint = 1000");
    });
  }

  /** A last checkpoint that also truncates the WAL, then the worker ends. */
  stop(): Promise<void> {
    // A worker that already died (its error was reported) gets no message and sends no 'exit' again.
    if (this.exited) return Promise.resolve();
    this.stopping ??= new Promise<void>((resolve) => {
      const done = () => resolve();
      this.worker.once("exit", done);
      this.worker.on("message", (m: { stopped?: boolean }) => { if (m.stopped) void this.worker.terminate().then(done, done); });
      this.worker.postMessage("stop");
    });
    return this.stopping;
  }
}
