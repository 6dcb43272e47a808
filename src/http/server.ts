/**
 * The embedded HTTP(S) server: HTTPS with the XMPP certificates (SNI per virtual host) and plain
 * HTTP for deployments behind a reverse proxy. Modules mount handlers under path prefixes —
 * upload today; WebSocket, BOSH and admin endpoints later.
 */
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse, type Server } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { SecureContext } from "node:tls";
import type { AddressInfo, Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { Logger } from "../log.js";
import { TLS_MIN_VERSION } from "../xmpp/tls.js";

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
  /** HTTPS when given. */
  tls?: { cert: string; key: string; SNICallback: (servername: string, cb: (err: Error | null, ctx?: SecureContext) => void) => void };
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
    ? createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key, SNICallback: opts.tls.SNICallback, minVersion: TLS_MIN_VERSION, handshakeTimeout: opts.headersTimeoutMs }, handler)
    : createHttpServer(handler);
  server.requestTimeout = opts.requestTimeoutMs;
  server.headersTimeout = opts.headersTimeoutMs;
  server.keepAliveTimeout = 5000;
  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => opts.routes.handleUpgrade(req, socket, head));
  server.on("tlsClientError", (err: Error, s: Socket) => { opts.log.debug({ stage: "http", err: err.message }, "TLS handshake failed"); s.destroy(); });
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
      server.close(() => resolve());
      // Every HTTP connection, busy or idle — but not the upgraded ones (WebSocket): they belong to
      // their streams, which the c2s shutdown closes with system-shutdown like TCP ones.
      server.closeAllConnections();
    }),
  };
}
