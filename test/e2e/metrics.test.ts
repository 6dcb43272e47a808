/**
 * /metrics end to end: real traffic from xmpp.js and raw clients, a real upload, pushes a
 * component app server accepts and refuses, then a scrape over real HTTP parsed by a
 * Prometheus text parser (prom2javascript), with the values asserted. Access: loopback only by
 * default (127.0.0.2 is another loopback address, refused), or a bearer token.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { request as httpRequest } from "node:http";
import { Agent, request } from "undici";
import { getMetricsFromIterator, type PromMetrics, type PromData, type PromHistogramData } from "prom2javascript";
import { startTestServer, type TestServer } from "../helpers/server.js";
import { connect, xml, type Connected } from "../helpers/xmpp-client.js";
import { RawClient, rawSession } from "../helpers/raw.js";
import { Component, handshakeAccepted } from "../helpers/component.js";

const PUSH = "urn:xmpp:push:0";
const TOKEN = "a-long-enough-metrics-token";

interface Scrape { status: number; headers: Record<string, string | string[] | undefined>; body: string }

const lastScrape = new Map<number, number>();

/**
 * GET /metrics over plain HTTP, from a chosen local address. Scrapes of one server are spaced:
 * prom-client resets its event-loop delay histogram at each scrape, and one taken before the
 * next 10 ms sample reports NaN (written "Nan", which Prometheus reads but prom2javascript cannot).
 */
