/**
 * XEP-0156 1.4.0 Discovering Alternative XMPP Connection Methods, HTTP lookup: the host-meta file
 * (RFC 6415) of each domain, as XRD (/.well-known/host-meta, which XEP-0156 §2.2 requires: "MUST
 * offer the information in the Extensible Resource Descriptor (XRD) format") and as JRD
 * (/.well-known/host-meta.json, "SHOULD additionally provide"), listing the web endpoints that are
 * enabled. Web clients on other origins read it, so it carries `Access-Control-Allow-Origin: *`
 * (XEP-0156 §3) — on these two files only.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { HttpRoutes } from "./server.js";
import { plain } from "./server.js";
import { escapeXML } from "../xmpp/xml.js";

export const HOST_META_PATH = "/.well-known/host-meta";

/** An alternative connection method: its link relation and where it is served. */
export interface ConnectionEndpoint {
  /** "urn:xmpp:alt-connections:websocket", "urn:xmpp:alt-connections:xbosh". */
  rel: string;
  /** The path on this server: "/xmpp-websocket", "/http-bind". */
  path: string;
  /** The URL scheme clients use: "wss" for WebSocket, "https" for BOSH. */
  scheme: "wss" | "https";
}

export const WEBSOCKET_LINK_REL = "urn:xmpp:alt-connections:websocket";
export const BOSH_LINK_REL = "urn:xmpp:alt-connections:xbosh";

export interface DiscoveryDeps {
  routes: HttpRoutes;
  hosts: readonly string[];
  /** The public HTTP base URL of a domain (http.publicUrl, or https://<domain>:<https port>). */
  publicHttpUrl(domain: string): string;
  endpoints: readonly ConnectionEndpoint[];
}

const CORS = {
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
  "Access-Control-Max-Age": "86400",
};

export function mountDiscovery(deps: DiscoveryDeps): () => void {
  /** The domain the request is for, from its Host header; one of ours or the first. */
  const domainOf = (req: IncomingMessage): string => {
    const host = (req.headers.host ?? "").replace(/:\d+$/, "").replace(/^\[|\]$/g, "").toLowerCase().replace(/\.$/, "");
    return deps.hosts.includes(host) ? host : deps.hosts[0]!;
  };

  /**
   * XEP-0156 §4: clients "MUST only use 'https' or 'wss' URLs that are protected using TLS", so
   * a public URL on plain http announces nothing.
   */
  const links = (domain: string): Array<{ rel: string; href: string }> => {
    const base = new URL(deps.publicHttpUrl(domain));
    if (base.protocol !== "https:") return [];
    const prefix = base.pathname.replace(/\/+$/, "");
    return deps.endpoints.map((e) => ({ rel: e.rel, href: `${e.scheme}://${base.host}${prefix}${e.path}` }));
  };

  const handler = (req: IncomingMessage, res: ServerResponse, url: URL): void => {
    const json = url.pathname === `${HOST_META_PATH}.json`;
    if (!json && url.pathname !== HOST_META_PATH) return plain(res, 404, "Not found");
    if (req.method === "OPTIONS") {
      res.writeHead(204, CORS);
      return void res.end();
    }
    if (req.method !== "GET" && req.method !== "HEAD") return plain(res, 405, "Method not allowed", { Allow: "GET, HEAD, OPTIONS", ...CORS });
    const found = links(domainOf(req));
    const body = json
      ? `${JSON.stringify({ links: found }, null, 2)}\n`
      : `<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n${found.map((l) => `  <Link rel='${escapeXML(l.rel)}' href='${escapeXML(l.href)}'/>\n`).join("")}</XRD>\n`;
    res.writeHead(200, {
      // RFC 6415 §2: host-meta is application/xrd+xml; its JSON form (Appendix A) application/json.
      "Content-Type": json ? "application/json" : "application/xrd+xml; charset=utf-8",
      "Content-Length": Buffer.byteLength(body),
      "Cache-Control": "max-age=3600",
      ...CORS,
    });
    res.end(req.method === "HEAD" ? undefined : body);
  };
  return deps.routes.add(HOST_META_PATH, handler);
}
