/**
 * bench:s2s-outbox — what the durable s2s outbox (src/xmpp/s2s/pool.ts) costs per remote message,
 * per storage driver: the append, group-committed as the pool does it (the sends of one event-loop
 * turn share a commit), and the removal once the peer confirmed, in the batches acks come in.
 * CPU time of this process (process.cpuUsage) per message, and wall time per message; Postgres'
 * own CPU is not in the CPU figure. The machine is shared: compare the drivers, do not promise.
 * Usage: npm run bench:s2s-outbox -- [--messages 5000] [--per-turn 20] [--per-ack 10]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createMemoryStorage } from "../src/storage/memory/index.js";
import { createSqliteStorage } from "../src/storage/sqlite/index.js";
import type { Storage } from "../src/storage/index.js";
import { freshPostgresStorage, postgresUnavailable } from "../test/helpers/postgres.js";

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? def : Number(process.argv[i + 1]);
};
const MESSAGES = arg("messages", 5000);
const PER_TURN = arg("per-turn", 20);
const PER_ACK = arg("per-ack", 10);

/** A chat message as the pool stores it (from/to full JIDs, a body, a receipt request). */
const stanza = (i: number) => `<message xmlns='jabber:client' from='alice@a.test/phone' to='bob@b.test' type='chat' id='m-${i}-${"x".repeat(8)}'><body>message number ${i}, about as long as a chat line is</body><request xmlns='urn:xmpp:receipts'/></message>`;

async function measure(storage: Storage): Promise<{ cpuUs: number; wallUs: number }> {
  const cpu = process.cpuUsage();
  const start = performance.now();
  for (let i = 0; i < MESSAGES; i += PER_TURN) {
    const turn = Array.from({ length: Math.min(PER_TURN, MESSAGES - i) }, (_, k) => storage.s2sOutbox.append("", "a.test", "b.test", stanza(i + k), Date.now()));
    const ids = await Promise.all(turn);
    for (let k = 0; k < ids.length; k += PER_ACK) await storage.s2sOutbox.remove(ids.slice(k, k + PER_ACK));
  }
  const used = process.cpuUsage(cpu);
  const wall = performance.now() - start;
  if ((await storage.s2sOutbox.list("")).length !== 0) throw new Error("rows left behind");
  return { cpuUs: (used.user + used.system) / MESSAGES, wallUs: (wall * 1000) / MESSAGES };
}

const dir = mkdtempSync(join(tmpdir(), "parley-outbox-bench-"));
const drivers: Array<[string, () => Promise<Storage> | Storage]> = [
  ["memory", () => createMemoryStorage()],
  ["sqlite (WAL, synchronous=normal)", () => createSqliteStorage({ path: join(dir, "normal.sqlite") })],
  ["sqlite (WAL, synchronous=full)", () => createSqliteStorage({ path: join(dir, "full.sqlite"), synchronous: "full" })],
];
const pgMissing = await postgresUnavailable();
if (!pgMissing) drivers.push(["postgres (fresh schema)", freshPostgresStorage]);

console.log(`# bench:s2s-outbox — ${new Date().toISOString()}, node ${process.version}, load ${(await import("node:os")).loadavg().map((l) => l.toFixed(2)).join(" ")}`);
console.log(`${MESSAGES} messages of ${stanza(0).length} bytes, ${PER_TURN} appended per event-loop turn, removed ${PER_ACK} per ack${pgMissing ? `; postgres skipped: ${pgMissing}` : ""}\n`);
console.log("| driver | CPU µs/message (this process) | wall µs/message |\n|---|---|---|");
for (const [name, open] of drivers) {
  const storage = await open();
  await measure(storage); // warm-up: statements prepared, pages cached
  const r = await measure(storage);
  console.log(`| ${name} | ${r.cpuUs.toFixed(1)} | ${r.wallUs.toFixed(1)} |`);
  await storage.close();
}
rmSync(dir, { recursive: true, force: true });
