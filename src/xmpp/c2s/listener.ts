/**
 * c2s listeners: STARTTLS on the plain port (RFC 6120 §5) and direct TLS (XEP-0368, ALPN
 * "xmpp-client"; "acme-tls/1" while a TLS-ALPN-01 validation runs). Banned addresses are refused
 * at accept; TLS handshakes have their own deadline; failed ones are logged at info.
 */
import { createServer as createTcpServer, type Server, type Socket, type AddressInfo } from "node:net";
import { createServer as createTlsServer, TLSSocket, type SecureContext } from "node:tls";
import { C2SNegotiation, type C2SDeps } from "./negotiation.js";
import { TcpTransport, normalizeAddress } from "../stream/tcp.js";
import type { Admission } from "./admission.js";
import type { ConnectionMetrics } from "../../metrics/index.js";
import { ACME_TLS_ALPN, type TlsListenerSource } from "../../tls/store.js";
import { handshakeFailureLog } from "../../tls/handshake-log.js";

export interface ListenerOptions {
  host: string;
  port: number;
  directTls: boolean;
  tlsHandshakeTimeoutMs: number;
  metrics?: ConnectionMetrics;
  /** Certificates and TLS policy, for direct TLS. */
  tls: TlsListenerSource;
}

export interface C2SListenerDeps extends C2SDeps {
  /** The default host's context, for STARTTLS (read at each upgrade: certificates reload). */
  readonly defaultTls: SecureContext;
  /** PEM of the default host. */
  readonly defaultCert: { cert: string; key: string };
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
      ...options.tls.serverOptions("xmpp-client"),
      handshakeTimeout: options.tlsHandshakeTimeoutMs,
    });
    // A new default certificate applies to new handshakes; open connections keep theirs.
    const unwatch = options.tls.onChange(() => tlsServer.setSecureContext(options.tls.contextOptions()));
    tlsServer.once("close", unwatch);
    const handshakeFailed = handshakeFailureLog(deps.log, "c2s-direct-tls");
    tlsServer.on("connection", (raw: Socket) => { admit(raw); });
    tlsServer.on("secureConnection", (socket: TLSSocket) => {
      if (socket.destroyed) return;
      // RFC 8737 §3: a TLS-ALPN-01 validation ends with the handshake; no stream follows.
      if (socket.alpnProtocol === ACME_TLS_ALPN) return void socket.end();
      new C2SNegotiation(new TcpTransport(socket, deps.limits.preAuth, undefined), deps);
    });
    tlsServer.on("tlsClientError", (err, socket) => {
      handshakeFailed(err, socket);
      socket.destroy();
    });
    server = tlsServer;
  } else {
    server = createTcpServer((socket) => {
      if (!admit(socket)) return;
      // The TLS policy (versions, ciphers) is part of the secure contexts.
      const startTls = (plain: Socket) => new TLSSocket(plain, { isServer: true, secureContext: deps.defaultTls, SNICallback: deps.sniCallback });
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
