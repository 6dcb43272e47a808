/** The server side of bench:smoke: a Parley process of its own, so client load does not skew it. */
import { parseConfig } from "../src/config.js";
import { startServer } from "../src/server.js";
import { silentLogger } from "../src/log.js";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const users = Number(process.env.BENCH_USERS ?? 1000);
const dataDir = mkdtempSync(join(tmpdir(), "parley-bench-"));
const server = await startServer(parseConfig({
  hosts: ["localhost"], dataDir,
  listen: { address: "127.0.0.1", s2s: null, c2s: null, c2sDirectTls: 0, https: null, http: null },
  storage: { driver: process.env.BENCH_STORAGE ?? "memory" },
  auth: { scramIterations: 4096 },
  limits: { maxConnectionsPerAddress: users + 100 },
}), { log: silentLogger() });
for (let i = 0; i < users; i++) await server.accounts.create(`user${i}@localhost`, "pw");
global.gc?.();
const snapshot = () => { const m = process.memoryUsage(); return { rss: m.rss, heap: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, cpu: process.cpuUsage() }; };
process.send!({ ready: true, port: server.ports.c2sDirectTls, ...snapshot() });
process.on("message", async (m: { cmd: string }) => {
  if (m.cmd === "snapshot") { global.gc?.(); process.send!({ snapshot: snapshot(), sessions: server.sessions.count() }); }
  if (m.cmd === "stop") { await server.stop(); rmSync(dataDir, { recursive: true, force: true }); process.exit(0); }
});
