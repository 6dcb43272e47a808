/**
 * The web endpoints over real HTTP(S): XEP-0156 host-meta (XRD and JRD, with CORS) and the chat
 * page's HTML, settings, Content-Security-Policy and assets — as configured, and switched off.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { request as httpsRequest } from "node:https";
import { request as httpRequest, type IncomingHttpHeaders } from "node:http";
import { xml, type Element } from "@xmpp/xml";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { WsClient } from "../helpers/websocket.js";

interface Response { status: number; headers: IncomingHttpHeaders; body: string }

function get(url: string, headers: Record<string, string> = {}): Promise<Response> {
  const request = url.startsWith("https:") ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request(url, { headers, rejectUnauthorized: false }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => { body += d; });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

function parseXml(text: string): Element {
  const parser = new xml.Parser();
  let root: Element | undefined;
  parser.on("start", (e: Element) => { root = e; });
  parser.on("element", (e: Element) => { root!.append(e); });
  parser.write(text.replace(/^<\?xml[^>]*\?>\s*/, ""));
  return root!;
}

/** The settings the page hands to converse.initialize(). */
function settingsOf(html: string): Record<string, unknown> {
  const m = /<script type="application\/json" id="parley-chat-settings">([^<]*)<\/script>/.exec(html);
  assert.ok(m, "the page carries its settings");
  return JSON.parse(m[1]!) as Record<string, unknown>;
}

const directives = (csp: string) => new Map(csp.split(";").map((d) => d.trim().split(/\s+/)).map(([name, ...values]) => [name!, values]));

