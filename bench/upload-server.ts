/**
 * The server side of bench:upload, in a process of its own: either Parley, or (BENCH_MODE=raw) a
 * bare Node HTTPS server that streams PUT bodies to a file and serves them back — the same work
 * without XMPP, tokens or metadata, as the ceiling to compare with. Reports event-loop delay on request.
 */
import { createServer } from "node:https";
import { createReadStream, createWriteStream, mkdtempSync, rmSync, statSync } from "node:fs";
import { pipeline } from "node:stream/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { parseConfig } from "../src/config.js";
import { startServer } from "../src/server.js";
import { silentLogger } from "../src/log.js";
import { loadHostTls } from "../src/xmpp/tls.js";

const dataDir = mkdtempSync(join(tmpdir(), "parley-bench-upload-"));
const eld = monitorEventLoopDelay({ resolution: 10 });
eld.enable();
let stop: () => Promise<void>;
let ports: Record<string, number | undefined>;

if (process.env.BENCH_MODE === "raw") {
  const tls = (await loadHostTls(["localhost"], {}, dataDir)).get("localhost")!;
  const server = createServer({ cert: tls.cert, key: tls.key }, async (req, res) => {
    const file = join(dataDir, "f");
    if (req.method === "PUT") {
      await pipeline(req, createWriteStream(file));
      res.writeHead(201).end();
    } else {
      res.writeHead(200, { "Content-Length": statSync(file).size });
      createReadStream(file).pipe(res);
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  ports = { https: (server.address() as { port: number }).port };
  stop = () => new Promise((r) => server.close(() => r()));
} else {
  const server = await startServer(parseConfig({
    hosts: ["localhost"], dataDir, storage: { driver: "sqlite" },
    listen: { address: "127.0.0.1", s2s: null, c2s: null, c2sDirectTls: 0, https: 0, http: null },
    auth: { scramIterations: 4096 },
    modules: { upload: { quotaBytes: 0, dailyQuotaBytes: 0 } },
  }), { log: silentLogger() });
  for (let i = 0; i < 20; i++) await server.accounts.create(`user${i}@localhost`, "pw");
  ports = server.ports;
  stop = () => server.stop();
}
process.send!({ ready: true, ports });
process.on("message", async (m: { cmd: string }) => {
  if (m.cmd === "eld-reset") { eld.reset(); process.send!({ reset: true }); }
  if (m.cmd === "eld") process.send!({ eld: { p50: eld.percentile(50) / 1e6, p99: eld.percentile(99) / 1e6, max: eld.max / 1e6 } });
  if (m.cmd === "stop") { await stop(); rmSync(dataDir, { recursive: true, force: true }); process.exit(0); }
});
