/**
 * npm run bench:prune [-- --archive N --span-days D]: what MAM's retention pruning does to the
 * event loop of a server that holds a large archive. Parley starts in this process on a copy of a
 * seeded SQLite database (bench/load/archive.ts: N records, default 2,000,000, over the last D days,
 * default 30), so with the default retention of 14 days about (D − 14) / D of them have expired
 * and go in the prune that runs at start, as after an hour's interval or a few days of downtime.
 *
 * Reported: the server's start (the prune's first batch is in it), records pruned, seconds,
 * records per second, the event loop's delay while pruning once the server is up (p50, p99, max:
 * what every session's stanzas wait for meanwhile), the largest the WAL file got, and this
 * process's CPU (the checkpointer's worker thread included).
 */
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { monitorEventLoopDelay } from "node:perf_hooks";
import pino from "pino";
import { parseConfig } from "../src/config.js";
import { startServer } from "../src/server.js";
import { installArchive, seededArchive } from "./load/archive.js";
import { round } from "./load/common.js";

const args = process.argv.slice(2);
const option = (name: string, fallback: string) => { const i = args.indexOf(`--${name}`); return i === -1 ? fallback : args[i + 1]!; };
const records = Number(option("archive", "2000000"));
const spanDays = Number(option("span-days", "30"));
const DOMAIN = "parley.test";
// Nothing to prune otherwise, and no line to wait for.
if (!(spanDays > 14)) throw new Error("--span-days must exceed MAM's default retention of 14 days");

const seeded = await seededArchive(records, "lt", DOMAIN, spanDays);
const dataDir = mkdtempSync(join(tmpdir(), "parley-prune-"));
installArchive(seeded, dataDir);

// The MAM module logs the prune's total when it ends; the bench waits for that line.
let pruned: (total: number) => void;
const prunedTotal = new Promise<number>((resolve) => { pruned = resolve; });
const lines = new Writable({
  write(chunk, _encoding, done) {
    for (const line of String(chunk).split("\n").filter(Boolean)) {
      const entry = JSON.parse(line) as { stage?: string; pruned?: number };
      if (entry.stage === "mam" && entry.pruned !== undefined) pruned(entry.pruned);
    }
    done();
  },
});
const wal = join(dataDir, "parley.sqlite-wal");
let walMaxBytes = 0;
const walWatch = setInterval(() => { try { walMaxBytes = Math.max(walMaxBytes, statSync(wal).size); } catch { /* not yet created */ } }, 100);

const cpuStart = process.cpuUsage();
const started = performance.now();
const server = await startServer(parseConfig({
  hosts: [DOMAIN], dataDir, log: { level: "info" },
  listen: { address: "127.0.0.1", c2s: null, c2sDirectTls: null, https: null, http: null, s2s: null, component: null },
  chat: { enabled: false },
}), { log: pino({ level: "info" }, lines) });
// From here on: the prune has begun, with the server up (its start is reported on its own).
const startMs = performance.now() - started;
const delay = monitorEventLoopDelay({ resolution: 1 });
delay.enable();
const total = await prunedTotal;
const seconds = (performance.now() - started) / 1000;
const cpu = process.cpuUsage(cpuStart);
delay.disable();
clearInterval(walWatch);
await server.stop();
rmSync(dataDir, { recursive: true, force: true });

const ms = (ns: number) => round(ns / 1e6, 1);
console.log(JSON.stringify({
  records, spanDays, startMs: Math.round(startMs), pruned: total, seconds: round(seconds, 1), prunedPerSecond: Math.round(total / seconds),
  eventLoopDelayMs: { p50: ms(delay.percentile(50)), p99: ms(delay.percentile(99)), max: ms(delay.max) },
  walMaxMB: Math.round(walMaxBytes / 2 ** 20), cpuSeconds: round((cpu.user + cpu.system) / 1e6, 1),
}));
