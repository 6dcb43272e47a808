/** TLS probes for tests: real handshakes with chosen versions, suites and trust, and a log capture. */
import { connect as tlsConnect, type ConnectionOptions, type PeerCertificate, type TLSSocket } from "node:tls";
import { Writable } from "node:stream";
import pino from "pino";
import type { Logger } from "../../src/log.js";
import { RawClient, header, NS_STREAMS } from "./raw.js";

export type Outcome =
  | { ok: true; protocol: string; cipher: string; alpn: string | false; cert: PeerCertificate; authorized: boolean; authorizationError?: string }
  | { ok: false; error: string };

/** Which of Parley's TLS servers to shake hands with. */
export type TlsEntry = "direct-tls" | "https" | "starttls";

function settle(socket: TLSSocket): Promise<Outcome> {
  return new Promise((resolve) => {
    socket.once("secureConnect", () => {
      const outcome: Outcome = {
        ok: true, protocol: socket.getProtocol() ?? "", cipher: socket.getCipher().name, alpn: socket.alpnProtocol ?? false,
        cert: socket.getPeerCertificate(), authorized: socket.authorized,
        authorizationError: socket.authorizationError ? String(socket.authorizationError) : undefined,
      };
      socket.destroy();
      resolve(outcome);
    });
    socket.once("error", (err) => { socket.destroy(); resolve({ ok: false, error: err.message }); });
  });
}

/** One handshake with Parley on the given entry; plain TCP + <starttls/> first for "starttls". */
export async function handshake(entry: TlsEntry, port: number, options: ConnectionOptions = {}): Promise<Outcome> {
  const base: ConnectionOptions = { host: "127.0.0.1", servername: "localhost", rejectUnauthorized: false, ...options };
  if (entry === "direct-tls") return settle(tlsConnect({ port, ALPNProtocols: ["xmpp-client"], ...base }));
  if (entry === "https") return settle(tlsConnect({ port, ALPNProtocols: ["http/1.1"], ...base }));
  const raw = await RawClient.open(port, false);
  raw.send(header(typeof base.servername === "string" ? base.servername : "localhost"));
  await raw.waitForElement((e) => e.is("features", NS_STREAMS));
  const mark = raw.elements.length;
  raw.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
  await raw.waitForElement((e) => e.is("proceed", "urn:ietf:params:xml:ns:xmpp-tls"), 5000, mark);
  return settle(tlsConnect({ socket: raw.socket, ...base }));
}

/** A logger whose JSON lines are kept, to assert on what the server logged. */
export function capturingLogger(level = "info"): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString("utf8").split("\n")) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level }, stream), lines };
}

/** Waits for a condition that an event outside the test's control makes true (a reload, an ACME order). */
export async function eventually<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, deadlineMs = 20_000, everyMs = 100): Promise<T> {
  const end = Date.now() + deadlineMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > end) throw new Error(`gave up waiting: ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
