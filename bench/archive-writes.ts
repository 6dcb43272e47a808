/**
 * npm run bench:archive-writes [-- --owners 100,1000,10000 --seed 100000 --records 50000 --batch 20]:
 * what writing one archived 1:1 message costs the SQLite driver (issue 20), and how that grows
 * with the number of users writing. Each record carries the sender's and the recipient's archive
 * entry (MAM) and goes through Parley's driver as the MAM module hands it over
 * (storage.messages.write: group commit, background checkpointer), `--batch` records per
 * event-loop turn, into a database that already holds `--seed` records among the same owners.
 *
 * Reported per owner count: this process's CPU per record (the checkpointer's worker thread
 * included) and the bytes its write calls wrote per record (/proc/self/io wchar: WAL frames and
 * the checkpoints' copies). Before migration 14 a record added one entry to each of three
 * per-owner index B-trees (the sender's and the recipient's by id, and the conversation's; four
 * before migration 13); among many owners those entries land on different leaf pages for every
 * record, and a commit writes each page it dirtied to the WAL whole (docs/PERFORMANCE.md, "What an
 * archived message costs SQLite"). Since then its entries are indexed later in sorted bulk steps
 * (src/storage/sqlite/archive-index.ts), which the figures include.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createSqliteStorage } from "../src/storage/sqlite/index.js";
import { archiveClock } from "../src/modules/mam.js";
import type { MessageRecord, Storage } from "../src/storage/index.js";
import { round } from "./load/common.js";

const args = process.argv.slice(2);
const option = (name: string, fallback: string) => { const i = args.indexOf(`--${name}`); return i === -1 ? fallback : args[i + 1]!; };
const ownerCounts = option("owners", "100,1000,10000").split(",").map(Number);
const seed = Number(option("seed", "100000"));
const records = Number(option("records", "50000"));
const batch = Number(option("batch", "20"));
const DOMAIN = "parley.test";

/** Bytes this process has passed to write calls so far (Linux). */
const bytesWritten = () => Number(/^wchar: (\d+)$/m.exec(readFileSync("/proc/self/io", "utf8"))![1]);

const body = "x".repeat(120);
const nextId = archiveClock(0);
const record = (owners: number): MessageRecord => {
  const a = Math.floor(Math.random() * owners);
  const from = `lt${a}@${DOMAIN}`;
  const to = `lt${(a + Math.floor(owners / 2)) % owners}@${DOMAIN}`;
  const id = nextId();
  return {
    id, storedAt: Date.now(),
    stanza: `<message xmlns='jabber:client' to='${to}' from='${from}/load' type='chat' id='m${id}'><body>${body}</body>`
      + `<stanza-id xmlns='urn:xmpp:sid:0' id='${id}' by='${to}'/></message>`,
    sender: { owner: from, withBare: to, withResource: "" },
    recipient: { owner: to, withBare: from, withResource: "load" },
  };
};

const write = async (storage: Storage, owners: number, count: number) => {
  for (let done = 0; done < count; done += batch) {
    const turn: Promise<unknown>[] = [];
    for (let i = 0; i < batch; i++) turn.push(storage.messages.write(record(owners)));
    await Promise.all(turn);
  }
};

const results = [];
for (const owners of ownerCounts) {
  const dir = mkdtempSync(join(tmpdir(), "parley-archive-writes-"));
  const storage = createSqliteStorage({ path: join(dir, "parley.sqlite") });
  try {
    await write(storage, owners, seed);
    const cpuStart = process.cpuUsage();
    const bytesStart = bytesWritten();
    await write(storage, owners, records);
    const cpu = process.cpuUsage(cpuStart);
    const result = { owners, seed, records, batch,
      cpuMicrosPerRecord: round((cpu.user + cpu.system) / records),
      bytesWrittenPerRecord: Math.round((bytesWritten() - bytesStart) / records) };
    console.error(`owners ${owners}: ${result.cpuMicrosPerRecord} µs CPU and ${result.bytesWrittenPerRecord} bytes written per record`);
    results.push(result);
  } finally {
    await storage.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
console.log(JSON.stringify(results));
