/**
 * GET /metrics: the Prometheus text exposition. Open to the configured addresses (loopback by
 * default) and to any address that presents the bearer token (RFC 6750 §2.1). A wrong token is
 * refused even from an allowed address: whoever sends one means to use it.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { createHash, timingSafeEqual } from "node:crypto";
import { plain, type HttpHandler } from "../http/server.js";
import type { AddressList } from "../address-list.js";
import type { Metrics } from "./index.js";

export interface MetricsAccess {
  allowFrom: AddressList;
  /** Bearer token; undefined when only allowFrom may scrape. */
  token: string | undefined;
}

/** Compares digests so that neither the length nor the content of the token leaks through timing. */
function sameToken(given: string, expected: string): boolean {
  const digest = (s: string) => createHash("sha256").update(s).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

export function metricsHandler(metrics: Metrics, access: MetricsAccess): HttpHandler {
  return async (req: IncomingMessage, res: ServerResponse, url: URL) => {
    if (url.pathname !== "/metrics") return plain(res, 404, "Not found");
    if (req.method !== "GET" && req.method !== "HEAD") return plain(res, 405, "Method not allowed", { Allow: "GET, HEAD" });
    const authorization = req.headers.authorization;
    const challenge = { "WWW-Authenticate": 'Bearer realm="parley metrics"' };
    if (authorization !== undefined) {
      const match = /^Bearer ([\x21-\x7e]+)$/i.exec(authorization);
      if (!access.token || !match || !sameToken(match[1]!, access.token)) {
        return plain(res, 401, "Invalid token", { "WWW-Authenticate": 'Bearer realm="parley metrics", error="invalid_token"' });
      }
    } else if (!access.allowFrom.includes(req.socket.remoteAddress ?? "")) {
      return access.token ? plain(res, 401, "A bearer token is required", challenge) : plain(res, 403, "Forbidden");
    }
    const { contentType, body } = await metrics.render();
    res.writeHead(200, { "Content-Type": contentType, "Content-Length": Buffer.byteLength(body), "Cache-Control": "no-store" });
    res.end(req.method === "HEAD" ? undefined : body);
  };
}
