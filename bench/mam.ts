/**
 * bench:mam — message archive (XEP-0313) figures on SQLite and Postgres (when reachable):
 *  - archive write rate (group-committed appends) and storage time per message;
 *  - query latency over TLS for a page of 50 from an archive of --size messages (default 100,000):
 *    the newest page, the oldest page, a page in the middle (RSM after), a page filtered by 'with';
 *  - archive write overhead on 1:1 delivery: server+client CPU per message with the archive on vs
 *    off (retentionDays 0), same run, alternated.
 * Usage: npm run bench:mam -- [--size 100000] [--queries 100] [--messages 3000] [--rounds 3] [--drivers sqlite,postgres]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { parseConfig } from "../src/config.js";
import { startServer, type Server } from "../src/server.js";
import { silentLogger } from "../src/log.js";
import { idAt } from "../src/modules/mam.js";
import { rawSession, type RawClient } from "../test/helpers/raw.js";
import { median } from "./stats.js";

const arg = (name: string, def: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? def : Number(process.argv[i + 1]);
};
const SIZE = arg("size", 100_000);
const QUERIES = arg("queries", 100);
const MESSAGES = arg("messages", 3000);
const ROUNDS = arg("rounds", 3);
const PG_URL = process.env.PARLEY_TEST_PG_URL ?? "postgres://root@127.0.0.1:5432/test";
const CONTACTS = 20;
const DRIVERS = (process.argv.includes("--drivers") ? process.argv[process.argv.indexOf("--drivers") + 1]! : "sqlite,postgres").split(",");

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
const ms = (x: number) => x.toFixed(2);

let runs = 0;
async function withServer<T>(driver: "sqlite" | "postgres", mam: Record<string, unknown>, fn: (s: Server) => Promise<T>): Promise<T> {
  const dataDir = mkdtempSync(join(tmpdir(), "parley-bench-mam-"));
  // Every run on a fresh store: its own SQLite file, or its own Postgres schema.
  const schema = `bench_mam_${process.pid}_${runs++}`;
  const storage = driver === "sqlite" ? { driver } : { driver, url: PG_URL, schema };
  const server = await startServer(parseConfig({
    hosts: ["localhost"], dataDir, storage,
    listen: { address: "127.0.0.1", s2s: null, c2s: null, c2sDirectTls: 0, https: null, http: null },
    auth: { scramIterations: 4096 },
    modules: { mam },
  }), { log: silentLogger() });
  try {
    return await fn(server);
  } finally {
    await server.stop();
    rmSync(dataDir, { recursive: true, force: true });
    if (driver === "postgres") {
      const c = new pg.Client({ connectionString: PG_URL });
      await c.connect();
      await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await c.end();
    }
  }
}

/** Fills alice's archive with SIZE messages with CONTACTS contacts, 1,000 appends in flight at a time. */
async function fill(server: Server): Promise<{ ratePerSec: number; ids: number[] }> {
  const base = idAt(Date.now() - 7 * 86_400_000);
  const ids: number[] = [];
  const start = performance.now();
  for (let done = 0; done < SIZE;) {
    const batch = Math.min(1000, SIZE - done);
    await Promise.all(Array.from({ length: batch }, (_, i) => {
      const n = done + i;
      const id = base + n * 1024;
      ids.push(id);
      const other = `contact${n % CONTACTS}@localhost`;
      return server.storage.archive.append("alice@localhost", {
        id, withBare: other, withResource: "phone",
        stanza: `<message xmlns="jabber:client" from="${other}/phone" to="alice@localhost" type="chat" id="m${n}"><body>archived message number ${n} with a typical length of text</body></message>`,
      });
    }));
    done += batch;
  }
  return { ratePerSec: SIZE / ((performance.now() - start) / 1000), ids };
}

async function timeQuery(c: RawClient, query: string): Promise<number> {
  const id = `q${Math.random().toString(36).slice(2)}`;
  const mark = c.text.length;
  const start = performance.now();
  c.send(`<iq type='set' id='${id}'><query xmlns='urn:xmpp:mam:2'>${query}</query></iq>`);
  const m = await c.waitFor(new RegExp(`<iq[^>]*id="${id}"[^>]*>[\\s\\S]*?</iq>`), 30_000, mark);
  const elapsed = performance.now() - start;
  const results = (c.text.slice(mark).match(/<result xmlns="urn:xmpp:mam:2"/g) ?? []).length;
  if (!/type="result"/.test(m[0]) || results !== 50) throw new Error(`query returned ${results} results: ${m[0].slice(0, 200)}`);
  c.text = ""; // keep the buffer small
  return elapsed;
}

