/**
 * The XMLHttpRequest a browser gives Strophe.js, on Node's HTTP client: what Strophe's BOSH
 * transport uses of it (open, setRequestHeader, send, abort, readyState, status, responseText,
 * responseXML, getAllResponseHeaders). Keep-alive connections, as a browser keeps them; the
 * test certificates are self-signed, so they are not verified.
 */
import { Agent as HttpAgent, request as httpRequest, type ClientRequest } from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";

const agents = { http: new HttpAgent({ keepAlive: true }), https: new HttpsAgent({ keepAlive: true, rejectUnauthorized: false }) };

/** Every request the shim sent, for tests that check what went over the wire. */
export const sentRequests: Array<{ url: string; headers: Record<string, string> }> = [];

export class NodeXMLHttpRequest {
  static readonly UNSENT = 0;
  static readonly OPENED = 1;
  static readonly DONE = 4;
  readyState = 0;
  status = 0;
  responseText = "";
  responseXML: unknown = null;
  withCredentials = false;
  onreadystatechange: (() => void) | null = null;
  private method = "GET";
  private url = "";
  private headers: Record<string, string> = {};
  private responseHeaders = "";
  private request: ClientRequest | undefined;
  private aborted = false;

  /** Extra headers every request carries (e.g. Origin, as a browser sends it). */
  static defaultHeaders: Record<string, string> = {};

  open(method: string, url: string): void {
    this.method = method;
    this.url = url;
    this.readyState = 1;
  }

  overrideMimeType(): void {}

  setRequestHeader(name: string, value: string): void {
    this.headers[name] = value;
  }

  getAllResponseHeaders(): string {
    return this.responseHeaders;
  }

  send(data?: string): void {
    const url = new URL(this.url);
    const secure = url.protocol === "https:";
    const headers = { ...NodeXMLHttpRequest.defaultHeaders, ...this.headers };
    sentRequests.push({ url: this.url, headers });
    const body = data === undefined ? undefined : Buffer.from(data);
    if (body) headers["Content-Length"] = String(body.length);
    const req = (secure ? httpsRequest : httpRequest)({
      host: url.hostname, port: url.port, path: url.pathname + url.search, method: this.method, headers,
      agent: secure ? agents.https : agents.http,
    }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => { text += d; });
      res.on("end", () => {
        if (this.aborted) return;
        this.status = res.statusCode ?? 0;
        this.responseText = text;
        this.responseHeaders = Object.entries(res.headers).map(([k, v]) => `${k}: ${String(v)}`).join("\r\n");
        // Strophe installs a DOMParser (@xmldom/xmldom) on globalThis; a browser parses text/xml itself.
        const Parser = (globalThis as unknown as { DOMParser: new () => { parseFromString(s: string, t: string): unknown } }).DOMParser;
        this.responseXML = text ? new Parser().parseFromString(text, "text/xml") : null;
        this.done();
      });
    });
    req.on("error", () => {
      if (this.aborted) return;
      this.status = 0;
      this.done();
    });
    this.request = req;
    req.end(body);
  }

  abort(): void {
    this.aborted = true;
    this.request?.destroy();
  }

  private done(): void {
    this.readyState = 4;
    this.onreadystatechange?.();
  }
}

/** Installs the shim as the global XMLHttpRequest (Strophe looks it up at request time). */
export function installXMLHttpRequest(): void {
  (globalThis as unknown as { XMLHttpRequest: unknown }).XMLHttpRequest = NodeXMLHttpRequest;
}

/** Closes the shim's idle keep-alive connections, so a test process can exit. */
export function closeXhrConnections(): void {
  agents.http.destroy();
  agents.https.destroy();
}
