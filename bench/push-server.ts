/** The server side of bench:push part 2: Parley with the push app server and a local APNs endpoint, in its own process. */
import { createSecureServer } from "node:http2";
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { loadHostTls } from "../src/xmpp/tls.js";
import { parseConfig } from "../src/config.js";
import { startServer } from "../src/server.js";
import { silentLogger } from "../src/log.js";

const dir = mkdtempSync(join(tmpdir(), "parley-bench-push-server-"));
const tls = (await loadHostTls(["localhost"], {}, dir)).get("localhost")!;
let received = 0;
const apns = createSecureServer({ cert: tls.cert, key: tls.key }, (req, res) => {
  req.resume();
  req.on("end", () => { received++; res.writeHead(200); res.end(); });
});
await new Promise<void>((r) => apns.listen(0, "127.0.0.1", r));
const endpoint = `https://127.0.0.1:${(apns.address() as AddressInfo).port}`;
writeFileSync(join(dir, "key.p8"), generateKeyPairSync("ec", { namedCurve: "prime256v1" }).privateKey.export({ type: "pkcs8", format: "pem" }));
const server = await startServer(parseConfig({
  hosts: ["localhost"], dataDir: dir, storage: { driver: "sqlite" },
  listen: { address: "127.0.0.1", s2s: null, c2s: null, c2sDirectTls: 0, https: null, http: null },
  auth: { scramIterations: 4096 },
  // coalesceSeconds 0: every message pushes, the worst case for the delivery path.
  modules: { push: { coalesceSeconds: 0 }, appserver: { apns: { keyFile: join(dir, "key.p8"), keyId: "K", teamId: "T", topic: "bench.app", production: endpoint, sandbox: endpoint, insecureTls: true } } },
}), { log: silentLogger() });
for (const u of ["sender", "pushed", "plain"]) await server.accounts.create(`${u}@localhost`, "pw");
process.send!({ ready: true, port: server.ports.c2sDirectTls });
process.on("message", async (m: { cmd: string }) => {
  if (m.cmd === "received") process.send!({ received });
  if (m.cmd === "stop") {
    await server.stop();
    apns.close();
    rmSync(dir, { recursive: true, force: true });
    process.exit(0);
  }
});
