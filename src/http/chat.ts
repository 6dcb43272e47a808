/**
 * The built-in web chat at /chat/ on HTTPS: Converse.js (the npm package, pinned in package.json)
 * served from node_modules, set up for this server — its domain, its WebSocket endpoint, in-band
 * registration where the register module would accept the visitor — and nothing fetched from
 * anywhere else: the page's Content-Security-Policy names only this server's origins, and the
 * few places where Converse reaches out by default (the XMPP providers lists, the sponsor logos of
 * its fullscreen footer) are switched off.
 */
import { readdirSync, readFileSync, statSync, createReadStream } from "node:fs";
import { createRequire } from "node:module";
import { dirname, extname, join, relative, sep } from "node:path";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { HttpRoutes } from "./server.js";
import { plain } from "./server.js";
import type { TrustedProxies } from "./forwarded.js";
import { WEBSOCKET_PATH } from "./websocket.js";

export const CHAT_PATH = "/chat";

/** The package exports only its dist/ files, so the package is found through one of them. */
const CONVERSE_DIST = dirname(createRequire(import.meta.url).resolve("converse.js/dist/converse.min.js"));
const CONVERSE_VERSION = (JSON.parse(readFileSync(join(CONVERSE_DIST, "..", "package.json"), "utf8")) as { version: string }).version;
/** Versioned, so the files can be cached for good and a new Converse is fetched at once. */
const ASSETS_PATH = `${CHAT_PATH}/assets/${CONVERSE_VERSION}`;

const TYPES: Record<string, string> = {
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".map": "application/json",
  ".wasm": "application/wasm",
  ".ttf": "font/ttf",
  ".png": "image/png",
  ".svg": "image/svg+xml",
  ".ico": "image/vnd.microsoft.icon",
  ".mp3": "audio/mpeg",
  ".ogg": "audio/ogg",
};

export interface ChatDeps {
  routes: HttpRoutes;
  proxies: TrustedProxies;
  hosts: readonly string[];
  /** The public HTTP base URL of a domain (http.publicUrl, or https://<domain>:<https port>). */
  publicHttpUrl(domain: string): string;
  /** Whether in-band registration (XEP-0077) is offered to a client at this address. */
  registrationOffered(address: string): boolean;
  /** The WebSocket endpoint is enabled (the page has nothing to connect to otherwise). */
  websocket: boolean;
}

/**
 * A classic script, so it runs before Converse's module: Converse's fullscreen footer shows its
 * sponsors' logos from conversejs.org, so the footer element is made to render nothing as Converse
 * defines it. Once Converse is loaded (module scripts run before DOMContentLoaded), it starts with
 * the settings the server put in the page.
 */
const PAGE_SCRIPT = `"use strict";
const define = customElements.define.bind(customElements);
customElements.define = (name, constructor, options) => {
  if (name === "converse-footer") constructor.prototype.render = () => "";
  define(name, constructor, options);
};
document.addEventListener("DOMContentLoaded", () => {
  const settings = JSON.parse(document.getElementById("parley-chat-settings").textContent);
  window.converse.initialize(settings);
});
`;

