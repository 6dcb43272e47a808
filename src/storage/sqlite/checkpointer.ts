/**
 * WAL checkpoints in a worker thread. SQLite's automatic checkpoint runs inside whichever commit
 * crosses the threshold: on the event loop, copying pages back into the database and fsyncing
 * while every session waits. Measured on 1:1 traffic with archiving (two archive rows per message):
 * 40 µs per row with automatic checkpoints, 16 µs without (bench/load S3, docs/PERFORMANCE.md).
 * Here the main connection never checkpoints; a second connection in a worker does, every
 * `intervalMs`, in PASSIVE mode (it never waits for or blocks a writer), and copies each page once
 * however many commits touched it. Durability is unchanged: a commit is in the WAL when it returns.
 *
 * The WAL must also restart. SQLite writes from the start of the WAL again only when a write
 * transaction begins with every frame already copied back (https://sqlite.org/wal.html, "Avoiding
 * Excessively Large WAL Files"). Under steady traffic a concurrent checkpoint never gets there: the
 * frames committed while it ran are always left. The WAL then grows without end (1.3 GB in 20 s of
 * bench:path), and every frame lands on a new file block, which the kernel zeroes first (17 % of
 * the server's CPU samples; 150,000 messages of bench:path cost 23 % more CPU per message than with
 * restarts). So a round that finds the WAL past `holdAtFrames` ends with a short hold: the worker
 * catches up until a checkpoint is quick, the main thread holds its group commits back (the event
 * loop keeps running), the worker copies the little that is left, and the next commit restarts the
 * WAL. A hold is only an opportunity for the restart, never a condition of correctness, so it is
 * capped in time and ends when the worker does.
 */
import { Worker } from "node:worker_threads";
import { createRequire } from "node:module";
import type Database from "better-sqlite3";

/** About 64 MB of 4 KB pages: a restart every 0.7 s at 3,500 offline messages/s (S4), every few seconds at 1,000. */
export const HOLD_AT_FRAMES = 16_384;

export interface CheckpointerOptions {
  intervalMs?: number;
  /**
   * The WAL size, in frames, from which a round ends with a hold. Below it the WAL grows on; a hold
   * costs the commits it delays (a tail checkpoint with two fsyncs, 10–20 ms under load here).
   */
  holdAtFrames?: number;
  /** A catch-up checkpoint this quick leaves a tail small enough to copy while commits are held. */
  quickMs?: number;
  /** Catch-up checkpoints after the round's first, at most. */
  catchUpRounds?: number;
  /** The longest commits are held, whatever the worker does. */
  maxHoldMs?: number;
}

// Plain CommonJS evaluated in the worker, so it runs the same from TypeScript sources and from dist/.
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const Database = require(workerData.module);
const db = new Database(workerData.path);
db.pragma("busy_timeout = 5000");
let timer;
let stopped = false;
// The WAL's size after the last held tail: unchanged means nothing was written since, so no hold.
let sizeAfterTail = -1;
const checkpoint = (mode) => {
  const started = performance.now();
  try {
    const [result] = db.pragma("wal_checkpoint(" + mode + ")");
    return { ms: performance.now() - started, frames: result.log };
  } catch (err) {
    parentPort.postMessage({ error: String(err) });
    return undefined;
  }
};
const round = () => {
  let result = checkpoint("PASSIVE");
  if (result && result.frames >= workerData.holdAtFrames && result.frames !== sizeAfterTail) {
    for (let i = 0; result && result.ms > workerData.quickMs && i < workerData.catchUpRounds; i++) result = checkpoint("PASSIVE");
    if (result) return parentPort.postMessage({ hold: true });
  }
  timer = setTimeout(round, workerData.intervalMs);
};
parentPort.on("message", (m) => {
  if (m === "held") {
    if (stopped) return;
    sizeAfterTail = checkpoint("PASSIVE")?.frames ?? -1;
    parentPort.postMessage({ release: true });
    timer = setTimeout(round, workerData.intervalMs);
  } else if (m === "stop") {
    stopped = true;
    clearTimeout(timer);
    checkpoint("TRUNCATE");
    db.close();
    parentPort.postMessage({ stopped: true });
  }
});
timer = setTimeout(round, workerData.intervalMs);
`;

export class BackgroundCheckpointer {
  private readonly worker: Worker;
  private stopping: Promise<void> | undefined;
  private exited = false;
  private hold: { settled: Promise<void>; release(): void } | undefined;

  constructor(db: Database.Database, path: string, onError: (message: string) => void, options: CheckpointerOptions = {}) {
    db.pragma("wal_autocheckpoint = 0");
    const maxHoldMs = options.maxHoldMs ?? 200;
    this.worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: {
        path, intervalMs: options.intervalMs ?? 500, holdAtFrames: options.holdAtFrames ?? HOLD_AT_FRAMES,
        quickMs: options.quickMs ?? 5, catchUpRounds: options.catchUpRounds ?? 3,
        module: createRequire(import.meta.url).resolve("better-sqlite3"),
      },
    });
    this.worker.unref();
    this.worker.once("exit", () => { this.exited = true; this.release(); });
    this.worker.on("message", (m: { error?: string; hold?: boolean; release?: boolean }) => {
      if (m.error) onError(m.error);
      if (m.hold) {
        this.holdCommits(maxHoldMs);
        this.worker.postMessage("held");
      }
      if (m.release) this.release();
    });
    this.worker.on("error", (err) => {
      // Without the worker the WAL would grow without bound: SQLite checkpoints on commit again.
      onError(String(err));
      this.release();
      if (db.open) db.pragma("wal_autocheckpoint = 1000");
    });
  }

  /** While the worker copies the WAL's tail: settles when group commits may go ahead. Undefined otherwise. */
  get commitsHeld(): Promise<void> | undefined {
    return this.hold?.settled;
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

  private holdCommits(maxHoldMs: number): void {
    if (this.hold) return;
    let release!: () => void;
    const settled = new Promise<void>((resolve) => { release = resolve; });
    const cap = setTimeout(() => this.release(), maxHoldMs);
    cap.unref();
    this.hold = { settled, release: () => { clearTimeout(cap); release(); } };
  }

  private release(): void {
    const hold = this.hold;
    this.hold = undefined;
    hold?.release();
  }
}
