/**
 * The HTTP side of BOSH (XEP-0124 1.11.2, XEP-0206 1.4) at /http-bind on the embedded HTTPS and
 * HTTP listeners: CORS for web clients on other origins (Fetch standard §3.2), the client's
 * address behind a reverse proxy, and the limits of an HTTP request — a body too large (413), a
 * body too slow (408), a body that is not BOSH (400). Everything inside a body is the business
 * of the BOSH session (../xmpp/stream/bosh.ts).
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { HttpRoutes } from "./server.js";
import type { BoshExchange, BoshService } from "../xmpp/stream/bosh.js";

export const BOSH_PATH = "/http-bind";
/** Room for the <body/> wrapper around the largest stanza a session may send. */
export const BOSH_BODY_OVERHEAD = 16 * 1024;
/** How long the rest of a refused body is read and dropped before the connection is closed. */
const DISCARD_MS = 2000;
/** The longest a shutdown waits for sent responses to leave. */
const FLUSH_WAIT_MS = 1000;

export interface BoshHttpOptions {
  /** Web origins (scheme://host[:port]) whose pages may use the endpoint besides the server's own; "*" allows any. */
  origins: readonly string[];
  /** The origins of the server's own pages (its public URL, its HTTPS listener), known once the listeners are up. */
  ownOrigins(): readonly string[];
  /** Who sent a request and over what (X-Forwarded-For/-Proto believed from trusted proxies only). */
  clientOf(req: IncomingMessage): HttpPeer;
  /** Largest request body accepted. */
  maxBodyBytes: number;
  /** Time the whole body may take to arrive once the headers are in. */
  bodyTimeoutMs: number;
}

export interface HttpPeer {
  address: string;
  secure: boolean;
}


function headerValue(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value.join(",") : value;
}

/**
 * Whether a page of `origin` may talk to the endpoint: one of the server's own origins, a
 * configured one, or any with "*". Not "the Host the browser addressed": under DNS rebinding a
 * hostile page's origin and Host are the same name.
 */
function originAllowed(origin: string, own: readonly string[], allowed: readonly string[]): boolean {
  const normalized = origin.toLowerCase().replace(/\/+$/, "");
  const matches = (o: string) => o.toLowerCase().replace(/\/+$/, "") === normalized;
  return allowed.includes("*") || allowed.some(matches) || own.some(matches);
}

export interface BoshEndpoint {
  unmount(): void;
  /**
   * Resolves once every response already sent has left for the network (or after a moment), so
   * that closing the listeners right after a shutdown does not cut the answers short.
   */
  flushed(): Promise<void>;
}

/** Mounts the endpoint. */
export function mountBosh(routes: HttpRoutes, service: BoshService, options: BoshHttpOptions): BoshEndpoint {
  const open = new Set<ServerResponse>();
  const unmount = routes.add(BOSH_PATH, (req, res, url) => {
    open.add(res);
    res.once("close", () => open.delete(res));
    if (url.pathname !== BOSH_PATH && url.pathname !== `${BOSH_PATH}/`) return status(res, 404, {});
    const peer = options.clientOf(req);
    const origin = headerValue(req, "origin");
    // A browser names the page's origin on every cross-origin request and on same-origin POSTs;
    // requests from other programs carry none. A page of a foreign origin is refused outright,
    // not just left unable to read the answer: a form POST needs no preflight.
    if (origin !== undefined && !originAllowed(origin, options.ownOrigins(), options.origins)) {
      return status(res, 403, { "Content-Type": "text/plain; charset=utf-8" }, "Origin not allowed");
    }
    const cors: Record<string, string> = origin === undefined ? {} : { "Access-Control-Allow-Origin": origin, Vary: "Origin" };
    switch (req.method) {
      case "OPTIONS":
        return status(res, 204, {
          ...cors,
          "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
          "Access-Control-Allow-Headers": "Content-Type",
          "Access-Control-Max-Age": "86400",
        });
      case "GET":
      case "HEAD":
        return status(res, 200, { ...cors, "Content-Type": "text/plain; charset=utf-8" },
          "Parley BOSH endpoint (XEP-0124, XEP-0206): POST <body/> requests here.");
      case "POST":
        return receive(req, res, peer, cors, service, options);
      default:
        return status(res, 405, { Allow: "GET, POST, OPTIONS" });
    }
  });
  return {
    unmount,
    async flushed() {
      const sent = [...open].filter((res) => res.writableEnded && !res.writableFinished);
      await Promise.race([
        Promise.all(sent.map((res) => new Promise((resolve) => { res.once("finish", resolve); res.once("close", resolve); }))),
        new Promise((resolve) => setTimeout(resolve, FLUSH_WAIT_MS).unref()),
      ]);
    },
  };
}

function receive(req: IncomingMessage, res: ServerResponse, peer: HttpPeer, cors: Record<string, string>, service: BoshService, options: BoshHttpOptions): void {
  const declared = Number(req.headers["content-length"] ?? NaN);
  if (declared > options.maxBodyBytes) return refuseBody(req, res, 413, cors);
  const chunks: Buffer[] = [];
  let size = 0;
  let done = false;
  // A body that trickles in holds a connection and memory: it has a deadline of its own, far
  // shorter than the listener's whole-request limit (which is sized for uploads).
  const timer = setTimeout(() => {
    done = true;
    refuseBody(req, res, 408, cors);
  }, options.bodyTimeoutMs);
  const stop = () => { done = true; clearTimeout(timer); };
  req.on("data", (chunk: Buffer) => {
    if (done) return;
    size += chunk.length;
    if (size > options.maxBodyBytes) {
      stop();
      return refuseBody(req, res, 413, cors);
    }
    chunks.push(chunk);
  });
  req.once("end", () => {
    if (done) return;
    stop();
    service.handle(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size), exchangeOf(req, res, peer, cors));
  });
  // The client went away mid-body: nothing to answer.
  req.once("close", () => clearTimeout(timer));
}

/**
 * Answers a request whose body we will not take, and closes the connection behind the answer. A
 * body still arriving is read and dropped for a moment, so the client reads our answer instead of
 * a connection reset.
 */
function refuseBody(req: IncomingMessage, res: ServerResponse, code: 408 | 413, cors: Record<string, string>): void {
  status(res, code, { ...cors, Connection: "close" });
  if (code === 408) {
    res.once("finish", () => req.destroy());
    return;
  }
  req.removeAllListeners("data");
  req.resume();
  setTimeout(() => req.destroy(), DISCARD_MS).unref();
}

function exchangeOf(req: IncomingMessage, res: ServerResponse, peer: HttpPeer, cors: Record<string, string>): BoshExchange {
  let aborted = false;
  let onAbort: (() => void) | undefined;
  res.once("close", () => {
    if (res.writableEnded) return;
    aborted = true;
    onAbort?.();
  });
  return {
    remoteAddress: peer.address,
    secure: peer.secure,
    get aborted() { return aborted; },
    respond(xml, code = 200) {
      if (res.writableEnded || res.destroyed) return;
      res.writeHead(code, {
        ...cors,
        "Content-Type": "text/xml; charset=utf-8",
        "Content-Length": Buffer.byteLength(xml),
        "Cache-Control": "no-store",
      });
      res.end(xml);
    },
    drop() { req.socket.destroy(); },
    onAbort(listener) { onAbort = listener; },
  };
}

function status(res: ServerResponse, code: number, headers: Record<string, string>, text = ""): void {
  if (res.headersSent) return;
  res.writeHead(code, { ...headers, "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}
