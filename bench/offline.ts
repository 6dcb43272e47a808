/**
 * bench:offline — offline store throughput with the stated durability, group commit against a
 * one-transaction-per-message baseline in the same run, and drain time at login.
 *   SQLite (WAL, synchronous=normal and =full) and Postgres (synchronous_commit=on) when reachable.
 * Usage: npm run bench:offline -- [--messages 5000] [--users 50]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { createSqliteStorage } from "../src/storage/sqlite/index.js";
import { createPostgresStorage } from "../src/storage/postgres/index.js";
import type { Storage } from "../src/storage/index.js";
import { parseConfig } from "../src/config.js";
import { startServer } from "../src/server.js";
import { silentLogger } from "../src/log.js";
import { rawSession } from "../test/helpers/raw.js";

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? def : Number(process.argv[i + 1]);
};
const MESSAGES = arg("messages", 5000);
const USERS = arg("users", 50);
const PG_URL = process.env.PARLEY_TEST_PG_URL ?? "postgres://root@127.0.0.1:5432/test";
const stanza = (n: number) => `<message xmlns="jabber:client" to="u${n % USERS}@localhost" from="s@localhost/x" type="chat" id="m${n}"><body>message number ${n} with a typical length of text in it</body><delay xmlns="urn:xmpp:delay" from="localhost" stamp="2026-11-23T08:00:00.000Z">Offline Storage</delay></message>`;

async function rate(store: Storage, concurrent: boolean, count: number, offset: number): Promise<number> {
  const start = performance.now();
  if (concurrent) {
    // As a loaded server does: many appends in flight at once.
    await Promise.all(Array.from({ length: count }, (_, i) => store.offline.append(`u${i % USERS}@localhost`, stanza(offset + i), Date.now(), 1e9)));
  } else {
    for (let i = 0; i < count; i++) await store.offline.append(`u${i % USERS}@localhost`, stanza(offset + i), Date.now(), 1e9);
  }
  return count / ((performance.now() - start) / 1000);
}

async function measure(name: string, open: () => Promise<Storage>, cleanup: () => Promise<void>) {
  const store = await open();
  try {
    const baselineCount = Math.max(200, Math.floor(MESSAGES / 10));
    const baseline = await rate(store, false, baselineCount, 0);
    const grouped = await rate(store, true, MESSAGES, baselineCount);
    console.log(`| ${name} | ${Math.round(baseline)} | ${Math.round(grouped)} | ${(grouped / baseline).toFixed(1)}× |`);
  } finally {
    await store.close();
    await cleanup();
  }
}

const dir = mkdtempSync(join(tmpdir(), "parley-bench-offline-"));
console.log(`offline store, ${MESSAGES} messages to ${USERS} users (median-of-one run; repeat for medians)\n`);
console.log("| store (durability) | one tx per message, msg/s | group commit, msg/s | ratio |");
console.log("|---|---|---|---|");
await measure("SQLite WAL synchronous=normal (survives kill -9)", async () => createSqliteStorage({ path: join(dir, "n.sqlite") }), async () => {});
await measure("SQLite WAL synchronous=full (survives power loss)", async () => createSqliteStorage({ path: join(dir, "f.sqlite"), synchronous: "full" }), async () => {});
const probe = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 2000 });
let pgUp = true;
try { await probe.connect(); await probe.end(); } catch { pgUp = false; }
if (pgUp) {
  const schema = `parley_bench_${randomBytes(5).toString("hex")}`;
  await measure("Postgres synchronous_commit=on", () => createPostgresStorage({ url: PG_URL, schema }), async () => {
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    await c.query(`DROP SCHEMA "${schema}" CASCADE`);
    await c.end();
  });
} else console.log("| Postgres | skipped: not reachable | | |");

// Drain: 100 queued messages for one user, time from available presence to the 100th delivery.
const server = await startServer(parseConfig({ hosts: ["localhost"], dataDir: dir, listen: { address: "127.0.0.1", s2s: null, c2s: null, c2sDirectTls: 0, https: null, http: null }, auth: { scramIterations: 4096 } }), { log: silentLogger() });
await server.accounts.create("drain@localhost", "pw");
await Promise.all(Array.from({ length: 100 }, (_, i) => server.storage.offline.append("drain@localhost", stanza(i).replace(/to="[^"]+"/, 'to="drain@localhost"'), Date.now(), 1e9)));
const c = await rawSession(server.ports.c2sDirectTls!, "drain", "pw", "r");
const start = performance.now();
c.send("<presence/>");
await c.waitFor(/id="m99"/, 10_000);
const drainMs = performance.now() - start;
// Answer the server's ping that follows the flush, as a client does; that is what deletes the rows.
const ping = await c.waitFor(/<iq type="get" from="localhost" to="drain@localhost\/r" id="([^"]+)"><ping/, 10_000);
c.send(`<iq type='result' id='${ping[1]}' to='localhost'/>`);
for (let i = 0; i < 200 && (await server.storage.offline.count("drain@localhost")) > 0; i++) await new Promise((r) => setTimeout(r, 10));
console.log(`\ndrain at login (SQLite, 100 queued messages): ${drainMs.toFixed(1)} ms to the 100th message; rows deleted after the client's ping answer: ${100 - (await server.storage.offline.count("drain@localhost"))}`);
c.close();
await server.stop();
rmSync(dir, { recursive: true, force: true });
