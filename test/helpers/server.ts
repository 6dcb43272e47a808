/** Starts a real Parley server on port 0 with a fresh data directory, for end-to-end tests. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseConfig } from "../../src/config.js";
import { startServer, type Server, type StartOptions } from "../../src/server.js";
import pino from "pino";
import { silentLogger, createLogger, type Logger } from "../../src/log.js";

export interface TestServer extends Server {
  dataDir: string;
  cleanup(): Promise<void>;
}

/** A logger that keeps every record it writes, parsed, for tests that assert on what was logged. */
export function capturingLogger(level = "info"): { log: Logger; records: Array<Record<string, unknown>> } {
  const records: Array<Record<string, unknown>> = [];
  const log = pino({ level }, { write: (line: string) => { records.push(JSON.parse(line) as Record<string, unknown>); } });
  return { log, records };
}

export async function startTestServer(overrides: Record<string, unknown> = {}, options: { log?: Logger; modules?: StartOptions["modules"] } = {}): Promise<TestServer> {
  const dataDir = mkdtempSync(join(tmpdir(), "parley-e2e-"));
  const config = parseConfig({
    hosts: ["localhost"],
    dataDir,
    storage: { driver: "sqlite" },
    auth: { scramIterations: 4096 },
    ...overrides,
    // s2s on a free port unless the test says otherwise: never the shared 5269.
    listen: { s2s: 0, ...((overrides.listen as Record<string, unknown> | undefined) ?? { address: "127.0.0.1", c2s: 0, c2sDirectTls: 0, https: 0, http: null }) },
    // Each test server's built-in STUN listens on a free port, so parallel servers do not race for 3478.
    modules: { extdisco: { stun: { port: 0, address: "127.0.0.1" } }, ...(overrides.modules as Record<string, unknown> | undefined) },
  });
  const log = options.log ?? (process.env.PARLEY_TEST_LOG ? createLogger({ level: process.env.PARLEY_TEST_LOG, pretty: false }) : silentLogger());
  const server = await startServer(config, { log, modules: options.modules });
  return Object.assign(server, {
    dataDir,
    async cleanup() {
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  });
}
