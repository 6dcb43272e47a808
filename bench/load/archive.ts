/**
 * A Parley that already holds a realistic archive, for issue 20's stall study: `--archive N`
 * starts the SQLite target on a database with ARCHIVE_ACCOUNTS accounts (the generator's own
 * names and passwords, so S3 and S4 log in as them and find their registrations there) and N
 * archived 1:1 messages between them, each record carrying both archives' entries, as a live one
 * does (docs/STORAGE.md).
 *
 * Each account writes to about 20 contacts, S3's partner (the next account) among them, so each
 * user's archive indexes hold ~2N/ARCHIVE_ACCOUNTS entries spread as in a real deployment. The
 * records span the last 13 days by default: inside MAM's default retention (14 days), so the
 * server starts with nothing to prune, as one whose hourly prune has run; bench/prune.ts asks for
 * a longer span to have a backlog. Seeding millions of records takes minutes: the database is
 * built once per (N, prefix, schema version) in the OS temp directory and copied for each target.
 */
import { closeSync, copyFileSync, existsSync, fsyncSync, mkdtempSync, openSync, renameSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../../src/config.js";
import { startServer } from "../../src/server.js";
import { silentLogger } from "../../src/log.js";
import { SQLITE_MIGRATIONS } from "../../src/storage/sqlite/migrations.js";
import type { MessageRecord } from "../../src/storage/index.js";
import { log, passwordOf, users } from "./common.js";
import { pool } from "./xmpp.js";

export const ARCHIVE_ACCOUNTS = 10_000;
const CONTACTS_PER_ACCOUNT = 20;
const DAY_MS = 24 * 3600 * 1000;
/**
 * Records handed to the store per event-loop turn: one group commit each. Small enough that the
 * checkpointer's hold can copy a commit's frames back in time and restart the WAL (5,000 per
 * commit left it growing past 5 GB).
 */
const WRITES_PER_COMMIT = 500;

/** The path of a seeded SQLite database (built on first use), to copy to `<dataDir>/parley.sqlite`. */
export async function seededArchive(records: number, prefix: string, domain: string, spanDays = 13): Promise<string> {
  const file = join(tmpdir(), `parley-archive-${records}-${spanDays}d-${prefix}-${domain}-v${SQLITE_MIGRATIONS.length}.sqlite`);
  if (existsSync(file)) return file;
  const started = performance.now();
  const dataDir = mkdtempSync(join(tmpdir(), "parley-seed-"));
  const server = await startServer(parseConfig({
    hosts: [domain], dataDir, log: { level: "warn" },
    listen: { address: "127.0.0.1", c2s: null, c2sDirectTls: null, https: null, http: null, s2s: null, component: null },
    chat: { enabled: false },
  }), { log: silentLogger() });
  try {
    const names = users(prefix, ARCHIVE_ACCOUNTS);
    const { errors } = await pool(names, 16, (name) => server.accounts.create(`${name}@${domain}`, passwordOf(name)).then(() => undefined));
    if (errors.length) throw new Error(`seeding: ${errors.length} accounts failed, first: ${errors[0]!.message}`);
    log(`archive seed: ${ARCHIVE_ACCOUNTS} accounts in ${Math.round((performance.now() - started) / 1000)} s`);
    const spanMs = spanDays * DAY_MS;
    const firstMs = Date.now() - spanMs - 60_000;
    let random = 0x9e3779b9;
    const next = (below: number) => { random = (Math.imul(random, 1664525) + 1013904223) >>> 0; return random % below; };
    for (let k = 0; k < records; k += WRITES_PER_COMMIT) {
      const batch: Promise<unknown>[] = [];
      for (let j = k; j < Math.min(records, k + WRITES_PER_COMMIT); j++) {
        const from = next(ARCHIVE_ACCOUNTS);
        const to = (from + 1 + next(CONTACTS_PER_ACCOUNT)) % ARCHIVE_ACCOUNTS;
        const storedAt = firstMs + Math.floor((j * spanMs) / records);
        batch.push(server.storage.messages.write(archived(j, storedAt, `${names[from]}@${domain}`, `${names[to]}@${domain}`)));
      }
      await Promise.all(batch);
      if ((k + WRITES_PER_COMMIT) % 100_000 === 0) log(`archive seed: ${k + WRITES_PER_COMMIT} of ${records} records`);
    }
  } finally {
    await server.stop();
  }
  // Moved into place only when complete (a rename is atomic), so an interrupted seed is not taken for a finished one.
  renameSync(join(dataDir, "parley.sqlite"), file);
  rmSync(dataDir, { recursive: true, force: true });
  log(`archive seed: ${records} records in ${Math.round((performance.now() - started) / 1000)} s (${file})`);
  return file;
}

/**
 * Puts a copy of the seeded database where a SQLite target's server will open it, on disk before
 * the server starts: a gigabyte of dirty pages still being written back would hold up the
 * server's own writes (the first step of S3 ran at p50 5 s with the core half idle).
 */
export function installArchive(seeded: string, dataDir: string): void {
  const copy = join(dataDir, "parley.sqlite");
  copyFileSync(seeded, copy);
  const fd = openSync(copy, "r+");
  try { fsyncSync(fd); } finally { closeSync(fd); }
}

/** Record `n`, as the message module writes a delivered 1:1 chat message: both archive entries, no queue entry. */
function archived(n: number, storedAt: number, from: string, to: string): MessageRecord {
  // An archive id as MAM makes them: milliseconds × 1024 plus a counter (at most one record per ms here).
  const id = storedAt * 1024 + (n % 1024);
  const stanza = `<message xmlns='jabber:client' from='${from}/phone' to='${to}' type='chat' id='seed${n}'>`
    + `<body>Archived message ${n}, about as long as a chat line is.</body>`
    + `<stanza-id xmlns='urn:xmpp:sid:0' by='${to}' id='${id}'/></message>`;
  return {
    id, stanza, storedAt,
    sender: { owner: from, withBare: to, withResource: "" },
    recipient: { owner: to, withBare: from, withResource: "phone" },
  };
}
