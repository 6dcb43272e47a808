/**
 * Running a cluster (docs/CLUSTER.md, "Running it"): `parley start --nodes 2` and `parley status`
 * as child processes (three nodes behind HAProxy: cluster-haproxy.test.ts). Real Redis and
 * Postgres; one schema and key prefix per test.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { stringify } from "yaml";
import { parseConfig } from "../../src/config.js";
import { openStorage } from "../../src/server.js";
import { createAccounts } from "../../src/accounts.js";
import { startTestServer } from "../helpers/server.js";
import { rawSession, type RawClient } from "../helpers/raw.js";
import { PG_URL, postgresUnavailable } from "../helpers/postgres.js";
import { REDIS_URL, dropKeyPrefix, dropSchema, freePort, freshKeyPrefix, redisUnavailable, until } from "../helpers/cluster.js";

const run = promisify(execFile);
const missing = (await postgresUnavailable()) ?? (await redisUnavailable());
if (missing) console.log(`# SKIPPED cluster run e2e: ${missing}`);

const message = (id: string) => (e: { is(name: string): boolean; attrs: Record<string, string> }) => e.is("message") && e.attrs.id === id;

describe("running a cluster (e2e)", { skip: missing ? `services unreachable: ${missing}` : false }, () => {
  it("parley start --nodes 2 runs two nodes on shared ports, and parley status lists them with their sessions", async () => {
    const schema = `parley_nodes_${randomBytes(6).toString("hex")}`;
    const keyPrefix = freshKeyPrefix();
    const dir = mkdtempSync(join(tmpdir(), "parley-nodes-"));
    const raw = {
      hosts: ["localhost"], dataDir: join(dir, "data"), log: { level: "info", pretty: false },
      storage: { driver: "postgres", url: PG_URL, schema, poolSize: 2 },
      listen: { address: "127.0.0.1", c2s: 0, c2sDirectTls: 0, https: null, http: null, s2s: null },
      auth: { scramIterations: 4096 },
      modules: { extdisco: { stun: { port: 0, address: "127.0.0.1" } } },
      cluster: { nodeId: "local", redisUrl: REDIS_URL, keyPrefix, heartbeatSeconds: 0.5, nodeTimeoutSeconds: 2 },
    };
    const configFile = join(dir, "parley.yaml");
    writeFileSync(configFile, stringify(raw));
    const storage = await openStorage(parseConfig(raw));
    const clients: RawClient[] = [];
    let primary: ChildProcess | undefined;
    try {
      const accounts = createAccounts(storage, ["localhost"], 4096);
      for (const user of ["alice", "bob"]) await accounts.create(`${user}@localhost`, "pw");
      primary = spawn(process.execPath, ["--import", "tsx", "src/main.ts", "start", "--nodes", "2", "--config", configFile], { stdio: ["ignore", "pipe", "inherit"] });
      const started: Array<{ node: string; ports: { c2sDirectTls: number } }> = [];
      await new Promise<void>((resolve, reject) => {
        createInterface({ input: primary!.stdout! }).on("line", (line) => {
          const record = JSON.parse(line) as { msg: string; node: string; ports: { c2sDirectTls: number } };
          if (record.msg === "Parley started") started.push(record);
          if (started.length === 2) resolve();
        });
        primary!.once("exit", (code) => reject(new Error(`parley start --nodes 2 exited (${code})`)));
      });
      assert.deepEqual(started.map((s) => s.node).sort(), ["local-1", "local-2"]);
      assert.equal(started[0]!.ports.c2sDirectTls, started[1]!.ports.c2sDirectTls, "the nodes share one port");
      const port = started[0]!.ports.c2sDirectTls;
      const alice = await rawSession(port, "alice", "pw", "a");
      const bob = await rawSession(port, "bob", "pw", "b");
      clients.push(alice, bob);
      let status = "";
      await until(async () => {
        status = (await run(process.execPath, ["--import", "tsx", "src/main.ts", "status", "--config", configFile])).stdout;
        const counts = [...status.matchAll(/^local-\d\talive\t(\d+) sessions?$/gm)].map((m) => Number(m[1]));
        return counts.length === 2 && counts[0]! + counts[1]! === 2;
      }, "parley status shows both nodes alive with two sessions", 30, 500);
      console.log(`# parley status:\n${status.trim().split("\n").map((l) => `#   ${l}`).join("\n")}`);
      // The workers' replicas are out of reach here: sent before bob is available, the message
      // reaches him live if alice's node knows his session already, else from storage once he is.
      alice.send("<message to='bob@localhost/b' type='chat' id='n1'><body>between workers</body></message>");
      bob.send("<presence/>");
      const got = await bob.waitForElement(message("n1"), 10_000);
      assert.equal(got.attrs.from, "alice@localhost/a");
      const exited = new Promise<number | null>((resolve) => primary!.once("exit", (code) => resolve(code)));
      primary.kill("SIGTERM");
      assert.equal(await exited, 0);
      primary = undefined;
    } finally {
      for (const c of clients) c.close();
      primary?.kill("SIGKILL");
      await storage.close();
      await dropSchema(schema);
      await dropKeyPrefix(keyPrefix);
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a node that cannot reach Redis refuses to start, and says where it looked", async () => {
    const schema = `parley_noredis_${randomBytes(6).toString("hex")}`;
    const closed = await freePort();
    try {
      await assert.rejects(
        startTestServer({ storage: { driver: "postgres", url: PG_URL, schema, poolSize: 2 }, cluster: { nodeId: "lonely", redisUrl: `redis://user:hunter2@127.0.0.1:${closed}` } }),
        (err: Error) => err.message.startsWith(`cluster: cannot reach Redis at redis://user:***@127.0.0.1:${closed}`) && !err.message.includes("hunter2"),
      );
    } finally {
      await dropSchema(schema);
    }
  });

  it("parley start --nodes 2 ends with an error when its first node cannot start", async () => {
    const dir = mkdtempSync(join(tmpdir(), "parley-nodes-"));
    const closed = await freePort();
    const schema = `parley_nostart_${randomBytes(6).toString("hex")}`;
    try {
      const configFile = join(dir, "parley.yaml");
      writeFileSync(configFile, stringify({
        hosts: ["localhost"], dataDir: join(dir, "data"), log: { level: "error", pretty: false },
        storage: { driver: "postgres", url: PG_URL, schema, poolSize: 2 },
        listen: { address: "127.0.0.1", c2s: 0, c2sDirectTls: 0, https: null, http: null, s2s: null },
        modules: { extdisco: { stun: { port: 0, address: "127.0.0.1" } } },
        cluster: { nodeId: "local", redisUrl: `redis://127.0.0.1:${closed}` },
      }));
      const failed = await run(process.execPath, ["--import", "tsx", "src/main.ts", "start", "--nodes", "2", "--config", configFile]).then(() => undefined, (err: { code: number; stderr: string }) => err);
      assert.ok(failed, "parley start --nodes 2 exited 0");
      assert.equal(failed.code, 1);
      assert.match(failed.stderr, /node 1 ended before it started/);
      assert.match(failed.stderr, /cluster: cannot reach Redis at redis:\/\/127\.0\.0\.1:\d+/);
    } finally {
      await dropSchema(schema);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
