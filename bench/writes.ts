/**
 * bench:writes — storage statements per 1:1 message on the shipped defaults (SQLite, MAM on,
 * durable live delivery on): alice and bob online with stream management (XEP-0198), alice sends,
 * bob acknowledges. Every statement better-sqlite3 runs in the server is counted by kind and
 * table while the messages flow, and divided by the number of messages (issue 20: "writes per
 * message, before/after").
 * Also the process's CPU time per 10,000 messages over the same window (server and the two clients:
 * one process, closed loop, so the batching is the same in every run; compare runs, not servers).
 * Usage: npm run bench:writes -- [--messages 2000] [--no-sm]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { parseConfig } from "../src/config.js";
import { startServer } from "../src/server.js";
import { silentLogger } from "../src/log.js";
import { rawSession, type RawClient } from "../test/helpers/raw.js";

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? def : Number(process.argv[i + 1]);
};
const MESSAGES = arg("messages", 2000);
/** Without stream management there is no durable live delivery: only the archives are written. */
const SM = !process.argv.includes("--no-sm");

// Counts every statement run, by "VERB table", while `counting` is on.
const counts = new Map<string, { statements: number; rows: number }>();
let counting = false;
const probe = new Database(":memory:");
const statementProto = Object.getPrototypeOf(probe.prepare("SELECT 1")) as Record<string, (...a: unknown[]) => unknown>;
probe.close();
const kindOf = (sql: string) => {
  const m = /^\s*(INSERT(?: OR \w+)? INTO|UPDATE|DELETE FROM|SELECT)\s+(?:.*?\bFROM\s+)?(\w+)/is.exec(sql);
  return m ? `${m[1]!.split(/\s+/)[0]!.toUpperCase()} ${m[2]}` : sql.slice(0, 30);
};
for (const method of ["run", "get", "all"]) {
  const original = statementProto[method]!;
  statementProto[method] = function (this: { source: string }, ...args: unknown[]) {
    const result = original.apply(this, args);
    if (counting) {
      const key = kindOf(this.source);
      const c = counts.get(key) ?? { statements: 0, rows: 0 };
      c.statements++;
      c.rows += method === "run" ? (result as { changes: number }).changes : 0;
      counts.set(key, c);
    }
    return result;
  };
}

const dir = mkdtempSync(join(tmpdir(), "parley-bench-writes-"));
const server = await startServer(parseConfig({ hosts: ["localhost"], dataDir: dir, listen: { address: "127.0.0.1", s2s: null, c2s: null, c2sDirectTls: 0, https: null, http: null }, auth: { scramIterations: 4096 } }), { log: silentLogger() });
await server.accounts.create("alice@localhost", "pw");
await server.accounts.create("bob@localhost", "pw");
const online = async (user: string): Promise<RawClient> => {
  const c = await rawSession(server.ports.c2sDirectTls!, user, "pw", "r");
  if (SM) {
    c.send("<enable xmlns='urn:xmpp:sm:3'/>");
    await c.waitFor(/<enabled/);
  }
  c.send("<presence/>");
  return c;
};
const alice = await online("alice");
const bob = await online("bob");
// One message first, so that preferences and caches are loaded as on a running server.
alice.send("<message to='bob@localhost' type='chat' id='warm'><body>warm-up</body></message>");
await bob.waitFor(/id="warm"/, 10_000);
if (SM) bob.send("<a xmlns='urn:xmpp:sm:3' h='1'/>");
await new Promise((r) => setTimeout(r, 500));

counting = true;
const cpuBefore = process.cpuUsage();
// In batches of 100 (the server closes a stream past its unacknowledged limit); after each, bob
// acknowledges everything he got so far (the warm-up counts), as a client answering <r/> does.
const BATCH = 100;
for (let n = 0; n < MESSAGES; n += BATCH) {
  const end = Math.min(MESSAGES, n + BATCH);
  for (let k = n; k < end; k++) alice.send(`<message to='bob@localhost' type='chat' id='m${k}'><body>message ${k} with a typical length of text in it</body></message>`);
  await bob.waitFor(new RegExp(`id="m${end - 1}"`), 60_000);
  if (SM) bob.send(`<a xmlns='urn:xmpp:sm:3' h='${end + 1}'/>`);
}
await new Promise((r) => setTimeout(r, 1000));
counting = false;
const cpu = process.cpuUsage(cpuBefore);

const rows = [...counts].sort((a, b) => b[1].statements - a[1].statements);
const per = (n: number) => (n / MESSAGES).toFixed(2);
console.log(`${MESSAGES} messages alice → bob, ${SM ? "both with stream management" : "without stream management"}, SQLite, MAM on, durable live delivery on\n`);
console.log("| statement | per message | rows changed per message |");
console.log("|---|---|---|");
for (const [key, c] of rows) console.log(`| ${key} | ${per(c.statements)} | ${per(c.rows)} |`);
const isTransaction = (k: string) => /^(BEGIN|COMMIT|ROLLBACK)/.test(k);
const writes = rows.filter(([k]) => !k.startsWith("SELECT") && !isTransaction(k));
console.log(`| commits (transactions) | ${per(rows.filter(([k]) => k.startsWith("COMMIT")).reduce((n, [, c]) => n + c.statements, 0))} | |`);
console.log(`| **all writes** | **${per(writes.reduce((n, [, c]) => n + c.statements, 0))}** | **${per(writes.reduce((n, [, c]) => n + c.rows, 0))}** |`);
console.log(`| process CPU-s per 10,000 messages | ${(((cpu.user + cpu.system) / 1e6) / MESSAGES * 10_000).toFixed(3)} | |`);
console.log(`| all reads | ${per(rows.filter(([k]) => k.startsWith("SELECT")).reduce((n, [, c]) => n + c.statements, 0))} | |`);
alice.close();
bob.close();
await server.stop();
// Bytes on disk per message: the pages of the message tables and their indexes (SQLite dbstat),
// the warm-up message included.
const db = new Database(join(dir, "parley.sqlite"), { readonly: true });
const pages = db.prepare(`SELECT s.name AS name, sum(s.pgsize) AS bytes FROM dbstat s JOIN sqlite_schema m ON m.name = s.name
  WHERE coalesce(m.tbl_name, s.name) IN ('archive', 'offline_messages', 'messages', 'queue_marks', 'queue_acks') GROUP BY s.name ORDER BY s.name`).all() as Array<{ name: string; bytes: number }>;
db.close();
console.log(`\n| table or index | bytes per message |\n|---|---|`);
for (const p of pages) console.log(`| ${p.name} | ${Math.round(p.bytes / (MESSAGES + 1))} |`);
console.log(`| **all** | **${Math.round(pages.reduce((n, p) => n + p.bytes, 0) / (MESSAGES + 1))}** |`);
rmSync(dir, { recursive: true, force: true });