async function queryLatencies(name: string, driver: "sqlite" | "postgres") {
  await withServer(driver, {}, async (server) => {
    await server.accounts.create("alice@localhost", "pw");
    const { ratePerSec, ids } = await fill(server);
    if (driver === "postgres") {
      // Statistics as autovacuum keeps them on a live server; right after a bulk load the planner
      // has none and picks a bitmap scan plus sort for the 'with' query (9.5 ms instead of 0.1 ms).
      const c = new pg.Client({ connectionString: PG_URL });
      await c.connect();
      await c.query(`ANALYZE ${server.config.storage.driver === "postgres" ? server.config.storage.schema : "public"}.archive`);
      await c.end();
    }
    const c = await rawSession(server.ports.c2sDirectTls!, "alice", "pw", "bench");
    const form = (field: string, value: string) => `<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field><field var='${field}'><value>${value}</value></field></x>`;
    const shapes: Array<[string, () => string]> = [
      ["newest page (<before/>)", () => "<set xmlns='http://jabber.org/protocol/rsm'><max>50</max><before/></set>"],
      ["oldest page", () => "<set xmlns='http://jabber.org/protocol/rsm'><max>50</max></set>"],
      ["middle page (<after>id</after>)", () => `<set xmlns='http://jabber.org/protocol/rsm'><max>50</max><after>${ids[Math.floor(Math.random() * (SIZE - 100))]}</after></set>`],
      ["newest page with one contact", () => `${form("with", "contact7@localhost")}<set xmlns='http://jabber.org/protocol/rsm'><max>50</max><before/></set>`],
    ];
    console.log(`\n### ${name}: archive of ${SIZE} messages, filled at ${Math.round(ratePerSec)} msg/s (${(1e6 / ratePerSec).toFixed(1)} µs per archived message)\n`);
    console.log("| query (page of 50, over TLS) | p50 ms | p99 ms | max ms |");
    console.log("|---|---|---|---|");
    for (const [label, body] of shapes) {
      for (let i = 0; i < 5; i++) await timeQuery(c, body()); // warm-up
      const samples: number[] = [];
      for (let i = 0; i < QUERIES; i++) samples.push(await timeQuery(c, body()));
      samples.sort((a, b) => a - b);
      console.log(`| ${label} | ${ms(quantile(samples, 0.5))} | ${ms(quantile(samples, 0.99))} | ${ms(samples[samples.length - 1]!)} |`);
    }
    c.close();
  });
}

/** CPU (this process: server and both clients) per delivered message. */
async function deliveryCost(driver: "sqlite" | "postgres", archive: boolean): Promise<number> {
  return withServer(driver, archive ? {} : { retentionDays: 0 }, async (server) => {
    for (const u of ["ann", "ben"]) await server.accounts.create(`${u}@localhost`, "pw");
    const ann = await rawSession(server.ports.c2sDirectTls!, "ann", "pw", "a");
    const ben = await rawSession(server.ports.c2sDirectTls!, "ben", "pw", "b");
    ben.send("<presence/>");
    await ben.waitFor(/<presence[^>]*from="ben@localhost\/b"/);
    let received = 0;
    // RawClient appends to ben.text first; count whole messages and keep any partial one.
    ben.socket.on("data", () => {
      const parts = ben.text.split("</message>");
      received += parts.length - 1;
      ben.text = parts[parts.length - 1]!;
    });
    const cpu = process.cpuUsage();
    for (let i = 0; i < MESSAGES; i++) {
      ann.send(`<message to='ben@localhost/b' type='chat' id='m${i}'><body>message ${i} of a typical length for a chat</body></message>`);
      if (i % 200 === 199) while (received < i - 400) await new Promise((r) => setTimeout(r, 1));
    }
    while (received < MESSAGES) await new Promise((r) => setTimeout(r, 2));
    const used = process.cpuUsage(cpu);
    ann.close();
    ben.close();
    return (used.user + used.system) / MESSAGES;
  });
}

async function overhead(name: string, driver: "sqlite" | "postgres") {
  const on: number[] = [];
  const off: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    off.push(await deliveryCost(driver, false));
    on.push(await deliveryCost(driver, true));
  }
  const a = median(on);
  const b = median(off);
  console.log(`| ${name} | ${b.toFixed(0)} | ${a.toFixed(0)} | ${(a - b).toFixed(0)} (${(((a - b) / b) * 100).toFixed(0)} %) |`);
}

const probe = new pg.Client({ connectionString: PG_URL, connectionTimeoutMillis: 2000 });
let pgUp = true;
try { await probe.connect(); await probe.end(); } catch { pgUp = false; }

console.log(`# bench:mam (${ROUNDS} rounds for the overhead medians; ${QUERIES} queries per shape)`);
if (DRIVERS.includes("sqlite")) await queryLatencies("SQLite (WAL, synchronous=normal)", "sqlite");
if (DRIVERS.includes("postgres")) {
  if (pgUp) await queryLatencies("Postgres (synchronous_commit=on)", "postgres");
  else console.log("\nPostgres SKIPPED: nothing reachable at", PG_URL);
}
console.log(`\n### Archive write overhead on 1:1 delivery (${MESSAGES} messages, CPU µs per message, server + clients in one process, median of ${ROUNDS})\n`);
console.log("| store | archive off | archive on | overhead |");
console.log("|---|---|---|---|");
if (DRIVERS.includes("sqlite")) await overhead("SQLite", "sqlite");
if (DRIVERS.includes("postgres") && pgUp) await overhead("Postgres", "postgres");