describe("XEP-0156 discovery and the chat page", () => {
  let server: TestServer;
  let https: string;
  before(async () => {
    server = await startTestServer({ listen: { address: "127.0.0.1", c2s: 0, c2sDirectTls: 0, https: 0, http: 0, httpAddress: "127.0.0.1" } });
    https = `https://127.0.0.1:${server.ports.https}`;
  });
  after(() => server.cleanup());

  it("/.well-known/host-meta (XRD) announces the WebSocket and BOSH endpoints of the requested domain, with CORS", async () => {
    const r = await get(`${https}/.well-known/host-meta`, { Host: `localhost:${server.ports.https}` });
    assert.equal(r.status, 200);
    assert.match(r.headers["content-type"]!, /^application\/xrd\+xml/);
    assert.equal(r.headers["access-control-allow-origin"], "*");
    const xrd = parseXml(r.body);
    assert.equal(xrd.name, "XRD");
    assert.equal(xrd.attrs.xmlns, "http://docs.oasis-open.org/ns/xri/xrd-1.0");
    const links = xrd.getChildren("Link").map((l) => ({ rel: l.attrs.rel, href: l.attrs.href }));
    assert.deepEqual(links, [
      { rel: "urn:xmpp:alt-connections:websocket", href: `wss://localhost:${server.ports.https}/xmpp-websocket` },
      { rel: "urn:xmpp:alt-connections:xbosh", href: `https://localhost:${server.ports.https}/http-bind` },
    ]);
    // The announced endpoint works.
    const c = await WsClient.connect(links[0]!.href.replace("localhost", "127.0.0.1"));
    const features = await c.openStream();
    assert.ok(features.getChild("mechanisms"));
    c.close();
  });

  it("/.well-known/host-meta.json (JRD) says the same; OPTIONS answers the CORS preflight", async () => {
    const r = await get(`${https}/.well-known/host-meta.json`);
    assert.equal(r.status, 200);
    assert.match(r.headers["content-type"]!, /^application\/json/);
    assert.equal(r.headers["access-control-allow-origin"], "*");
    assert.deepEqual(JSON.parse(r.body), { links: [
      { rel: "urn:xmpp:alt-connections:websocket", href: `wss://localhost:${server.ports.https}/xmpp-websocket` },
      { rel: "urn:xmpp:alt-connections:xbosh", href: `https://localhost:${server.ports.https}/http-bind` },
    ] });
    const preflight = await new Promise<number>((resolve, reject) => {
      const req = httpsRequest(`${https}/.well-known/host-meta.json`, { method: "OPTIONS", rejectUnauthorized: false }, (res) => { res.resume(); resolve(res.statusCode ?? 0); });
      req.on("error", reject);
      req.end();
    });
    assert.equal(preflight, 204);
    assert.equal((await get(`${https}/.well-known/host-meta-other`)).status, 404);
  });

  it("/chat/ serves Converse.js set up for this server, with a strict Content-Security-Policy", async () => {
    assert.equal((await get(`${https}/chat`)).headers.location, "/chat/");
    const r = await get(`${https}/chat/`, { Host: `localhost:${server.ports.https}` });
    assert.equal(r.status, 200);
    assert.match(r.headers["content-type"]!, /^text\/html/);
    const settings = settingsOf(r.body);
    assert.equal(settings.websocket_url, `wss://localhost:${server.ports.https}/xmpp-websocket`);
    assert.equal(settings.locked_domain, "localhost");
    assert.equal(settings.allow_registration, true, "loopback may register (modules.register.allowFrom)");
    assert.equal(settings.xmpp_providers_url, "");
    const csp = directives(r.headers["content-security-policy"] as string);
    assert.deepEqual(csp.get("default-src"), ["'none'"]);
    assert.deepEqual(csp.get("script-src"), ["'self'", "'wasm-unsafe-eval'"]);
    assert.ok(csp.get("connect-src")!.includes(`wss://localhost:${server.ports.https}`));
    assert.ok(csp.get("img-src")!.includes(`https://localhost:${server.ports.https}`), "uploads, on the host's own address");
    assert.deepEqual(csp.get("frame-ancestors"), ["'none'"]);
    for (const values of csp.values()) for (const v of values) assert.ok(!/^https?:\/\/(?!\*?\.?localhost)/.test(v), `no foreign origin: ${v}`);
    // Every script and stylesheet of the page is served here.
    const refs = [...r.body.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
    assert.ok(refs.length >= 4);
    for (const ref of refs) {
      assert.ok(ref.startsWith("/chat/"), ref);
      const asset = await get(`${https}${ref}`);
      assert.equal(asset.status, 200, ref);
    }
    const script = refs.find((ref) => ref.endsWith("converse.min.js"))!;
    assert.match((await get(`${https}${script}`)).headers["content-type"]!, /^text\/javascript/);
    assert.equal((await get(`${https}/chat/assets/0.0.0/converse.min.js`)).status, 404);
    assert.equal((await get(`${https}${script.replace("converse.min.js", "../../../package.json")}`)).status, 404);
  });

  it("over plain HTTP the chat page redirects to HTTPS (it takes passwords)", async () => {
    const r = await get(`http://127.0.0.1:${server.ports.http}/chat/`, { Host: "localhost" });
    assert.equal(r.status, 308);
    assert.equal(r.headers.location, `https://localhost:${server.ports.https}/chat/`);
  });
});

describe("discovery and the chat page behind a public URL, without registration", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ http: { publicUrl: "https://xmpp.example.org/base" }, modules: { register: false } });
  });
  after(() => server.cleanup());

  it("announces and uses the public URL; no registration link when in-band registration is off", async () => {
    const https = `https://127.0.0.1:${server.ports.https}`;
    const meta = JSON.parse((await get(`${https}/.well-known/host-meta.json`)).body) as { links: Array<{ href: string }> };
    assert.deepEqual(meta.links.map((l) => l.href), ["wss://xmpp.example.org/base/xmpp-websocket", "https://xmpp.example.org/base/http-bind"]);
    const settings = settingsOf((await get(`${https}/chat/`)).body);
    assert.equal(settings.websocket_url, "wss://xmpp.example.org/base/xmpp-websocket");
    assert.equal(settings.allow_registration, false);
    // The page's own origin (the public URL) may open the WebSocket.
    const c = await WsClient.connect(`wss://127.0.0.1:${server.ports.https}/xmpp-websocket`, { origin: "https://xmpp.example.org" });
    c.close();
  });
});

describe("WebSocket, BOSH and the chat page switched off", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer({ websocket: { enabled: false }, bosh: { enabled: false }, chat: { enabled: false } });
  });
  after(() => server.cleanup());

  it("host-meta lists nothing, /chat/, /xmpp-websocket and /http-bind are not there", async () => {
    const https = `https://127.0.0.1:${server.ports.https}`;
    assert.deepEqual(JSON.parse((await get(`${https}/.well-known/host-meta.json`)).body), { links: [] });
    assert.equal((await get(`${https}/chat/`)).status, 404);
    const refused = await WsClient.attempt(`wss://127.0.0.1:${server.ports.https}/xmpp-websocket`);
    assert.ok(!(refused instanceof WsClient) && refused.status === 404);
    assert.equal((await get(`${https}/http-bind`)).status, 404);
  });
});
