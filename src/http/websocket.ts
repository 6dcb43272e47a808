/**
 * The XMPP WebSocket endpoint (RFC 7395) on the embedded HTTP(S) listeners: the handshake checks
 * (path, the 'xmpp' subprotocol, the Origin policy, per-address admission), then `ws` completes the
 * RFC 6455 handshake and the connection becomes a WebSocketTransport that starts a client stream.
 *
 * Origin policy. Browsers send the page's origin on every WebSocket handshake (RFC 6455 §10.2);
 * other clients send none. XMPP over WebSocket carries no cookies, so the risk of a foreign page is
 * not a stolen session but the visitor's browser used as a proxy: its address passes per-address
 * limits, and from a trusted network (loopback may register accounts) it gets what that network
 * gets. So by default only the server's own pages — its public URL, https://<host>:<https port>,
 * which serve the built-in chat — may connect; `websocket.origins` adds others ("*" allows any,
 * what Prosody and ejabberd do by default: Prosody 0.12 dropped cross_domain_websocket and leaves
 * WebSocket open to every origin, ejabberd's websocket_origin defaults to "ignore"). A handshake
 * without Origin comes from a non-browser client and is admitted unless `websocket.requireOrigin`.
 * A refused Origin gets 403, as RFC 6455 §10.2 asks ("it SHOULD respond to the WebSocket handshake
 * with a reply containing HTTP 403 Forbidden status code").
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { STATUS_CODES } from "node:http";
import { WebSocketServer } from "ws";
import type { HttpRoutes } from "./server.js";
import { plain } from "./server.js";
import type { TrustedProxies } from "./forwarded.js";
import type { Admission } from "../xmpp/c2s/admission.js";
import type { ConnectionMetrics } from "../metrics/index.js";
import type { AuthThrottle } from "../xmpp/c2s/throttle.js";
import type { ParserLimits } from "../xmpp/parser.js";
import type { Logger } from "../log.js";
import { Heartbeat, WebSocketTransport, XMPP_SUBPROTOCOL } from "../xmpp/stream/websocket.js";

export const WEBSOCKET_PATH = "/xmpp-websocket";
/**
 * ws refuses messages over this before they are parsed (close code 1009). Slightly above the
 * largest stanza allowed, so a stanza just over the limit gets the parser's XMPP answer
 * (policy-violation, stanza-too-big) instead.
 */
const PAYLOAD_SLACK_BYTES = 1024;

export interface WebSocketEndpointOptions {
  /** Origins allowed besides the server's own; "*" allows any. */
  origins: readonly string[];
  requireOrigin: boolean;
  pingIntervalMs: number;
  seeOtherUri?: string;
  preAuth: ParserLimits;
  postAuth: ParserLimits;
}

export interface WebSocketEndpointDeps {
  routes: HttpRoutes;
  proxies: TrustedProxies;
  admission: Admission;
  /** Connections by transport, for /metrics. */
  metrics?: ConnectionMetrics;
  throttle: AuthThrottle;
  log: Logger;
  /** The origins of the server's own pages (known once the listeners are up). */
  ownOrigins(): readonly string[];
  /** A client stream starts on the transport (C2SNegotiation). */
  startStream(transport: WebSocketTransport): void;
}

export interface WebSocketEndpoint {
  close(): void;
}

