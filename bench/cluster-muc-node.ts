/**
 * One Parley node for bench:cluster-muc, in a process of its own so that its CPU is the server's
 * alone: reads its config (JSON) from argv[2], creates BENCH_USERS accounts when asked, reports
 * its port, and answers "snapshot" with its CPU time and bus counters.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../src/config.js";
import { startServer } from "../src/server.js";
import { silentLogger } from "../src/log.js";

const dataDir = mkdtempSync(join(tmpdir(), "parley-bench-cluster-muc-"));
const overrides = JSON.parse(process.argv[2] ?? "{}") as Record<string, unknown>;
const users = Number(process.env.BENCH_USERS ?? 0);
const server = await startServer(parseConfig({
  hosts: ["localhost"], dataDir, auth: { scramIterations: 4096 },
  listen: { address: "127.0.0.1", s2s: null, c2s: null, c2sDirectTls: 0, https: null, http: null },
  modules: { extdisco: { stun: { port: 0, address: "127.0.0.1" } }, muc: { historyMessages: 0 } },
  limits: { maxConnectionsPerAddress: users + 1000 },
  ...overrides,
}), { log: silentLogger() });
for (let i = 0; i < users; i++) await server.accounts.create(`user${i}@localhost`, "pw");
process.send!({ ready: true, port: server.ports.c2sDirectTls });
process.on("message", async (m: { cmd: string }) => {
  if (m.cmd === "snapshot") process.send!({ snapshot: { cpu: process.cpuUsage(), sent: server.cluster()?.sent } });
  if (m.cmd === "stop") {
    await server.stop();
    rmSync(dataDir, { recursive: true, force: true });
    process.exit(0);
  }
});
