/**
 * The embedded HTTP(S) server: HTTPS with the XMPP certificates (SNI per virtual host) and plain
 * HTTP for deployments behind a reverse proxy. Modules mount handlers under path prefixes —
 * upload today; WebSocket, BOSH and admin endpoints later.
 */
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse, type Server } from "node:http";
import { createServer as createHttpsServer, type Server as HttpsServer } from "node:https";
import type { TLSSocket } from "node:tls";
import type { AddressInfo, Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { Logger } from "../log.js";
import { ACME_TLS_ALPN, type TlsListenerSource } from "../tls/store.js";
import { handshakeFailureLog } from "../tls/handshake-log.js";

export type HttpHandler = (req: IncomingMessage, res: ServerResponse, url: URL) => void | Promise<void>;
/** An HTTP/1.1 Upgrade request (RFC 9110 §7.8), e.g. a WebSocket handshake (RFC 6455 §4). */
export type UpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer, url: URL) => void;

/** Handlers by path prefix; the longest matching prefix wins. */
export class HttpRoutes {
  private readonly routes: Array<{ prefix: string; handler: HttpHandler }> = [];
  private readonly upgrades: Array<{ prefix: string; handler: UpgradeHandler }> = [];

  constructor(private readonly log: Logger) {}

  add(prefix: string, handler: HttpHandler): () => void {
    const route = { prefix, handler };
    this.routes.push(route);
    this.routes.sort((a, b) => b.prefix.length - a.prefix.length);
    return () => { this.routes.splice(this.routes.indexOf(route), 1); };
  }

  addUpgrade(prefix: string, handler: UpgradeHandler): () => void {
    const route = { prefix, handler };
    this.upgrades.push(route);
    this.upgrades.sort((a, b) => b.prefix.length - a.prefix.length);
    return () => { this.upgrades.splice(this.upgrades.indexOf(route), 1); };
  }

  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    let url: URL | undefined;
    try {
      url = new URL(req.url ?? "/", "http://host");
    } catch {
      url = undefined;
    }
    const route = url && this.upgrades.find((r) => url.pathname.startsWith(r.prefix));
    if (!url || !route) {
      socket.end("HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
      return;
    }
    try {
      route.handler(req, socket, head, url);
    } catch (err) {
      this.log.error({ err, stage: "http", prefix: route.prefix }, "upgrade handler failed");
      socket.destroy();
    }
  }

  handle(req: IncomingMessage, res: ServerResponse): void {
    let url: URL;
    try {
      url = new URL(req.url ?? "/", "http://host");
    } catch {
      return plain(res, 400, "Bad request");
    }
    const route = this.routes.find((r) => url.pathname.startsWith(r.prefix));
    if (!route) return plain(res, 404, "Not found");
    Promise.resolve()
      .then(() => route.handler(req, res, url))
      .catch((err) => {
        this.log.error({ err, stage: "http", method: req.method, prefix: route.prefix }, "HTTP handler failed");
        if (!res.headersSent) plain(res, 500, "Internal server error");
        else res.destroy();
      });
  }
}

export function plain(res: ServerResponse, status: number, text: string, headers: Record<string, string> = {}): void {
  if (res.headersSent) return;
  res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8", "Content-Length": Buffer.byteLength(text), ...headers });
  res.end(text);
}

export interface HttpListenerOptions {
  host: string;
  port: number;
  /** HTTPS when given: the certificates (SNI per host, reloaded live) and the TLS policy. */
  tls?: TlsListenerSource;
  routes: HttpRoutes;
  log: Logger;
  /** Whole request, body included (a 100 MiB upload on a slow link needs minutes). */
  requestTimeoutMs: number;
  headersTimeoutMs: number;
}

export interface HttpListener {
  readonly port: number;
  readonly secure: boolean;
  close(): Promise<void>;
}

export async function listenHttp(opts: HttpListenerOptions): Promise<HttpListener> {
  const handler = (req: IncomingMessage, res: ServerResponse) => opts.routes.handle(req, res);
  const server: Server = opts.tls
    // A TLS handshake gets no longer than the request headers would (Node's default is 120 s).
    ? createHttpsServer({ ...opts.tls.serverOptions("http/1.1"), handshakeTimeout: opts.headersTimeoutMs }, handler)
    : createHttpServer(handler);
  const tlsSource = opts.tls;
  // A new default certificate applies to new handshakes; open connections keep theirs.
  const unwatch = tlsSource?.onChange(() => (server as HttpsServer).setSecureContext(tlsSource.contextOptions()));
  server.requestTimeout = opts.requestTimeoutMs;
  server.headersTimeout = opts.headersTimeoutMs;
  server.keepAliveTimeout = 5000;
  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => opts.routes.handleUpgrade(req, socket, head));
  const handshakeFailed = handshakeFailureLog(opts.log, "https");
  server.on("tlsClientError", (err: Error, s: Socket) => { handshakeFailed(err, s); s.destroy(); });
  // RFC 8737 §3: a TLS-ALPN-01 validation ends with the handshake; no HTTP follows.
  if (opts.tls) server.on("secureConnection", (s: TLSSocket) => { if (s.alpnProtocol === ACME_TLS_ALPN) s.end(); });
  server.on("clientError", (_err: Error, s: Socket) => { if (s.writable) s.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"); else s.destroy(); });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host, () => { server.off("error", reject); resolve(); });
  });
  server.on("error", (err) => opts.log.error({ err, stage: "http" }, "HTTP listener error"));
  const port = (server.address() as AddressInfo).port;
  opts.log.info({ stage: "listen", port, secure: !!opts.tls }, "HTTP listening");
  return {
    port,
    secure: !!opts.tls,
    close: () => new Promise<void>((resolve) => {
      unwatch?.();
      server.close(() => resolve());
      // Every HTTP connection, busy or idle — but not the upgraded ones (WebSocket): they belong to
      // their streams, which the c2s shutdown closes with system-shutdown like TCP ones.
      server.closeAllConnections();
    }),
  };
}