export function mountChat(deps: ChatDeps): () => void {
  const assets = listAssets();

  const domainOf = (req: IncomingMessage): string => {
    const host = (req.headers.host ?? "").replace(/:\d+$/, "").replace(/^\[|\]$/g, "").toLowerCase().replace(/\.$/, "");
    return deps.hosts.includes(host) ? host : deps.hosts[0]!;
  };

  const handler = (req: IncomingMessage, res: ServerResponse, url: URL): void => {
    const path = url.pathname;
    if (path !== CHAT_PATH && !path.startsWith(`${CHAT_PATH}/`)) return plain(res, 404, "Not found");
    if (req.method !== "GET" && req.method !== "HEAD") return plain(res, 405, "Method not allowed", { Allow: "GET, HEAD" });
    const client = deps.proxies.clientOf(req);
    const domain = domainOf(req);
    const base = deps.publicHttpUrl(domain);
    if (!client.secure) {
      // Passwords are typed into this page: it is served over HTTPS only.
      if (!base.startsWith("https:")) return plain(res, 403, "The web chat is served over HTTPS only.\n");
      res.writeHead(308, { Location: `${base}${CHAT_PATH}/`, "Content-Length": 0 });
      return void res.end();
    }
    if (path === CHAT_PATH) {
      res.writeHead(308, { Location: `${CHAT_PATH}/`, "Content-Length": 0 });
      return void res.end();
    }
    if (path === `${CHAT_PATH}/`) return page(req, res, domain, base, client.address);
    if (path === `${CHAT_PATH}/parley-chat.js`) return send(req, res, 200, TYPES[".js"]!, PAGE_SCRIPT, { "Cache-Control": "no-cache" });
    const asset = path.startsWith(`${ASSETS_PATH}/`) ? assets.get(path.slice(ASSETS_PATH.length + 1)) : undefined;
    if (!asset) return plain(res, 404, "Not found");
    res.writeHead(200, {
      "Content-Type": TYPES[extname(asset.file)] ?? "application/octet-stream",
      "Content-Length": asset.size,
      "Cache-Control": "public, max-age=31536000, immutable",
      "X-Content-Type-Options": "nosniff",
      "Cross-Origin-Resource-Policy": "same-origin",
    });
    if (req.method === "HEAD") return void res.end();
    createReadStream(asset.file).on("error", () => res.destroy()).pipe(res);
  };

  const page = (req: IncomingMessage, res: ServerResponse, domain: string, base: string, address: string): void => {
    if (!deps.websocket) return plain(res, 503, "The web chat needs the WebSocket endpoint (websocket.enabled).\n");
    const websocketUrl = `${base.replace(/^http/, "ws")}${WEBSOCKET_PATH}`;
    const registration = deps.registrationOffered(address);
    const settings = {
      assets_path: `${ASSETS_PATH}/`,
      websocket_url: websocketUrl,
      discover_connection_methods: false,
      view_mode: "fullscreen",
      authentication: "login",
      default_domain: domain,
      locked_domain: domain,
      domain_placeholder: domain,
      allow_registration: registration,
      registration_domain: registration ? domain : "",
      // Both default to lists on data.xmpp.net; a provider list makes no sense on a server's own page.
      xmpp_providers_url: "",
      autocomplete_providers_url: "",
      auto_reconnect: true,
      // Group chat nicknames default to the account name instead of a question on every join.
      muc_nickname_from_jid: true,
      loglevel: "warn",
    };
    // Where the page may connect and load media from: this server under any of its names (upload
    // links are on the host's own address, publicHttpUrl), and its WebSocket.
    const own = [originOf(base), ...deps.hosts.map((h) => originOf(deps.publicHttpUrl(h)))];
    const sources = [...new Set(own)].join(" ");
    const csp = [
      "default-src 'none'",
      // OMEMO's curve25519 is WebAssembly; compiling it needs 'wasm-unsafe-eval' (not 'unsafe-eval').
      "script-src 'self' 'wasm-unsafe-eval'",
      // Converse and its Lit templates set style attributes.
      "style-src 'self' 'unsafe-inline'",
      `img-src 'self' data: blob: ${sources}`,
      `media-src 'self' data: blob: ${sources}`,
      "font-src 'self' data:",
      `connect-src 'self' ${originOf(websocketUrl)} ${sources}`,
      "worker-src 'self' blob:",
      "manifest-src 'self'",
      "base-uri 'none'",
      "form-action 'self'",
      "frame-ancestors 'none'",
    ].join("; ");
    const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Chat · ${escapeHtml(domain)}</title>
<link rel="icon" href="${ASSETS_PATH}/images/favicon.ico">
<link rel="stylesheet" href="${ASSETS_PATH}/converse.min.css">
<script type="application/json" id="parley-chat-settings">${JSON.stringify(settings).replace(/</g, "\\u003c")}</script>
<script src="${CHAT_PATH}/parley-chat.js"></script>
<script type="module" src="${ASSETS_PATH}/converse.min.js"></script>
</head>
<body class="converse-fullscreen"></body>
</html>
`;
    send(req, res, 200, "text/html; charset=utf-8", html, {
      "Content-Security-Policy": csp,
      "Cache-Control": "no-store",
      "Referrer-Policy": "no-referrer",
      "X-Frame-Options": "DENY",
    });
  };

  return deps.routes.add(CHAT_PATH, handler);
}

function send(req: IncomingMessage, res: ServerResponse, status: number, type: string, body: string, headers: Record<string, string>): void {
  res.writeHead(status, { "Content-Type": type, "Content-Length": Buffer.byteLength(body), "X-Content-Type-Options": "nosniff", ...headers });
  res.end(req.method === "HEAD" ? undefined : body);
}

/** Converse's dist folder, file by file: only what is listed here is ever served. */
function listAssets(): Map<string, { file: string; size: number }> {
  const root = CONVERSE_DIST;
  const out = new Map<string, { file: string; size: number }>();
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const file = join(dir, entry.name);
      if (entry.isDirectory()) walk(file);
      else if (entry.isFile() && TYPES[extname(entry.name)]) out.set(relative(root, file).split(sep).join("/"), { file, size: statSync(file).size });
    }
  };
  walk(root);
  return out;
}

function originOf(url: string): string {
  return /^[a-z][a-z0-9+.-]*:\/\/[^/?#]+/i.exec(url)?.[0] ?? url;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
