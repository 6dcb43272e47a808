/**
 * The server side of bench:bosh: a Parley process of its own (HTTPS for BOSH, direct TLS for
 * TCP), so the generator's load does not skew what is measured. Reports over IPC.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../src/config.js";
import { startServer } from "../src/server.js";
import { silentLogger } from "../src/log.js";

const users = Number(process.env.BENCH_USERS ?? 1000);
const waitSeconds = Number(process.env.BENCH_BOSH_WAIT ?? 60);
const dataDir = mkdtempSync(join(tmpdir(), "parley-bench-bosh-"));
const server = await startServer(parseConfig({
  hosts: ["localhost"], dataDir,
  listen: { address: "127.0.0.1", s2s: null, c2s: null, c2sDirectTls: 0, https: 0, http: null },
  storage: { driver: "memory" },
  auth: { scramIterations: 4096 },
  limits: { maxConnectionsPerAddress: users + 100 },
  bosh: { maxWaitSeconds: waitSeconds },
}), { log: silentLogger() });
for (let i = 0; i < users; i++) await server.accounts.create(`lt${i}@localhost`, `pw-lt${i}`);
const snapshot = () => {
  global.gc?.();
  const m = process.memoryUsage();
  return { rssKB: Math.round(m.rss / 1024), heapKB: Math.round(m.heapUsed / 1024), externalKB: Math.round(m.external / 1024), sessions: server.sessions.count() };
};
process.send!({ ready: true, https: server.ports.https, tcp: server.ports.c2sDirectTls });
process.on("message", async (m: { cmd: string }) => {
  if (m.cmd === "snapshot") process.send!({ snapshot: snapshot() });
  if (m.cmd === "stop") { await server.stop(); rmSync(dataDir, { recursive: true, force: true }); process.exit(0); }
});
