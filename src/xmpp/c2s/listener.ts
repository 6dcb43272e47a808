/**
 * c2s listeners: STARTTLS on the plain port (RFC 6120 §5) and direct TLS (XEP-0368, ALPN
 * "xmpp-client"). Banned addresses are refused at accept; TLS handshakes have their own deadline.
 */
import { createServer as createTcpServer, type Server, type Socket, type AddressInfo } from "node:net";
import { createServer as createTlsServer, type SecureContext, type TLSSocket } from "node:tls";
import { C2SNegotiation, type C2SDeps } from "./negotiation.js";
import { TcpTransport, normalizeAddress } from "../stream/tcp.js";
import type { Admission } from "./admission.js";
import { TLS_MIN_VERSION } from "../tls.js";
import type { ConnectionMetrics } from "../../metrics/index.js";

export interface ListenerOptions {
  host: string;
  port: number;
  directTls: boolean;
  tlsHandshakeTimeoutMs: number;
  metrics?: ConnectionMetrics;
}

export interface C2SListenerDeps extends C2SDeps {
  defaultTls: SecureContext;
  /** PEM of the default host, for the direct-TLS server (tls.createServer takes no ready context). */
  defaultCert: { cert: string; key: string };
  sniCallback: (servername: string, cb: (err: Error | null, ctx?: SecureContext) => void) => void;
  admission: Admission;
}

export interface C2SListener {
  readonly port: number;
  close(): Promise<void>;
}

export async function listenC2S(options: ListenerOptions, deps: C2SListenerDeps): Promise<C2SListener> {
  const admit = (socket: Socket): boolean => {
    const release = deps.admission.admit(normalizeAddress(socket.remoteAddress));
    if (!release) {
      socket.destroy();
      return false;
    }
    options.metrics?.opened("tcp");
    socket.once("close", () => {
      options.metrics?.closed("tcp");
      release();
    });
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 60_000);
    return true;
  };

  let server: Server;
  if (options.directTls) {
    const tlsServer = createTlsServer({
      cert: deps.defaultCert.cert,
      key: deps.defaultCert.key,
      SNICallback: deps.sniCallback,
      minVersion: TLS_MIN_VERSION,
      ALPNProtocols: ["xmpp-client"],
      handshakeTimeout: options.tlsHandshakeTimeoutMs,
    } as Parameters<typeof createTlsServer>[0]);
    tlsServer.on("connection", (raw: Socket) => { admit(raw); });
    tlsServer.on("secureConnection", (socket: TLSSocket) => {
      if (socket.destroyed) return;
      new C2SNegotiation(new TcpTransport(socket, deps.limits.preAuth, undefined), deps);
    });
    tlsServer.on("tlsClientError", (err, socket) => {
      deps.log.debug({ stage: "tls", err: err.message }, "TLS handshake failed");
      socket.destroy();
    });
    server = tlsServer;
  } else {
    server = createTcpServer((socket) => {
      if (!admit(socket)) return;
      const startTls = { secureContext: deps.defaultTls, SNICallback: deps.sniCallback };
      new C2SNegotiation(new TcpTransport(socket, deps.limits.preAuth, startTls), deps);
    });
  }
  server.on("error", (err) => deps.log.error({ err, stage: "listen" }, "listener error"));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  deps.log.info({ stage: "listen", port, directTls: options.directTls }, "c2s listening");
  return {
    port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
