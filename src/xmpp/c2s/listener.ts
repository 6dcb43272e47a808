/**
 * c2s listeners: STARTTLS on the plain port (RFC 6120 §5) and direct TLS (XEP-0368, ALPN
 * "xmpp-client"). Banned addresses are refused at accept; TLS handshakes have their own deadline.
 */
import { createServer as createTcpServer, type Server, type Socket, type AddressInfo } from "node:net";
import { createServer as createTlsServer, type TLSSocket } from "node:tls";
import { C2SConnection, type C2SDeps } from "./connection.js";
import { TLS_MIN_VERSION } from "../tls.js";
import type { ConnectionMetrics } from "../../metrics/index.js";

export interface ListenerOptions {
  host: string;
  port: number;
  directTls: boolean;
  tlsHandshakeTimeoutMs: number;
  maxConnectionsPerAddress: number;
  metrics?: ConnectionMetrics;
}

export interface C2SListener {
  readonly port: number;
  close(): Promise<void>;
}

export async function listenC2S(options: ListenerOptions, deps: C2SDeps): Promise<C2SListener> {
  const perAddress = new Map<string, number>();
  const admit = (socket: Socket): boolean => {
    const address = (socket.remoteAddress ?? "").replace(/^::ffff:/, "");
    const n = perAddress.get(address) ?? 0;
    if (deps.throttle.isBanned(address) || n >= options.maxConnectionsPerAddress) {
      socket.destroy();
      return false;
    }
    perAddress.set(address, n + 1);
    options.metrics?.opened("tcp");
    socket.once("close", () => {
      options.metrics?.closed("tcp");
      const left = (perAddress.get(address) ?? 1) - 1;
      if (left <= 0) perAddress.delete(address);
      else perAddress.set(address, left);
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
      new C2SConnection(socket, true, deps);
    });
    tlsServer.on("tlsClientError", (err, socket) => {
      deps.log.debug({ stage: "tls", err: err.message }, "TLS handshake failed");
      socket.destroy();
    });
    server = tlsServer;
  } else {
    server = createTcpServer((socket) => {
      if (admit(socket)) new C2SConnection(socket, false, deps);
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