export function mountWebSocket(options: WebSocketEndpointOptions, deps: WebSocketEndpointDeps): WebSocketEndpoint {
  const heartbeat = new Heartbeat(options.pingIntervalMs);
  const wss = new WebSocketServer({
    noServer: true,
    clientTracking: false,
    maxPayload: options.postAuth.maxStanzaBytes + PAYLOAD_SLACK_BYTES,
    // Compression under TLS leaks secrets to an attacker who can inject text (CRIME/BREACH class).
    perMessageDeflate: false,
    handleProtocols: () => XMPP_SUBPROTOCOL,
  });
  const anyOrigin = options.origins.includes("*");
  const configured = new Set(options.origins.map((o) => o.toLowerCase().replace(/\/$/, "")));
  const originAllowed = (origin: string) => anyOrigin || configured.has(origin.toLowerCase())
    || deps.ownOrigins().some((own) => own.toLowerCase() === origin.toLowerCase());

  const upgrade = (req: IncomingMessage, socket: Duplex, head: Buffer, url: URL): void => {
    const client = deps.proxies.clientOf(req);
    const refuse = (status: number, reason: string, headers: Record<string, string> = {}) => {
      deps.log.debug({ stage: "websocket", address: client.address, status, reason }, "WebSocket handshake refused");
      refuseUpgrade(socket, status, reason, headers);
    };
    if (!isEndpoint(url)) return refuse(404, "Not found");
    // RFC 7395 §3.1: an XMPP connection exists only when the server's reply names the 'xmpp'
    // subprotocol, which it can do only if the client offered it. This endpoint speaks nothing
    // else, so the handshake is refused with an HTTP error (RFC 6455 §4.2.1, 400 Bad Request;
    // Prosody answers 501).
    if (!offeredProtocols(req).includes(XMPP_SUBPROTOCOL)) return refuse(400, "This endpoint speaks the 'xmpp' WebSocket subprotocol only (RFC 7395 §3.1)");
    const origin = req.headers.origin;
    if (origin === undefined ? options.requireOrigin : !originAllowed(origin)) return refuse(403, "Origin not allowed");
    if (deps.throttle.isBanned(client.address)) return refuse(403, "Too many failed logins from this address");
    const release = deps.admission.admit(client.address);
    if (!release) return refuse(429, "Too many connections from this address", { "Retry-After": "60" });
    deps.metrics?.opened("websocket");
    socket.once("close", () => {
      deps.metrics?.closed("websocket");
      release();
    });
    wss.handleUpgrade(req, socket, head, (ws) => {
      const transport = new WebSocketTransport(ws, socket, { address: client.address, secure: client.secure, tls: client.tls },
        options.preAuth, heartbeat, { seeOtherUri: options.seeOtherUri });
      deps.startStream(transport);
    });
  };

  const page = (req: IncomingMessage, res: ServerResponse, url: URL): void => {
    if (!isEndpoint(url)) return plain(res, 404, "Not found");
    plain(res, 426, "This is an XMPP over WebSocket endpoint (RFC 7395): connect with a WebSocket client and the 'xmpp' subprotocol.\n",
      { Upgrade: "websocket", Connection: "Upgrade" });
  };

  const unmountUpgrade = deps.routes.addUpgrade(WEBSOCKET_PATH, upgrade);
  const unmountPage = deps.routes.add(WEBSOCKET_PATH, page);
  return {
    close() {
      unmountUpgrade();
      unmountPage();
      heartbeat.stop();
    },
  };
}

function isEndpoint(url: URL): boolean {
  return url.pathname === WEBSOCKET_PATH || url.pathname === `${WEBSOCKET_PATH}/`;
}

/** Sec-WebSocket-Protocol: one or more comma-separated tokens, possibly over several headers (RFC 6455 §11.3.4). */
function offeredProtocols(req: IncomingMessage): string[] {
  const value = req.headers["sec-websocket-protocol"];
  if (value === undefined) return [];
  return value.split(",").map((p) => p.trim()).filter(Boolean);
}

function refuseUpgrade(socket: Duplex, status: number, reason: string, headers: Record<string, string>): void {
  if (!socket.writable) return void socket.destroy();
  const body = `${reason}\n`;
  const lines = [`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ""}`, "Connection: close", "Content-Type: text/plain; charset=utf-8",
    `Content-Length: ${Buffer.byteLength(body)}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  socket.end(`${lines.join("\r\n")}\r\n\r\n${body}`);
}