async function scrape(port: number, opts: { from?: string; authorization?: string } = {}): Promise<Scrape> {
  const wait = (lastScrape.get(port) ?? 0) + 100 - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  lastScrape.set(port, Date.now());
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: "127.0.0.1", port, path: "/metrics", localAddress: opts.from ?? "127.0.0.1",
      headers: opts.authorization ? { authorization: opts.authorization } : {} }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => { body += d; });
      res.on("end", () => resolve({ status: res.statusCode!, headers: res.headers, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

/**
 * Parsed by prom2javascript. It cannot read a NaN sample ("Nan" from prom-client's event-loop
 * gauges before their first sample, valid Prometheus text); the tests assert none of those, so
 * such lines are left out rather than have a busy machine fail the parse.
 */
const parse = (text: string): Promise<PromMetrics> => getMetricsFromIterator(text.split("\n").filter((line) => !/ (NaN|Nan)$/.test(line))[Symbol.iterator]());

/** The value of a counter or gauge sample with exactly these labels (a subset match), or undefined. */
function value(metrics: PromMetrics, name: string, labels: Record<string, string> = {}): number | undefined {
  const family = metrics[name];
  if (!family) return undefined;
  const sample = (family.data as PromData[]).find((d) => Object.entries(labels).every(([k, v]) => d.labels[k] === v));
  return sample?.value;
}

function histogram(metrics: PromMetrics, name: string, labels: Record<string, string>): PromHistogramData | undefined {
  return (metrics[name]?.data as PromHistogramData[] | undefined)?.find((d) => Object.entries(labels).every(([k, v]) => d.labels[k] === v));
}

/** Scrapes until `ready` holds (the server handles some traffic after the client's send returns). */
async function scrapeUntil(port: number, ready: (m: PromMetrics) => boolean, what: string): Promise<PromMetrics> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const r = await scrape(port);
    assert.equal(r.status, 200);
    const m = await parse(r.body);
    if (ready(m)) return m;
    if (Date.now() > deadline) throw new Error(`metrics never showed ${what}:\n${r.body.split("\n").filter((l) => l.startsWith("parley_")).join("\n")}`);
  }
}

describe("metrics (Prometheus text at /metrics)", () => {
  let server: TestServer;
  let component: Component;
  const clients: Connected[] = [];

  before(async () => {
    server = await startTestServer({
      listen: { address: "127.0.0.1", c2s: 0, c2sDirectTls: 0, https: 0, http: 0, httpAddress: "127.0.0.1", component: 0 },
      components: { "push.example.net": { secret: "app-server-secret" } },
      // Live messages leave no durable offline copy, so the offline gauge counts exactly the offline ones.
      modules: { offline: { durableLiveDelivery: false }, push: { coalesceSeconds: 0 } },
    });
    for (const u of ["alice", "bob", "carol", "dave", "raw"]) await server.accounts.create(`${u}@localhost`, "pw");
    // The app server: says it is one (disco#info, which <enable/> checks), accepts pushes for node
    // "n" and refuses those for node "gone" (a device it no longer knows).
    component = await Component.open(server.ports.component!, "push.example.net");
    await component.handshake("app-server-secret");
    await component.waitForElement(handshakeAccepted);
    component.onElement((iq) => {
      if (!iq.is("iq") || (iq.attrs.type !== "get" && iq.attrs.type !== "set")) return;
      if (iq.getChild("query", "http://jabber.org/protocol/disco#info")) {
        component.reply(iq, "result", xml("query", { xmlns: "http://jabber.org/protocol/disco#info" },
          xml("identity", { category: "pubsub", type: "push" }), xml("feature", { var: PUSH })));
      } else if (iq.getChild("pubsub", "http://jabber.org/protocol/pubsub")?.getChild("publish")?.attrs.node === "gone") {
        component.reply(iq, "error", xml("error", { type: "cancel" }, xml("item-not-found", { xmlns: "urn:ietf:params:xml:ns:xmpp-stanzas" })));
      } else {
        component.reply(iq, "result");
      }
    });
  });
  after(async () => {
    for (const c of clients) await c.stop();
    component.socket.destroy();
    await server.cleanup();
  });
  const login = async (user: string, resource = "r") => {
    const c = await connect({ port: server.ports.c2sDirectTls!, directTls: true, username: user, password: "pw", resource });
    clients.push(c);
    return c;
  };
  const enablePush = (c: Connected, node: string) => c.iq(xml("iq", { type: "set" }, xml("enable", { xmlns: PUSH, jid: "push.example.net", node })));

  it("counts sessions, connections, stanzas, routing outcomes, queues, storage, uploads and pushes from real traffic", async () => {
    // carol's pushes are accepted, dave's refused by the app server; both go away.
    const carol = await login("carol");
    await enablePush(carol, "n");
    await carol.stop();
    const dave = await login("dave");
    await enablePush(dave, "gone");
    await dave.stop();

    const alice = await login("alice");
    const bob = await login("bob");
    await alice.xmpp.send(xml("presence"));
    await alice.xmpp.send(xml("message", { to: "bob@localhost/r", type: "chat", id: "live" }, xml("body", {}, "hi bob")));
    await bob.waitFor((s) => s.attrs.id === "live");
    await alice.xmpp.send(xml("message", { to: "carol@localhost", type: "chat", id: "off1" }, xml("body", {}, "for later")));
    await alice.xmpp.send(xml("message", { to: "dave@localhost", type: "chat", id: "off2" }, xml("body", {}, "for later too")));
    await alice.xmpp.send(xml("message", { to: "nobody@localhost", type: "chat", id: "bounce" }, xml("body", {}, "?")));
    await alice.waitFor((s) => s.attrs.id === "bounce" && s.attrs.type === "error");

    // A session with stream management that never acknowledges: three stanzas stay in its queue.
    const raw = await rawSession(server.ports.c2sDirectTls!, "raw", "pw");
    const mark = raw.elements.length;
    raw.send("<enable xmlns='urn:xmpp:sm:3'/>");
    await raw.waitForElement((e) => e.is("enabled", "urn:xmpp:sm:3"), 5000, mark);
    for (const n of [1, 2, 3]) await alice.xmpp.send(xml("message", { to: "raw@localhost/raw", type: "chat", id: `q${n}` }, xml("body", {}, "unacked")));
    await raw.waitForElement((e) => e.is("message") && e.attrs.id === "q3", 5000, mark);

    // An upload of 1234 bytes through a XEP-0363 slot and a real HTTPS PUT.
    const reply = await alice.iq(xml("iq", { type: "get", to: "upload.localhost" },
      xml("request", { xmlns: "urn:xmpp:http:upload:0", filename: "a.bin", size: "1234", "content-type": "application/octet-stream" })));
    const putUrl = reply.getChild("slot", "urn:xmpp:http:upload:0")!.getChild("put")!.attrs.url as string;
    const put = await request(putUrl.replace("upload.localhost", "127.0.0.1"), {
      method: "PUT", body: Buffer.alloc(1234, 7), headers: { "content-type": "application/octet-stream" },
      dispatcher: new Agent({ connect: { rejectUnauthorized: false } }),
    });
    await put.body.dump();
    assert.equal(put.statusCode, 201);

    const m = await scrapeUntil(server.ports.http!, (x) =>
      value(x, "parley_pushes_total", { outcome: "sent" }) === 1 && value(x, "parley_pushes_total", { outcome: "failed" }) === 1
      && value(x, "parley_sm_queue_max_stanzas") === 3 && value(x, "parley_stanzas_in_total", { kind: "presence" })! >= 1, "the pushes, the queued stanzas, the presence");

    assert.equal(value(m, "parley_sessions", { transport: "tcp", state: "active" }), 3, "alice, bob and raw are bound");
    assert.equal(value(m, "parley_sessions", { transport: "websocket", state: "active" }), 0);
    assert.equal(value(m, "parley_connections", { transport: "tcp" }), 3, "the HTTP scrape is not a client connection");
    assert.equal(value(m, "parley_connections_opened_total", { transport: "tcp" }), 5, "carol and dave came and went");
    assert.ok(value(m, "parley_stanzas_in_total", { kind: "message" })! >= 7, "7 messages sent, plus the error reply");
    assert.ok(value(m, "parley_stanzas_out_total", { kind: "message" })! >= 5, "bob's, raw's three, alice's error");
    assert.ok(value(m, "parley_stanzas_in_total", { kind: "iq" })! >= 1);
    assert.ok(value(m, "parley_stanzas_in_total", { kind: "presence" })! >= 1);
    assert.equal(value(m, "parley_routing_outcomes_total", { outcome: "offline", kind: "message" }), 2, "carol's and dave's");
    assert.ok(value(m, "parley_routing_outcomes_total", { outcome: "delivered", kind: "message" })! >= 4, "bob's and raw's three");
    assert.ok(value(m, "parley_routing_outcomes_total", { outcome: "bounced", kind: "message" })! >= 1, "the message to nobody");
    assert.ok(value(m, "parley_routing_outcomes_total", { outcome: "bounced", kind: "message" })! >= 1, "the message to nobody@localhost");
    assert.equal(value(m, "parley_routing_outcomes_total", { outcome: "error", kind: "message" }), 0);
    assert.ok(value(m, "parley_sm_queue_stanzas")! >= 3, "raw's three, and whatever xmpp.js has not acknowledged yet");
    assert.equal(value(m, "parley_offline_messages"), 2);
    assert.equal(value(m, "parley_upload_bytes_total"), 1234);
    assert.equal(value(m, "parley_uploads_total"), 1);

    // The two offline messages are message records (with the archived ones: docs/STORAGE.md).
    const appends = histogram(m, "parley_storage_operation_seconds", { store: "messages", operation: "write" });
    assert.ok(appends!.count! >= 2, "message record writes timed");
    assert.ok(appends!.sum! > 0);
    assert.ok(histogram(m, "parley_storage_operation_seconds", { store: "accounts", operation: "get" })!.count >= 5, "a lookup per login");
    assert.equal(histogram(m, "parley_storage_operation_seconds", { store: "uploads", operation: "add" })?.count, 1);

    // prom-client's defaults: event-loop lag and GC.
    assert.equal(m.nodejs_eventloop_lag_seconds?.type, "gauge");
    assert.ok(value(m, "nodejs_eventloop_lag_seconds")! >= 0);
    assert.equal(m.nodejs_gc_duration_seconds?.type, "histogram");
    assert.equal(value(m, "parley_info"), 1);
    raw.close();
    // Its unacknowledged messages are not lost: they go to offline storage (the delivery promise).
    await scrapeUntil(server.ports.http!, (x) => value(x, "parley_sessions", { transport: "tcp", state: "active" }) === 2
      && value(x, "parley_sm_queue_max_stanzas")! < 3 && value(x, "parley_offline_messages") === 5, "raw's session and queue gone, its messages offline");
  });

  it("counts a session that ends: gone from the gauge, its connection closed", async () => {
    const before = await scrapeUntil(server.ports.http!, () => true, "anything");
    const eve = await login("alice", "second");
    await scrapeUntil(server.ports.http!, (x) => value(x, "parley_connections", { transport: "tcp" }) === value(before, "parley_connections", { transport: "tcp" })! + 1, "one more connection");
    await eve.stop();
    await scrapeUntil(server.ports.http!, (x) => value(x, "parley_connections", { transport: "tcp" }) === value(before, "parley_connections", { transport: "tcp" })
      && value(x, "parley_sessions", { transport: "tcp", state: "active" }) === value(before, "parley_sessions", { transport: "tcp", state: "active" }), "the session gone");
  });

  it("refuses another address without a token (403), and serves only GET /metrics", async () => {
    const other = await scrape(server.ports.http!, { from: "127.0.0.2" });
    assert.equal(other.status, 403);
    assert.doesNotMatch(other.body, /parley_/);
    const wrong = await scrape(server.ports.http!, { authorization: "Bearer not-the-token-at-all" });
    assert.equal(wrong.status, 401, "a token where none is configured is refused even from loopback");
    const post = await request(`http://127.0.0.1:${server.ports.http}/metrics`, { method: "POST" });
    await post.body.dump();
    assert.equal(post.statusCode, 405);
    const sub = await request(`http://127.0.0.1:${server.ports.http}/metricsx`);
    await sub.body.dump();
    assert.equal(sub.statusCode, 404);
  });

  it("is served on the HTTPS listener too", async () => {
    const r = await request(`https://127.0.0.1:${server.ports.https}/metrics`, { dispatcher: new Agent({ connect: { rejectUnauthorized: false } }) });
    assert.equal(r.statusCode, 200);
    assert.ok((await parse(await r.body.text())).parley_sessions);
  });
});

describe("metrics with a bearer token", () => {
  let server: TestServer;
  let second: TestServer;
  before(async () => {
    server = await startTestServer({
      listen: { address: "127.0.0.1", c2s: null, c2sDirectTls: 0, https: null, http: 0, httpAddress: "127.0.0.1" },
      metrics: { token: TOKEN },
    });
    // A second server in the same process: each has its own registry, nothing collides.
    second = await startTestServer({ listen: { address: "127.0.0.1", c2s: null, c2sDirectTls: 0, https: null, http: 0, httpAddress: "127.0.0.1" } });
  });
  after(async () => {
    await server.cleanup();
    await second.cleanup();
  });

  it("lets another address in with the right token, 401 without it or with a wrong one", async () => {
    const without = await scrape(server.ports.http!, { from: "127.0.0.2" });
    assert.equal(without.status, 401);
    assert.match(String(without.headers["www-authenticate"]), /^Bearer /);
    const wrong = await scrape(server.ports.http!, { from: "127.0.0.2", authorization: `Bearer ${TOKEN}x` });
    assert.equal(wrong.status, 401);
    assert.match(String(wrong.headers["www-authenticate"]), /invalid_token/);
    const basic = await scrape(server.ports.http!, { from: "127.0.0.2", authorization: `Basic ${Buffer.from(`x:${TOKEN}`).toString("base64")}` });
    assert.equal(basic.status, 401);
    const right = await scrape(server.ports.http!, { from: "127.0.0.2", authorization: `Bearer ${TOKEN}` });
    assert.equal(right.status, 200);
    assert.match(String(right.headers["content-type"]), /^text\/plain; version=0\.0\.4/);
    const m = await parse(right.body);
    assert.equal(value(m, "parley_sessions", { transport: "tcp", state: "active" }), 0);
    // Loopback still needs no token.
    assert.equal((await scrape(server.ports.http!)).status, 200);
  });

  it("keeps each server's counts apart", async () => {
    const c = await RawClient.open(second.ports.c2sDirectTls!, true);
    c.close();
    const a = await parse((await scrape(server.ports.http!)).body);
    const b = await scrapeUntil(second.ports.http!, (x) => value(x, "parley_connections_opened_total", { transport: "tcp" }) === 1, "the second server's connection");
    assert.equal(value(a, "parley_connections_opened_total", { transport: "tcp" }), 0);
    assert.equal(value(b, "parley_connections_opened_total", { transport: "tcp" }), 1);
  });
});
