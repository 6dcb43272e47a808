/**
 * A cluster node in a child process, for tests that kill a node with SIGKILL: reads a config
 * (JSON) from argv[2], starts the server, prints its ports as one JSON line, runs until killed.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../../src/config.js";
import { startServer } from "../../src/server.js";
import { silentLogger } from "../../src/log.js";

const overrides = JSON.parse(process.argv[2] ?? "{}") as Record<string, unknown>;
const config = parseConfig({
  hosts: ["localhost"],
  dataDir: mkdtempSync(join(tmpdir(), "parley-node-")),
  auth: { scramIterations: 4096 },
  listen: { address: "127.0.0.1", c2s: 0, c2sDirectTls: 0, https: null, http: null, s2s: null },
  modules: { extdisco: { stun: { port: 0, address: "127.0.0.1" } } },
  ...overrides,
});
const server = await startServer(config, { log: silentLogger() });
process.stdout.write(`${JSON.stringify(server.ports)}\n`);
