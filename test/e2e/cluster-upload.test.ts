/**
 * XEP-0363 uploads on a cluster, on real Redis and Postgres (docs/CLUSTER.md, "Uploads"): nodes a
 * and b share one data directory, as the nodes of `parley start --nodes N` do (the secret that
 * signs PUT URLs, and the upload directory inside it); node c has a directory of its own. A file
 * PUT through one node is served byte for byte by the other, whichever node granted the slot;
 * node c, whose directory the others do not write, refuses slots.
 */
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Agent, request } from "undici";
import { startTestServer, capturingLogger, type TestServer } from "../helpers/server.js";
import { rawSession, errorReply, iqResult, type RawClient } from "../helpers/raw.js";
import { PG_URL, postgresUnavailable } from "../helpers/postgres.js";
import { REDIS_URL, dropKeyPrefix, dropSchema, freshKeyPrefix, redisUnavailable } from "../helpers/cluster.js";

const missing = (await postgresUnavailable()) ?? (await redisUnavailable());
if (missing) console.log(`# SKIPPED cluster upload e2e: ${missing}`);

const UPLOAD = "urn:xmpp:http:upload:0";
const dispatcher = new Agent({ connect: { rejectUnauthorized: false } });

describe("cluster uploads (e2e, Redis + Postgres)", { skip: missing ? `services unreachable: ${missing}` : false }, () => {
  const schema = `parley_cluster_upload_${randomBytes(6).toString("hex")}`;
  const keyPrefix = freshKeyPrefix();
  const shared = mkdtempSync(join(tmpdir(), "parley-cluster-shared-"));
  const storage = { driver: "postgres", url: PG_URL, schema, poolSize: 4 };
  // Generous: nobody dies here, and on a loaded machine an event loop that stalls past a short
  // timeout would get a live node taken for dead.
  const cluster = (nodeId: string) => ({ nodeId, redisUrl: REDIS_URL, keyPrefix, heartbeatSeconds: 1, nodeTimeoutSeconds: 10 });
  const logOfC = capturingLogger("error");
  let a: TestServer;
  let b: TestServer;
  let c: TestServer;
  const clients: RawClient[] = [];
  const login = async (server: TestServer, resource: string) => {
    const client = await rawSession(server.ports.c2sDirectTls!, "alice", "pw", resource);
    clients.push(client);
    return client;
  };
  /** A slot granted through `server`'s XMPP side: its PUT and GET URLs. */
  const slot = async (client: RawClient, id: string, filename: string, size: number) => {
    client.send(`<iq type='get' to='upload.localhost' id='${id}'><request xmlns='${UPLOAD}' filename='${filename}' size='${size}' content-type='application/octet-stream'/></iq>`);
    const reply = await client.waitForElement((e) => e.is("iq") && e.attrs.id === id, 10_000);
    const granted = reply.getChild("slot", UPLOAD);
    assert.ok(granted, `a slot: ${reply.toString()}`);
    return { put: new URL(granted.getChild("put")!.attrs.url!), get: new URL(granted.getChild("get")!.attrs.url!) };
  };
  /** The same URL on another node's HTTPS port (what a load balancer does). */
  const through = (server: TestServer, url: URL) => {
    const moved = new URL(url);
    moved.port = String(server.ports.https);
    return moved;
  };

  before(async () => {
    // One after the other: the first creates the secret and certificates and runs the migrations.
    a = await startTestServer({ dataDir: shared, storage, cluster: cluster("a") });
    b = await startTestServer({ dataDir: shared, storage, cluster: cluster("b") });
    c = await startTestServer({ storage, cluster: cluster("c") }, { log: logOfC.log });
    await a.accounts.create("alice@localhost", "pw");
  });

  after(async () => {
    for (const client of clients) client.close();
    await a?.cleanup();
    await b?.cleanup();
    await c?.cleanup();
    rmSync(shared, { recursive: true, force: true });
    await dropSchema(schema);
    await dropKeyPrefix(keyPrefix);
  });

  it("a file PUT through one node downloads byte for byte through the other", async () => {
    const alice = await login(a, "uploader");
    const content = randomBytes(300_000);
    const first = await slot(alice, "slot1", "photo.bin", content.length);
    assert.equal(first.put.port, String(a.ports.https), "node a's URLs name node a (no http.publicUrl)");
    const stored = await request(first.put, { method: "PUT", body: content, headers: { "content-type": "application/octet-stream" }, dispatcher });
    await stored.body.dump();
    assert.equal(stored.statusCode, 201);
    const fetched = await request(through(b, first.get), { dispatcher });
    assert.equal(fetched.statusCode, 200);
    assert.ok(Buffer.from(await fetched.body.arrayBuffer()).equals(content), "the same bytes through node b");

    // A slot granted by node a, PUT through node b (the nodes share the secret that signs it), read through node a.
    const other = randomBytes(70_001);
    const second = await slot(alice, "slot2", "notes.bin", other.length);
    const viaB = await request(through(b, second.put), { method: "PUT", body: other, headers: { "content-type": "application/octet-stream" }, dispatcher });
    await viaB.body.dump();
    assert.equal(viaB.statusCode, 201);
    const back = await request(second.get, { dispatcher });
    assert.equal(back.statusCode, 200);
    assert.ok(Buffer.from(await back.body.arrayBuffer()).equals(other), "the same bytes through node a");
  });

  it("a node whose upload directory is not the others' refuses slots, and says why in its log", async () => {
    const alice = await login(c, "elsewhere");
    alice.send(`<iq type='get' to='upload.localhost' id='slot3'><request xmlns='${UPLOAD}' filename='x.bin' size='10' content-type='application/octet-stream'/></iq>`);
    const reply = await alice.waitForElement((e) => e.is("iq") && e.attrs.id === "slot3", 10_000);
    assert.ok(errorReply("slot3", "service-unavailable")(reply), reply.toString());
    assert.ok(logOfC.records.some((r) => r.stage === "upload" && String(r.msg).includes("modules.upload.path is not shared")), "logged at start");
    // Node a, whose directory holds the probe, still grants them.
    const onA = await login(a, "still");
    onA.send(`<iq type='get' to='upload.localhost' id='slot4'><request xmlns='${UPLOAD}' filename='y.bin' size='10' content-type='application/octet-stream'/></iq>`);
    await onA.waitForElement(iqResult("slot4"), 10_000);
  });
});
